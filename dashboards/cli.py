"""``smartpark dashboards build | push | preview``.

- ``build [--check] [--out DIR]``: write the Grafana JSON generated from the park model (``--check``: exit 1
  when the files on disk differ from a fresh build, for CI and pre-commit).
- ``push [--grafana-url URL]``: upload them to a Grafana (token in ``GRAFANA_TOKEN``), a folder per site.
- ``preview [--out DIR] [--since 24h] [--dashboard UID]...``: render PNGs from InfluxDB with matplotlib.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

from smartpark.config import Settings
from smartpark.decode import parse_ts
from smartpark.errors import ConfigError, DecodeError
from smartpark.influx import InfluxClient
from smartpark.park import load_park

from .build import GENERATED_DIR, build_all, stale_files, write_generated
from .macros import TimeRange, interval_to_ms


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dashboards", help="Grafana dashboards generated from the park model")
    dsub = p.add_subparsers(dest="dashboards_cmd", metavar="ACTION")
    dsub.required = True

    b = dsub.add_parser("build", help="write the dashboards' JSON from the park model")
    b.add_argument("--out", type=Path, default=GENERATED_DIR, help=f"output directory (default {GENERATED_DIR})")
    b.add_argument("--check", action="store_true", help="do not write; exit 1 if the files are out of date")
    b.set_defaults(func=_build)

    u = dsub.add_parser("push", help="upload the dashboards to Grafana (token in GRAFANA_TOKEN)")
    u.add_argument("--grafana-url", default=os.environ.get("GRAFANA_URL", ""),
                   help="Grafana base URL [env GRAFANA_URL]")
    u.add_argument("--timeout", type=float, default=10.0, help="seconds per HTTP call")
    u.set_defaults(func=_push)

    v = dsub.add_parser("preview", help="render every dashboard to PNG from InfluxDB (matplotlib)")
    v.add_argument("--out", type=Path, default=Path("dashboards-preview"), help="directory for the PNGs")
    v.add_argument("--since", default="24h", help="length of the time range, e.g. 6h, 24h, 7d (default 24h)")
    v.add_argument("--until", metavar="TIME", help="end of the time range: epoch ms or RFC 3339 with offset "
                   "(default now; for replayed or simulated history at other times)")
    v.add_argument("--dashboard", action="append", default=[], metavar="UID", help="only this dashboard")
    v.set_defaults(func=_preview)


def _build(args: argparse.Namespace, settings: Settings) -> int:
    park = load_park(settings.park)
    if args.check:
        stale = stale_files(park, args.out)
        if stale:
            sys.stderr.write(f"dashboards out of date: {', '.join(stale)}; run 'smartpark dashboards build'\n")
            return 1
        print(f"{args.out}: up to date")
        return 0
    paths = write_generated(park, args.out)
    print(f"wrote {len(paths)} dashboards to {args.out}")
    return 0


def _push(args: argparse.Namespace, settings: Settings) -> int:
    from .push import PushError, connect, push

    park = load_park(settings.park)
    api = connect(args.grafana_url, os.environ.get("GRAFANA_TOKEN"), args.timeout)
    try:
        report = asyncio.run(push(api, park, build_all(park)))
    except PushError as exc:
        sys.stderr.write(f"smartpark: dashboards push: {exc}\n")
        return 1
    print(f"pushed {len(report.dashboards)} dashboards; folders created: {len(report.folders_created)}, "
          f"renamed: {len(report.folders_updated)}")
    return 0


def _preview(args: argparse.Namespace, settings: Settings) -> int:
    from .preview import render_previews

    try:
        span = interval_to_ms(args.since)
    except ValueError:
        raise ConfigError(f"--since {args.since!r} is not a duration like 6h, 24h, 7d", key="since") from None
    park = load_park(settings.park)
    end = int(time.time() * 1000)
    if args.until:
        try:
            end = parse_ts(int(args.until) if args.until.isdigit() else args.until)
        except DecodeError as exc:
            raise ConfigError(f"--until {args.until!r}: {exc.detail}", key="until") from None
    tr = TimeRange(end - span, end)

    async def run() -> list[Path]:
        async with InfluxClient(settings.influx(), timeout=60) as client:
            return await render_previews(client, build_all(park), tr, args.out, set(args.dashboard) or None)

    for path in asyncio.run(run()):
        print(path)
    return 0
