"""Rollup and report benchmarks (CONTRACT §10, §11), on a private influxd, every figure a ratio within one run.

1. Rollup path: 24 sensors x ``--days`` days at 60 s written to ``raw``; ceiling = InfluxDB's own write rate of
   those points (5,000-point batches, the collector's batch size); then ``Rollups.rebuild`` over the whole range
   (the recompute the runner does for touched periods, at its largest) -> readings/s, as a ratio to the
   ceiling and to the collector's (d) figure (0.63 x the same ceiling, docs/benchmarks/collector.md).
   Also a live turn: the last 5 minutes touched, recomputed with their hour and day.
2. A 30-day panel of the 24 sensors: the site dashboards' tiered query (rollups over two days) against the raw
   query the panels had before, points read (count over the same WHERE) and time, median of ``--repeat``.
3. A daily report for one site (hw_center's regulated sensors, 60 s readings) on ``--year-days`` of data:
   pdf and csv time for one day, median of ``--repeat``; target <= 5 s.

    .venv/bin/python bench/bench_rollups.py [--days 30] [--year-days 365] [--repeat 3] [--rollup-only] [--step 60]

``--journal`` runs only the journal comparison, in one run: the real collector (``smartpark collect``, snapshots
as in the collector benchmark's (d), here of the ``--sensors`` sensors of one asset, one publisher so that every
reading is published in time order) ingests ``--days`` days of 60 s readings into an empty database, journaling
them; its readings/s is (d) on this data. Then the rollup runner's
fast path takes that journal in one turn (journal parse + aggregation + rollup writes) and the raw recompute
(``Rollups.rebuild`` of the same range, the old path) runs over the same data; both as readings/s and as a ratio
to (d), with the CPU seconds of influxd and of this process. ``--repeat`` rounds, medians.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_rollups.py --journal [--days 30] [--sensors 24] [--repeat 2]

``--rollup-only`` stops after 1 (the cheapest run that gives the rollup path's ratio); it also prints the CPU
seconds influxd and this process spent in the rebuild (``/proc``), which a loaded machine lengthens less than
the wall clock. ``--step`` sets the seconds between the rollup path's readings (60: five per five-minute
period, where InfluxDB's per-period work weighs most).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TypeVar
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_collector, beside this file

from bench_collector import run_collector

from dashboards.build import reading_query, tiered_targets
from dashboards.macros import TimeRange, expand
from devstack import Stack, free_port
from devstack.load import write_park
from reports import daily
from rollups import PERIOD_MS, RollupRunner, Rollups
from smartpark.config import Settings
from smartpark.influx import InfluxClient, Retention
from smartpark.park import SensorRef, load_park
from smartpark.topics import snapshot_topic

MIN = 60_000
T = TypeVar("T")


async def _write(db: InfluxClient, lines: list[str]) -> float:
    t = time.perf_counter()
    for i in range(0, len(lines), 5000):
        await db.write(lines[i:i + 5000])
    return time.perf_counter() - t


def _lines(refs: list[SensorRef], start: int, end: int, step: int = MIN) -> list[str]:
    out = []
    for ref in refs:
        lo, hi = ref.sensor.normal
        prefix = f"reading,asset={ref.asset},sensor={ref.sensor.id},site={ref.site} value="
        for k, ts in enumerate(range(start, end, step)):
            out.append(f"{prefix}{lo + (hi - lo) * ((k * 37) % 101) / 101!r} {ts}")
    return out


def _influxd_cpu(stack: Stack) -> float:
    """CPU seconds (user + system) of the stack's influxd so far, from /proc; NaN where it cannot be read."""
    try:
        pid = json.loads(stack.pid_file("influxd").read_text())["pid"]
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, ValueError, KeyError, IndexError):
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _median(f: Callable[..., Awaitable[T]], repeat: int) -> tuple[float, T]:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        result = await f()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def _snapshot_jobs(assets: int, per_asset: int, start: int, end: int, step: int) -> list[tuple[str, list[str]]]:
    """One snapshot per asset and minute, in time order per topic (the collector benchmark's (d) shape)."""
    jobs = []
    for a in range(assets):
        msgs = [json.dumps({"ts": ts, "values": {f"s{s:03d}": round(10 + ((k + 7 * s + a) * 37 % 1009) * 0.25, 2)
                                                 for s in range(per_asset)}})
                for k, ts in enumerate(range(start, end, step))]
        jobs.append((snapshot_topic("plant", f"a{a:02d}"), msgs))
    return jobs


async def journal_round(stack: Stack, tmp: Path, r: int, args: argparse.Namespace) -> dict[str, float]:
    """One round of ``--journal``: (d) on this data, the journal's fast path, the raw recompute."""
    per_asset, assets = args.sensors, 1  # one topic: one publisher, every reading in time order
    park_path = write_park(tmp / f"park{r}.yaml", assets=assets, per_asset=per_asset)
    park = load_park(park_path)
    state = tmp / f"state{r}"
    state.mkdir()
    name = f"journal{r}"
    s = Settings(influx_url=stack.influx_url, influx_db=name, park=str(park_path), state_dir=str(state))
    end = int(time.time() * 1000) // 3_600_000 * 3_600_000
    start = end - args.days * 86_400_000
    step = args.step * 1000
    jobs = _snapshot_jobs(assets, per_asset, start, end, step)
    readings = sum(len(lines) for _, lines in jobs) * per_asset
    out: dict[str, float] = {"readings": readings}
    async with InfluxClient(s.influx(), timeout=600) as db:
        await db.ensure_database()
        retention = await db.ensure_retention()
        runner = RollupRunner(s, park, warm_h=0)
        await runner.start(db, retention)  # an empty raw: the journal is complete from the beginning
        cpu0 = _influxd_cpu(stack)
        got = run_collector(stack, park_path, state, name, readings // per_asset, jobs, readings, 5000)
        out["d"] = got["rate"]
        out["d_influxd_cpu"] = _influxd_cpu(stack) - cpu0
        print(f"round {r}: (d) collector on this data: {readings:,} readings in {got['seconds']:.1f} s = "
              f"{got['rate']:,.0f}/s, {got['lost']} lost; journal {(state / 'rollups' / 'journal').stat().st_size:,} "
              f"bytes", flush=True)
        rollups = Rollups(db, retention, park.park.timezone)
        cpu0, own0, t = _influxd_cpu(stack), time.process_time(), time.perf_counter()
        points = await runner.turn(rollups)
        secs = time.perf_counter() - t
        w = runner.windows
        assert w is not None
        out["fast"] = (readings - w.held) / secs  # the readings of windows still open are not counted
        out["fast_influxd_cpu"], out["fast_own_cpu"] = _influxd_cpu(stack) - cpu0, time.process_time() - own0
        print(f"round {r}: fast path (one turn over the journal): {points:,} rollup points, "
              f"{runner.stats.from_journal:,} windows from the journal, {rollups.raw_rows} groups read from raw, "
              f"{w.held} readings still held open, in {secs:.2f} s = {out['fast']:,.0f} readings/s = "
              f"{out['fast'] / out['d']:.2f} x (d); CPU influxd {out['fast_influxd_cpu']:.2f} s, this process "
              f"{out['fast_own_cpu']:.2f} s", flush=True)
        cutoff = (w.horizon - w.lateness) // PERIOD_MS * PERIOD_MS - PERIOD_MS  # windows the fast path finished
        fast_sums = await _rollup_sums(db, retention, cutoff)
        cpu0, own0, t = _influxd_cpu(stack), time.process_time(), time.perf_counter()
        old = Rollups(db, retention, park.park.timezone)
        points = await old.rebuild(start, end)
        secs = time.perf_counter() - t
        out["raw"] = readings / secs
        out["raw_influxd_cpu"], out["raw_own_cpu"] = _influxd_cpu(stack) - cpu0, time.process_time() - own0
        print(f"round {r}: raw recompute (Rollups.rebuild): {points:,} points in {secs:.2f} s = "
              f"{out['raw']:,.0f} readings/s = {out['raw'] / out['d']:.2f} x (d); CPU influxd "
              f"{out['raw_influxd_cpu']:.2f} s, this process {out['raw_own_cpu']:.2f} s", flush=True)
        raw_sums = await _rollup_sums(db, retention, cutoff)
        same = all(f[:-1] == r[:-1] and abs(f[-1] - r[-1]) <= 1e-9 * abs(r[-1]) for f, r in zip(fast_sums, raw_sums,
                                                                                                strict=True))
        print(f"round {r}: the fast path's 5m and 1h points before {cutoff} ms equal the raw recompute's "
              f"(count, sum of count and good, min, max, sum of means): {same} {fast_sums} {raw_sums}", flush=True)
        out["same"] = float(same)
        await db.query(f'DROP DATABASE "{name}"', method="POST")
    return out


async def _rollup_sums(db: InfluxClient, retention: Retention, before: int) -> list[tuple[float, ...]]:
    """Totals of reading_5m and reading_1h before ``before``: equal for two ways of computing the same points."""
    out = []
    for m, end in (("reading_5m", before), ("reading_1h", before // 3_600_000 * 3_600_000 - 3_600_000)):
        rows = await db.rows(f'SELECT count("mean"), sum("count"), sum("good"), min("min"), max("max"), sum("mean") '
                             f"FROM {retention.measurement(m, rollup=True)} WHERE time < {end}ms")
        row = rows[0]
        out.append(tuple(float(row[k]) for k in ("count", "sum", "sum_1", "min", "max", "sum_2")))
    return out


async def journal_main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-rollups-") as tmp:
        stack = Stack(Path(tmp) / "stack", mqtt_port=free_port(), influx_port=free_port())
        stack.up()
        try:
            rounds = [await journal_round(stack, Path(tmp), r, args) for r in range(args.repeat)]
        finally:
            stack.down()
    med = {k: statistics.median(x[k] for x in rounds) for k in rounds[0]}
    fast = [x["fast"] / x["d"] for x in rounds]  # each round's own ratio: (d) and the paths measured together
    raw = [x["raw"] / x["d"] for x in rounds]
    print(f"median of {len(rounds)} rounds' ratios: fast path {statistics.median(fast):.2f} x (d) (rounds: "
          f"{', '.join(f'{x:.2f}' for x in fast)}); raw recompute {statistics.median(raw):.2f} x (d) (rounds: "
          f"{', '.join(f'{x:.2f}' for x in raw)}); medians of the rates: (d) {med['d']:,.0f}, fast path "
          f"{med['fast']:,.0f}, raw {med['raw']:,.0f} readings/s; equal points in every round: "
          f"{all(x['same'] for x in rounds)}; os load {os.getloadavg()[0]:.1f}")


async def main(args: argparse.Namespace) -> None:
    if args.journal:
        await journal_main(args)
        return
    park = load_park()
    tz = ZoneInfo(park.park.timezone)
    with tempfile.TemporaryDirectory(prefix="bench-rollups-") as tmp:
        stack = Stack(Path(tmp) / "stack", mqtt_port=0, influx_port=free_port())
        stack.start_influxd()
        try:
            async with InfluxClient(Settings(influx_url=stack.influx_url, influx_db="bench").influx(),
                                    timeout=600) as db:
                await db.ensure_database()
                retention = await db.ensure_retention()
                refs = [r for r in park if r.sensor.interval_s <= 60][:24]
                end = int(time.time() * 1000) // 3_600_000 * 3_600_000
                start = end - args.days * 86_400_000
                lines = _lines(refs, start, end, args.step * 1000)
                wcpu0 = _influxd_cpu(stack)
                secs = await _write(db, lines)
                wcpu = _influxd_cpu(stack) - wcpu0
                ceiling = len(lines) / secs
                print(f"ceiling: InfluxDB wrote {len(lines):,} readings in {secs:.1f} s = {ceiling:,.0f}/s "
                      f"(influxd CPU {wcpu:.2f} s)")
                rollups = Rollups(db, retention, park.park.timezone)
                cpu0, own0 = _influxd_cpu(stack), time.process_time()
                t = time.perf_counter()
                points = await rollups.rebuild(start, end)
                secs = time.perf_counter() - t
                cpu, own = _influxd_cpu(stack) - cpu0, time.process_time() - own0
                rate = len(lines) / secs
                print(f"rollup rebuild: {len(lines):,} readings -> {points:,} rollup points in {secs:.1f} s = "
                      f"{rate:,.0f} readings/s = {rate / ceiling:.2f} x the write ceiling = "
                      f"{rate / (0.63 * ceiling):.2f} x the collector's (d) (0.63 x ceiling); CPU: influxd "
                      f"{cpu:.2f} s ({cpu / wcpu:.2f} x what it spent writing them), this process {own:.2f} s")
                if args.rollup_only:
                    return
                live = set(range((end - 5 * MIN) // PERIOD_MS, end // PERIOD_MS))
                t_live, _ = await _median(lambda: rollups.recompute(live), args.repeat)
                per_turn = len(refs) * 300 // args.step
                print(f"live turn (last 5 min touched, with its hour and day): {t_live * 1000:.0f} ms for "
                      f"{per_turn} readings of 24 sensors")

                tr = TimeRange(end - 30 * 86_400_000, end)
                interval = 3_600_000  # what Grafana picks for 30 days at the panels' 500 points: 1 h
                raw_q = [expand(reading_query(r.site, r.asset, r.sensor.id, valid=r.sensor.range), tr, interval)
                         for r in refs]
                tiered = [[expand(t["query"], tr, interval) for t in tiered_targets(r.site, r.asset, r.sensor.id,
                                                                                    r.sensor.id, r.sensor.range)]
                          for r in refs]

                async def run_raw() -> None:
                    for q in raw_q:
                        await db.query(q)

                async def run_tiered() -> None:
                    for qs in tiered:
                        for q in qs:
                            await db.query(q)

                async def count(q: str, field: str) -> int:
                    rows = await db.rows(q.replace(f'mean("{field}")', f'count("{field}")', 1).split(" GROUP BY")[0])
                    return int(rows[0]["count"]) if rows else 0

                t_raw, _ = await _median(run_raw, args.repeat)
                t_tier, _ = await _median(run_tiered, args.repeat)
                n_raw = sum([await count(q, "value") for q in raw_q])
                n_tier = sum([await count(qs[0], "value") + await count(qs[1], "mean") for qs in tiered])
                print(f"30-day panel of 24 sensors: raw {n_raw:,} points in {t_raw * 1000:.0f} ms; rollups "
                      f"{n_tier:,} points in {t_tier * 1000:.0f} ms: {n_tier / n_raw:.4f} of the points "
                      f"(1/{n_raw / max(1, n_tier):.0f}), {t_tier / t_raw:.3f} x the time")

                site = "hw_center"
                regulated = [r for r in park if r.site == site and r.sensor.regulatory]
                yend = int(datetime.now(tz).replace(hour=0, minute=0, second=0, microsecond=0).timestamp() * 1000)
                ystart = yend - args.year_days * 86_400_000
                total = 0
                t = time.perf_counter()
                for chunk in range(ystart, yend, 30 * 86_400_000):
                    part = _lines(regulated, chunk, min(yend, chunk + 30 * 86_400_000))
                    total += len(part)
                    await _write(db, part)
                print(f"a year for {site}: {len(regulated)} regulated sensors, {total:,} readings written in "
                      f"{time.perf_counter() - t:.0f} s")
                day = date.fromtimestamp(yend / 1000) - timedelta(days=1)
                for fmt in ("csv", "pdf"):
                    t_rep, data = await _median(lambda fmt=fmt: daily(db, park, day, site, fmt), args.repeat)
                    print(f"daily report {site} {day} {fmt}: {t_rep:.2f} s ({len(data):,} bytes)")
        finally:
            stack.stop_influxd()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--year-days", type=int, default=365)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--step", type=int, default=60, help="seconds between readings of the rollup path's data")
    ap.add_argument("--rollup-only", action="store_true", help="stop after the rollup path's figures")
    ap.add_argument("--journal", action="store_true",
                    help="only the collector's (d) on this data against the journal's fast path and the raw recompute")
    ap.add_argument("--sensors", type=int, default=24, help="--journal: sensors, in one asset (a snapshot each)")
    asyncio.run(main(ap.parse_args()))
