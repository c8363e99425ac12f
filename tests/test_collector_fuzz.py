"""Fuzzed payloads through a real broker and a real InfluxDB: each is stored or dead-lettered with the
right reason, nothing crashes or stalls the collector, and good readings published afterwards arrive."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_collector_support import TS0, CollectorThread, Publisher, big_park, settings_for, wait_connected, wait_for

SENSORS = [f"plant/a{a:02d}/s{s:03d}" for a in (0, 3, 9) for s in (0, 17, 49)]

# kind -> (strategy of the kind's parameters); rendered with the example's index so that ts are distinct
finite = st.floats(allow_nan=False, allow_infinity=False)
KINDS = st.one_of(
    st.tuples(st.just("valid"), st.floats(0, 1000), st.sampled_from([None, "good", "uncertain", "bad"])),
    st.tuples(st.just("out_of_range"), st.one_of(st.floats(1000.0001, 1e300), st.floats(-1e300, -0.0001)),
              st.none()),
    st.tuples(st.just("nonfinite"), st.sampled_from(["NaN", "Infinity", "-Infinity"]), st.none()),
    st.tuples(st.just("boolean"), st.booleans(), st.none()),
    st.tuples(st.just("wrong_type"), st.one_of(st.text(max_size=20), st.none(), st.lists(finite, max_size=3),
                                               st.dictionaries(st.text(max_size=5), finite, max_size=2)),
              st.none()),
    st.tuples(st.just("missing_value"), st.none(), st.none()),
    st.tuples(st.just("bad_ts"), st.sampled_from(["seconds", "text", "bool", "naive", "float"]), st.none()),
    st.tuples(st.just("bad_quality"), st.text(min_size=1, max_size=10).filter(
        lambda q: q not in ("good", "uncertain", "bad")), st.none()),
    st.tuples(st.just("binary"), st.binary(max_size=300), st.none()),
    st.tuples(st.just("truncated"), st.integers(1, 20), st.none()),
    st.tuples(st.just("nested"), st.integers(2_000, 30_000), st.none()),
    st.tuples(st.just("too_large"), st.integers(64 * 1024 + 1, 70_000), st.none()),
    st.tuples(st.just("unknown_topic"), st.sampled_from(["park/plant/a00/nosuch", "park/plant/zz",
                                                         "park/elsewhere", "park/plant/a00/s000/extra",
                                                         "park/nosite/a00/s000"]), st.none()),
)


def render(i: int, kind: tuple[str, Any, Any]) -> tuple[str, bytes, str | None, tuple[str, int, float] | None]:
    """(topic, payload, dead-letter reason or None, stored (key, ts, value) or None) of example ``i``."""
    name, a, b = kind
    key = SENSORS[i % len(SENSORS)]
    topic = f"park/{key}"
    ts = TS0 + i

    def doc(**kw: Any) -> bytes:
        return json.dumps({"ts": ts, **kw}).encode()

    if name == "valid":
        payload = doc(value=a) if b is None else doc(value=a, quality=b)
        return topic, payload, None, (key, ts, float(a))
    if name == "out_of_range":
        return topic, doc(value=a), "out_of_range", (key, ts, float(a))
    if name == "nonfinite":
        return topic, b'{"value": %s, "ts": %d}' % (a.encode(), ts), "bad_value", None
    if name in ("boolean", "wrong_type"):
        return topic, doc(value=a), "bad_value", None
    if name == "missing_value":
        return topic, doc(), "bad_value", None
    if name == "bad_ts":
        raw = {"seconds": ts // 1000, "text": "yesterday", "bool": True, "naive": "2025-11-27T00:00:00",
               "float": ts + 0.5}[a]
        return topic, json.dumps({"value": 1.0, "ts": raw}).encode(), "bad_ts", None
    if name == "bad_quality":
        return topic, doc(value=1.0, quality=a), "bad_value", None
    if name == "binary":
        return topic, b"\xff" + a, "bad_json", None  # never UTF-8, so never JSON
    if name == "truncated":
        whole = doc(value=1.0)
        return topic, whole[:max(1, len(whole) - a)], "bad_json", None  # an unclosed object
    if name == "nested":
        return topic, b"[" * a + b"]" * a, "bad_json", None
    if name == "too_large":
        return topic, b"x" * a, "too_large", None
    return a, doc(value=1.0), "unknown_sensor", None


def examples(n: int) -> list[tuple[str, Any, Any]]:
    out: list[tuple[str, Any, Any]] = []

    @settings(max_examples=n, database=None, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(KINDS)
    def collect(kind: tuple[str, Any, Any]) -> None:
        out.append(kind)

    collect()
    return out


def test_fuzzed_payloads_are_stored_or_dead_lettered(shared_broker: Any, influx_db: Any, tmp_path: Path) -> None:
    """≥ 1,000 hypothesis payloads plus one of 10 MB: each is stored or dead-lettered with the right reason."""
    park_path, park = big_park(tmp_path)
    kinds = examples(1200)
    assert len(kinds) >= 1000
    cases = [render(i, k) for i, k in enumerate(kinds)]
    cases.append(("park/plant/a01/s001", b"{" * (10 * 1024 * 1024), "too_large", None))
    good = [(f"park/plant/a05/s{i % 50:03d}", json.dumps({"value": i, "ts": TS0 + 10_000 + i}).encode())
            for i in range(200)]
    expected_points = {c[3] for c in cases if c[3] is not None} | {
        (t[5:], TS0 + 10_000 + i, float(i)) for i, (t, _) in enumerate(good)}
    expected_dead = Counter((c[2], c[0]) for c in cases if c[2] is not None)

    settings_ = settings_for(shared_broker.url, influx_db.url, influx_db.db, park_path, tmp_path / "state")
    with CollectorThread(settings_, park, instance=f"fuzz{id(cases)}") as collector:
        wait_connected(collector)
        pub = Publisher(shared_broker.port)
        pub.publish((topic, payload) for topic, payload, *_ in cases)
        pub.publish(good)
        pub.wait_acked()
        total = sum(expected_dead.values())
        wait_for(lambda: influx_db.count("dead_letter") >= total and influx_db.count("reading") >= len(expected_points),
                 90, lambda: f"{influx_db.count('dead_letter')}/{total} dead letters, "
                             f"{influx_db.count('reading')}/{len(expected_points)} readings")
        pub.close()
    rows = influx_db.query('SELECT "value" FROM "reading" GROUP BY "site", "asset", "sensor"')
    got = {(f"{r['site']}/{r['asset']}/{r['sensor']}", int(r["time"]), float(r["value"])) for r in rows}
    assert got == expected_points
    dead = influx_db.query('SELECT "topic", "reason" FROM "dead_letter"')
    assert Counter((r["reason"], r["topic"]) for r in dead) == expected_dead
    bad = influx_db.query('SELECT "value", "quality" FROM "reading" WHERE "quality" = \'bad\'')
    assert len(bad) == sum(1 for c in cases if c[2] == "out_of_range") + sum(
        1 for k in kinds if k[0] == "valid" and k[2] == "bad")
    assert collector.counters.invalid == sum(expected_dead.values())
