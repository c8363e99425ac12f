"""The collector behind a small in-flight window: RabbitMQ 3.10's MQTT plugin with ``mqtt.prefetch`` 10 (its
default; the broker then sends at most 10 messages unacked) against the same broker with prefetch 1000, and
with the window flush on and off, all in one run.

    .venv/bin/python bench/bench_mqtt_window.py [--n 5000] [--repeat 3]

Each case: a RabbitMQ of its own (prefetch 10 or 1000), a collector in a thread (MQTT 3.1.1 by auto
fallback, the window flush on or off), ``n`` QoS 1 single readings published first and held by the broker,
then the collector's time from its first message to the last point written, readings/s. The ratio that
matters is prefetch 10 with the flush over prefetch 10 without it; prefetch 1000 shows the ceiling of the
same run. Results: docs/benchmarks/collector.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from devstack import Stack, free_port
from devstack.brokers import RabbitMqBroker
from devstack.load import (
    CollectorThread,
    Publisher,
    big_park,
    readings,
    settings_for,
    wait_connected,
    wait_for,
)


def one(root: Path, influx: Stack, n: int, prefetch: int, window_flush: bool, tag: str) -> float:
    park_path, park = big_park(root)
    sent = readings(park, n, seed=3)
    db = f"bench_{tag}"
    with RabbitMqBroker(root, prefetch=prefetch) as rabbit:
        settings = settings_for(rabbit.url, influx.influx_url, db, park_path, root / "state")
        # publish first, with the collector's session already there: the broker holds all n
        with CollectorThread(settings, park, instance=tag, window_flush=window_flush) as collector:
            wait_connected(collector)
        pub = Publisher(rabbit.port)
        pub.publish((t, p) for t, p, *_ in sent)
        pub.wait_acked()
        pub.close()
        with CollectorThread(settings, park, instance=tag, window_flush=window_flush) as collector:
            wait_for(lambda: collector.counters.received > 0, 60, "the first message")
            start = time.monotonic()
            wait_for(lambda: collector.counters.written >= n, 600, lambda: f"{collector.counters.written} of {n}")
            elapsed = time.monotonic() - start
    return n / elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        influx = Stack(Path(tmp) / "influx", mqtt_port=0, influx_port=free_port())
        influx.start_influxd()
        try:
            results: dict[str, list[float]] = {"10 flush": [], "10 no flush": [], "1000 flush": []}
            for r in range(args.repeat):
                for case, prefetch, flush in (("10 flush", 10, True), ("10 no flush", 10, False),
                                              ("1000 flush", 1000, True)):
                    root = Path(tmp) / f"{r}-{prefetch}-{flush}"
                    root.mkdir()
                    rate = one(root, influx, args.n, prefetch, flush, f"r{r}_{prefetch}_{int(flush)}")
                    results[case].append(rate)
                    print(f"run {r + 1}: prefetch {case}: {rate:,.0f} readings/s", flush=True)
        finally:
            influx.stop_influxd()
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"medians of {args.repeat}: " + ", ".join(f"prefetch {k} {v:,.0f}/s" for k, v in med.items()))
    print(f"prefetch 10: with the window flush / without = {med['10 flush'] / med['10 no flush']:.2f} x; "
          f"with the flush / prefetch 1000 = {med['10 flush'] / med['1000 flush']:.2f} x; "
          f"without / prefetch 1000 = {med['10 no flush'] / med['1000 flush']:.2f} x")


if __name__ == "__main__":
    main()
