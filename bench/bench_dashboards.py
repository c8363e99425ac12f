"""Dashboard benchmarks: what opening each generated dashboard costs InfluxDB, and the previews.

On a private influxd holding a 24 h ``simulators.backfill`` of the whole park (about 3 million readings):

1. Dashboard load: every panel's queries of a dashboard, expanded as Grafana expands them over its default
   time range and run one after the other (Grafana runs them in parallel; sequential is the total work),
   median of ``--repeat`` runs. Ceiling measured in the same run: one full scan,
   ``SELECT count("value") FROM "reading"`` over the same 24 h, i.e. touching every point once. A dashboard
   at 0.3 costs about a third of reading the whole day.
2. Preview: ``dashboards preview`` time per dashboard (queries + matplotlib), against the same full scan.

    .venv/bin/python bench/bench_dashboards.py [--repeat 5] [--hours 24]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from dashboards import build_all, run_dashboard
from dashboards.macros import TimeRange, interval_to_ms
from dashboards.preview import render_previews
from devstack import Stack, free_port
from simulators import backfill
from smartpark.config import Settings
from smartpark.influx import InfluxClient
from smartpark.park import load_park
from smartpark.schema import READING


async def _timed(coro_factory: Callable[..., Awaitable[object]], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        await coro_factory()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


async def main(args: argparse.Namespace) -> None:
    park = load_park()
    with tempfile.TemporaryDirectory(prefix="bench-dash-") as tmp:
        stack = Stack(Path(tmp) / "stack", mqtt_port=0, influx_port=free_port())
        stack.start_influxd()
        try:
            settings = Settings(influx_url=stack.influx_url, influx_db="bench")
            async with InfluxClient(settings.influx(), timeout=120) as client:
                await client.ensure_database()
                now = int(time.time() * 1000) // 1000 * 1000
                t = time.perf_counter()
                n = await backfill(park, client, now - args.hours * 3_600_000, now, seed=1, batch_lines=20_000)
                print(f"backfill: {n:,} readings in {time.perf_counter() - t:.1f} s")
                full = TimeRange(now - args.hours * 3_600_000, now)
                scan_q = (f'SELECT count("value") FROM "{READING}" WHERE time >= {full.from_ms}ms '
                          f"and time <= {full.to_ms}ms")
                scan = await _timed(lambda: client.query(scan_q), args.repeat)
                print(f"ceiling: full scan of {args.hours} h: {scan * 1000:.0f} ms")
                print(f"{'dashboard':28} {'panels':>6} {'range':>6} {'load ms':>8} {'x scan':>7}")
                for dash in build_all(park):
                    span = min(interval_to_ms(dash["time"]["from"].removeprefix("now-")), args.hours * 3_600_000)
                    tr = TimeRange(now - span, now)
                    results = await run_dashboard(client, dash, tr)
                    took = await _timed(lambda d=dash, r=tr: run_dashboard(client, d, r), args.repeat)
                    print(f"{dash['uid']:28} {len(results):6d} {dash['time']['from']:>6} {took * 1000:8.0f} "
                          f"{took / scan:7.2f}")
                out = Path(tmp) / "previews"
                print(f"{'preview':28} {'ms':>8} {'x scan':>7}")
                for dash in build_all(park):
                    t = time.perf_counter()
                    await render_previews(client, [dash], full, out)
                    took = time.perf_counter() - t
                    print(f"{dash['uid']:28} {took * 1000:8.0f} {took / scan:7.2f}")
        finally:
            stack.stop_influxd()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--hours", type=int, default=24)
    asyncio.run(main(ap.parse_args()))
