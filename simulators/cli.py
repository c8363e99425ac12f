"""``smartpark simulate | record | replay`` (CONTRACT §6).

* ``simulate`` publishes the park's readings live (``--speed 1``), accelerated (``--speed 60``) or as fast as
  possible (``--speed 0``), optionally with an incident ``--scenario``; with ``--start T --end T`` it backfills
  history into InfluxDB (or publishes it with ``--publish``) with a progress bar. ``--list`` shows the shipped
  scenarios.
* ``record FILE`` captures ``park/#`` into a gzip JSON-lines file until SIGINT/SIGTERM (or ``--duration`` /
  ``--count``); ``replay FILE --speed X`` republishes it with the original timing scaled.

SIGINT and SIGTERM end every command cleanly with exit code 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import signal
import sys
import time
from collections.abc import Coroutine
from datetime import datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from smartpark.config import Settings
from smartpark.errors import UsageError
from smartpark.influx import InfluxClient
from smartpark.park import Park, load_park
from smartpark.timing import parse_duration
from smartpark.topics import SUBSCRIPTION

from .io import backfill, publish, record, replay
from .scenario import Scenario, list_scenarios, load_scenario
from .simulator import Simulator

T = TypeVar("T")
def parse_time(text: str, park: Park, now_ms: int | None = None) -> int:
    """``now``, ``-24h`` (before now), epoch milliseconds, or ISO 8601 (park time zone when naive) -> epoch ms."""
    now_ms = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    s = str(text).strip()
    if s == "now":
        return now_ms
    if s.startswith("-"):
        return now_ms - int(parse_duration(s[1:]) * 1000)
    if re.fullmatch(r"\d{12,14}", s):
        return int(s)
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise UsageError(f"bad time {text!r} (use now, -24h, 2026-11-02T10:00, or epoch milliseconds)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=ZoneInfo(park.park.timezone))
    return int(dt.timestamp() * 1000)


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="publish simulated park readings, run an incident scenario, or backfill",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", metavar="NAME|PATH", help="a shipped scenario (id or sc01..sc10) or a YAML file")
    p.add_argument("--list", action="store_true", help="list the shipped scenarios and exit")
    p.add_argument("--speed", type=float, default=1.0, help="1 real time, 60 a minute per second, 0 no pacing")
    p.add_argument("--duration", help="how long to simulate (90s, 15m, 2h, 1d); default: the scenario, or forever")
    p.add_argument("--seed", type=_seed, default=0, help="same seed, same readings (>= 0)")
    p.add_argument("--start", help="simulated start time (now, -24h, ISO 8601, epoch ms); with --end: backfill")
    p.add_argument("--end", help="end of a backfill (now, ISO 8601, epoch ms)")
    p.add_argument("--publish", action="store_true", help="backfill through MQTT instead of writing InfluxDB")
    p.add_argument("--qos", type=int, choices=(0, 1), default=1, help="MQTT QoS of the readings")
    p.add_argument("--snapshots", action="store_true", help="publish one snapshot per asset and instant")
    p.add_argument("--site", action="append", dest="sites", metavar="SITE", help="only this site (repeatable)")
    p.set_defaults(func=_simulate)

    r = sub.add_parser("record", help=f"capture {SUBSCRIPTION} traffic into a compressed JSON-lines file")
    r.add_argument("file", help="output file (.jsonl.gz)")
    r.add_argument("--duration", help="stop after this long (default: until SIGINT/SIGTERM)")
    r.add_argument("--count", type=int, help="stop after this many messages")
    r.add_argument("--topic", default=SUBSCRIPTION, help=f"topic filter to record (default {SUBSCRIPTION})")
    r.set_defaults(func=_record)

    rp = sub.add_parser("replay", help="republish a recording with its original timing scaled")
    rp.add_argument("file", help="a file written by 'smartpark record'")
    rp.add_argument("--speed", type=float, default=1.0, help="1 original timing, 10 ten times faster, 0 no pacing")
    rp.add_argument("--qos", type=int, choices=(0, 1), default=1)
    rp.set_defaults(func=_replay)


def _run(coro: Coroutine[Any, Any, T], stop: asyncio.Event | None = None) -> T | None:
    """Run until done, or until SIGINT/SIGTERM (then cancel and return None: a clean exit)."""

    async def main() -> T | None:
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(coro)
        signalled = asyncio.Event()

        def on_signal() -> None:
            signalled.set()
            if stop is not None:
                stop.set()
            else:
                task.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, on_signal)
        try:
            return await task
        except asyncio.CancelledError:
            if signalled.is_set():
                return None
            raise
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)

    return asyncio.run(main())


def _scenario(args: argparse.Namespace, park: Park) -> Scenario | None:
    return load_scenario(args.scenario, park) if args.scenario else None


def scenario_table(scenarios: list[Scenario]) -> Table:
    t = Table(title="Shipped scenarios (smartpark simulate --scenario ID)")
    for col in ("id", "标题", "title", "site", "run", "golden alarms"):
        t.add_column(col, overflow="fold")
    for s in scenarios:
        t.add_row(s.id, s.title_zh, s.title, s.site, f"{s.warmup_s:g}+{s.duration_s:g}s", str(len(s.expect)))
    return t


def _simulate(args: argparse.Namespace, settings: Settings) -> int:
    park = load_park(settings.park)
    if args.list:
        Console(width=160).print(scenario_table(list_scenarios(park)))
        return 0
    if args.speed < 0:
        raise UsageError("--speed must be >= 0")
    for site in args.sites or []:
        if park.site(site) is None:
            raise UsageError(f"--site {site!r} is not a site of the park ({', '.join(x.id for x in park.sites)})")
    scn = _scenario(args, park)
    duration = parse_duration(args.duration) if args.duration else None
    if args.end is not None:
        return _backfill(args, settings, park, scn)
    start = parse_time(args.start, park) if args.start else None
    sim = Simulator(park, scn, seed=args.seed, start_ms=start, snapshots=args.snapshots, sites=args.sites)
    stop = asyncio.Event()
    sent = _run(publish(sim.messages(duration), settings.mqtt_url, speed=args.speed, qos=args.qos, stop=stop), stop)
    print(f"published {sent or 0} messages", file=sys.stderr)
    return 0


def _backfill(args: argparse.Namespace, settings: Settings, park: Park, scn: Scenario | None) -> int:
    if args.start is None:
        raise UsageError("--end needs --start")
    start, end = parse_time(args.start, park), parse_time(args.end, park)
    if end <= start:
        raise UsageError(f"--end ({args.end}) is not after --start ({args.start})")
    if args.publish:
        sim = Simulator(park, scn, seed=args.seed, start_ms=start, snapshots=args.snapshots, sites=args.sites)
        stop = asyncio.Event()
        sent = _run(publish(sim.messages((end - start) / 1000), settings.mqtt_url, speed=0, qos=args.qos,
                            stop=stop), stop)
        print(f"published {sent or 0} messages", file=sys.stderr)
        return 0

    async def run() -> int:
        columns = (TextColumn("backfill"), BarColumn(), TextColumn("{task.fields[written]:,} readings"),
                   MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
            total_h = max(1, -(-(end - start) // 3_600_000))
            task = bar.add_task("backfill", total=total_h, written=0)

            def progress(done_ms: int, total_ms: int, written: int) -> None:
                bar.update(task, completed=min(total_h, done_ms // 3_600_000), written=written)
            async with InfluxClient(settings.influx()) as client:
                if await client.ensure_database():
                    print(f"created database {settings.influx_db!r}", file=sys.stderr)
                n = await backfill(park, client, start, end, seed=args.seed, scenario=scn, progress=progress,
                                   sites=args.sites)
                bar.update(task, completed=total_h, written=n)
                return n

    n = _run(run())
    print(f"wrote {n or 0} readings to {settings.influx_db}", file=sys.stderr)
    return 0


def _record(args: argparse.Namespace, settings: Settings) -> int:
    duration = parse_duration(args.duration) if args.duration else None
    stop = asyncio.Event()
    n = _run(record(settings.mqtt_url, args.file, topic=args.topic, stop=stop, duration_s=duration,
                    count=args.count), stop)
    print(f"recorded {n or 0} messages to {args.file}", file=sys.stderr)
    return 0


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    if args.speed < 0:
        raise UsageError("--speed must be >= 0")
    stop = asyncio.Event()
    try:
        sent = _run(replay(args.file, settings.mqtt_url, speed=args.speed, qos=args.qos, stop=stop), stop)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot replay {args.file}: {exc}") from None
    print(f"replayed {sent or 0} messages", file=sys.stderr)
    return 0
