"""``smartpark park show | check FILE``: look at the park model, or validate a user's file."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from .config import Settings
from .park import Park, load_park


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("park", help="show or check the park model")
    psub = p.add_subparsers(dest="park_cmd", metavar="ACTION")
    psub.required = True
    show = psub.add_parser("show", help="print the park model as a table")
    show.add_argument("--site", help="only this site")
    show.set_defaults(func=_show)
    check = psub.add_parser("check", help="validate a park file; exit 2 with file:line:key on a mistake")
    check.add_argument("file")
    check.set_defaults(func=_check)


def _show(args: argparse.Namespace, settings: Settings) -> int:
    park = load_park(settings.park)
    Console(width=200).print(park_table(park, args.site))
    return 0


def park_table(park: Park, site: str | None = None) -> Table:
    title = f"{park.park.name} ({park.park.id}) — {len(park)} sensors"
    t = Table(title=title, show_lines=False)
    for col in ("sensor", "name", "unit", "range", "normal", "every", "ll", "l", "h", "hh", "regulatory"):
        t.add_column(col, overflow="fold")
    for ref in park:
        if site and ref.site != site:
            continue
        s = ref.sensor
        lim = {k: f"{v:g}" for k, v in s.limits.items()}
        regs = "; ".join(f"{r.comparator} {r.limit} ({r.averaging})" for r in s.regulatory)
        every = f"{s.interval_s:g}s" + (f"/{s.sample_cycle_s:g}s" if s.sample_cycle_s else "")
        t.add_row(ref.key, s.name_zh or s.name, s.unit, f"{s.range[0]:g}..{s.range[1]:g}",
                  f"{s.normal[0]:g}..{s.normal[1]:g}", every, lim.get("ll", ""), lim.get("l", ""),
                  lim.get("h", ""), lim.get("hh", ""), regs)
    return t


def _check(args: argparse.Namespace, settings: Settings) -> int:
    park = load_park(args.file)
    n_assets = sum(len(s.assets) for s in park.sites)
    print(f"{args.file}: ok — {len(park.sites)} sites, {n_assets} assets, {len(park)} sensors")
    return 0
