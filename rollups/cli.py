"""``smartpark rollup run | rebuild --since T [--until T]`` (CONTRACT §10)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from datetime import datetime
from zoneinfo import ZoneInfo

from smartpark.config import Settings
from smartpark.errors import UsageError
from smartpark.influx import InfluxClient
from smartpark.park import load_park

from .compute import Rollups
from .runner import RollupRunner


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("rollup", help="reading_5m / 1h / 1d rollups and the retention policies",
                              description="Rollups of the readings (CONTRACT §10), in retention policy 'rollup'.")
    sub = p.add_subparsers(dest="rollup_command", metavar="ACTION")
    sub.required = True
    run = sub.add_parser("run", help="keep the rollups current from the collectors' journal until SIGINT/SIGTERM")
    run.add_argument("--interval", type=float, default=60.0, metavar="S",
                     help="seconds between two passes over the journal [60]")
    run.add_argument("--once", action="store_true", help="one pass, then exit")
    run.set_defaults(func=_run)
    rebuild = sub.add_parser("rebuild", help="recompute every rollup of a time range from raw")
    rebuild.add_argument("--since", required=True, metavar="T",
                         help="start: YYYY-MM-DD or ISO 8601 time (local to the park without an offset)")
    rebuild.add_argument("--until", metavar="T", help="end, exclusive [now]")
    rebuild.set_defaults(func=_rebuild)


def parse_time(text: str, tz: str) -> int:
    """``YYYY-MM-DD``, ``YYYY-MM-DDTHH:MM[:SS][offset]`` (the park's zone when no offset) -> epoch ms."""
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"not a date or ISO 8601 time: {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=ZoneInfo(tz))
    return int(dt.timestamp() * 1000)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    if args.interval <= 0:
        raise UsageError("--interval must be positive")
    park = load_park(settings.park)
    runner = RollupRunner(settings, park, interval=args.interval)

    async def main() -> None:
        stop = asyncio.Event()
        if args.once:
            stop.set()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await runner.run(stop)

    asyncio.run(main())
    return 1 if args.once and runner.stats.failures else 0


def _rebuild(args: argparse.Namespace, settings: Settings) -> int:
    park = load_park(settings.park)
    tz = park.park.timezone
    since = parse_time(args.since, tz)
    until = parse_time(args.until, tz) if args.until else int(time.time() * 1000)
    if until <= since:
        raise UsageError("--until must be after --since")

    async def main() -> int:
        async with InfluxClient(settings.influx(), timeout=120.0) as db:
            await db.ensure_database()
            rollups = Rollups(db, await db.ensure_retention(), tz)
            return await rollups.rebuild(since, until)

    points = asyncio.run(main())
    sys.stdout.write(f"rollups rebuilt: {points} points\n")
    return 0
