"""``smartpark report daily | monthly`` (CONTRACT §11)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from smartpark.config import Settings
from smartpark.park import load_park

from .build import build_daily, build_monthly, report_day, report_month, report_name
from .render import RENDERERS


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("report", help="compliance reports: hourly means, valid hours, daily/monthly means",
                              description="Compliance reports of the regulated sensors (CONTRACT §11).")
    sub = p.add_subparsers(dest="report_command", metavar="KIND")
    sub.required = True
    d = sub.add_parser("daily", help="one day (default: yesterday in the park's time zone)")
    d.add_argument("--date", metavar="YYYY-MM-DD")
    m = sub.add_parser("monthly", help="one month (default: last month)")
    m.add_argument("--month", metavar="YYYY-MM")
    for q in (d, m):
        q.add_argument("--site", metavar="S", help="one site [every site]")
        q.add_argument("--format", choices=list(RENDERERS), default="pdf", help="[pdf]")
        q.add_argument("--out", metavar="FILE", help="where to write it [csv: standard output; others: "
                       "smartpark-<kind>-<period>.<format> in the current directory]")
    d.set_defaults(func=_daily)
    m.set_defaults(func=_monthly)


def _write(data: bytes, args: argparse.Namespace, name: str) -> int:
    if args.out:
        Path(args.out).write_bytes(data)
    elif args.format == "csv":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        Path(name).write_bytes(data)
        sys.stderr.write(f"report written to {name}\n")
    return 0


def _daily(args: argparse.Namespace, settings: Settings) -> int:
    park = load_park(settings.park)
    day = report_day(args.date, park.park.timezone)
    data = build_daily(settings, park, day, args.site, args.format)
    return _write(data, args, report_name("daily", day.isoformat(), args.site, args.format))


def _monthly(args: argparse.Namespace, settings: Settings) -> int:
    park = load_park(settings.park)
    year, month = report_month(args.month, park.park.timezone)
    data = build_monthly(settings, park, year, month, args.site, args.format)
    return _write(data, args, report_name("monthly", f"{year:04d}-{month:02d}", args.site, args.format))
