"""``Decoder.lines`` of this tree against another tree's, CPU per message, alternated in one process.

    git worktree add /tmp/before <commit>       # or: git archive <commit> smartpark | tar -x -C /tmp/before
    .venv/bin/python bench/bench_wire_ab.py --before /tmp/before [--rounds 8] [--copies 200]

The messages are the bundled park's: one snapshot per asset and one single reading per sensor, every value in
range with an integer ``ts`` (the fast path the collector takes for almost every message). Both decoders are
loaded side by side (the other tree's ``smartpark`` under another module name, with its own park file) and run
in turn, so the machine's load moves both alike; the figure is the ratio of the median CPU times.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

from smartpark.topics import reading_topic, snapshot_topic

ROOT = Path(__file__).resolve().parent.parent
TS = 1_795_000_000_000


def load(root: Path, name: str) -> tuple[ModuleType, ModuleType]:
    spec = importlib.util.spec_from_file_location(name, root / "smartpark" / "__init__.py",
                                                  submodule_search_locations=[str(root / "smartpark")])
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    decoder = "decode" if (root / "smartpark" / "decode.py").exists() else "wire"  # a tree before the rename
    return importlib.import_module(f"{name}.park"), importlib.import_module(f"{name}.{decoder}")


def messages(park_mod: ModuleType, root: Path) -> tuple[Any, list[tuple[str, bytes]]]:
    park = park_mod.load_park(str(root / "smartpark" / "data" / "park.yaml"))
    out = []
    for site in park.sites:
        for asset in site.assets:
            values = {s.id: (s.normal[0] + s.normal[1]) / 2 for s in asset.sensors}
            out.append((snapshot_topic(site.id, asset.id), orjson.dumps({"ts": TS, "values": values})))
            out += [(reading_topic(site.id, asset.id, sid), orjson.dumps({"value": v, "ts": TS, "quality": "good"}))
                    for sid, v in values.items()]
    return park, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, required=True, help="the other tree (a checkout with smartpark/)")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--copies", type=int, default=200, help="how often the park's messages repeat per round")
    args = ap.parse_args()
    runs: dict[str, tuple[Any, list[tuple[str, bytes]], list[float]]] = {}
    for label, root, name in (("before", args.before.resolve(), "sp_before"), ("this", ROOT, "sp_this")):
        park_mod, wire = load(root, name)
        park, msgs = messages(park_mod, root)
        runs[label] = (wire.Decoder(park), msgs * args.copies, [])
    for r in range(args.rounds):
        for label in ("before", "this") if r % 2 == 0 else ("this", "before"):
            dec, msgs, times = runs[label]
            t0 = time.process_time()
            for topic, payload in msgs:
                dec.lines(topic, payload, TS)
            times.append(time.process_time() - t0)
    n = len(runs["this"][1])
    before, this = (statistics.median(runs[k][2]) for k in ("before", "this"))
    print(f"{n:,} messages a round, {args.rounds} rounds taking turns")
    print(f"before {before / n * 1e6:.2f} us/message, this tree {this / n * 1e6:.2f} us/message: "
          f"this/before CPU = {this / before:.2f}")


if __name__ == "__main__":
    main()
