"""Per-reading cost of the shared pipeline stages: decode (smartpark.wire.Decoder), encode (PointEncoder), and
the collector's fused path (Decoder.lines).

    .venv/bin/python bench/bench_wire.py

The ceilings measured in the same run are ``json.loads`` (the standard library) and ``orjson.loads`` (what
the decoder parses valid payloads with) of the same payloads: decoding cannot be cheaper than parsing.
Figures are CPU µs per reading (process time), best of 5 repeats.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable

import orjson

from smartpark.decode import Decoder
from smartpark.park import load_park
from smartpark.points import PointEncoder
from smartpark.topics import snapshot_topic


def main() -> None:
    park = load_park()
    rnd = random.Random(1)
    dec, enc = Decoder(park), PointEncoder(park)
    refs = list(park)
    singles = []
    for i in range(100_000):
        ref = refs[i % len(refs)]
        lo, hi = ref.sensor.normal
        doc = {"value": round(rnd.uniform(lo, hi), 3), "ts": 1_764_201_600_000 + i}
        singles.append((ref.topic, json.dumps(doc).encode()))
    assets: dict[str, list] = {}
    for ref in refs:
        assets.setdefault(snapshot_topic(ref.site, ref.asset), []).append(ref)
    snaps = []
    keys = [k for k, v in assets.items() if len(v) >= 5]
    for i in range(5_000):
        topic = keys[i % len(keys)]
        # one entry per sensor of the asset (5-9 here): the cost is reported per reading
        values = {ref.sensor.id: round(rnd.uniform(*ref.sensor.normal), 3) for ref in assets[topic]}
        snaps.append((topic, json.dumps({"ts": 1_764_201_600_000 + i, "values": values}).encode()))
    n_snap = sum(len(json.loads(p)["values"]) for _, p in snaps)

    def best(fn: Callable[[], object], n: int) -> float:
        out = []
        for _ in range(5):
            t = time.process_time()
            fn()
            out.append((time.process_time() - t) / n * 1e6)
        return min(out)

    rows = [
        ("json.loads, single readings (ceiling)", best(lambda: [json.loads(p) for _, p in singles], len(singles))),
        ("orjson.loads, single readings (ceiling)", best(lambda: [orjson.loads(p) for _, p in singles], len(singles))),
        ("decode, single readings", best(lambda: [dec.decode(t, p, 0) for t, p in singles], len(singles))),
        ("json.loads, snapshots (ceiling)", best(lambda: [json.loads(p) for _, p in snaps], n_snap)),
        ("orjson.loads, snapshots (ceiling)", best(lambda: [orjson.loads(p) for _, p in snaps], n_snap)),
        ("decode, snapshots", best(lambda: [dec.decode(t, p, 0) for t, p in snaps], n_snap)),
    ]
    readings = [r for t, p in singles for r in dec.decode(t, p, 0).readings]
    rows.append(("encode (line protocol)", best(lambda: [enc.reading(r) for r in readings], len(readings))))
    snap_readings = [r for t, p in snaps for r in dec.decode(t, p, 0).readings]
    rows += [
        ("decode + encode, single readings", best(lambda: [enc.reading(r) for t, p in singles
                                                            for r in dec.decode(t, p, 0).readings], len(singles))),
        ("Decoder.lines, single readings", best(lambda: [dec.lines(t, p, 0) for t, p in singles], len(singles))),
        ("decode + encode, snapshots", best(lambda: [enc.reading(r) for t, p in snaps
                                                      for r in dec.decode(t, p, 0).readings], len(snap_readings))),
        ("Decoder.lines, snapshots", best(lambda: [dec.lines(t, p, 0) for t, p in snaps], n_snap)),
    ]
    print(f"{'stage':<42} {'µs/reading':>10}")
    for name, us in rows:
        print(f"{name:<42} {us:>10.3f}")
    print(f"decode / orjson.loads: singles {rows[2][1] / rows[1][1]:.2f}, snapshots {rows[5][1] / rows[4][1]:.2f}")
    print(f"Decoder.lines / (decode + encode): singles {rows[8][1] / rows[7][1]:.2f}, "
          f"snapshots {rows[10][1] / rows[9][1]:.2f}")


if __name__ == "__main__":
    main()
