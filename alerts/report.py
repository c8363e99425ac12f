"""Alarm-system KPIs (ISA-18.2 / EEMUA 191) of ``smartpark alerts report`` and the console's handover.

The definitions (flood, chattering, stale) and their thresholds are :mod:`smartpark.kpis`, shared with the
dashboards' panels; this module reads the ``alarm`` measurement for them and prints the table.
"""

from __future__ import annotations

from typing import Any

from smartpark.kpis import (
    CHATTER_RAISES,
    CHATTER_WINDOW_MS,
    FLOOD_MORE_THAN,
    FLOOD_WINDOW_MS,
    STALE_AFTER_MS,
    STALE_LOOKBACK_MS,
    summary,
)
from smartpark.schema import ALARM, PRIORITIES

WINDOW_MIN = FLOOD_WINDOW_MS // 60_000


#: every KPI of a period over the rows of :func:`alarm_query` (the name ``alerts report`` has always used)
kpis = summary


def alarm_query(start_ms: int, end_ms: int) -> str:
    """The events the KPIs of ``[start_ms, end_ms]`` need: the period's, and for staleness those of the
    lookback before its end."""
    since = min(start_ms, end_ms - STALE_LOOKBACK_MS)
    return f"SELECT * FROM {ALARM} WHERE time > {since}ms AND time <= {end_ms}ms"


def render(k: dict[str, Any]) -> None:
    """A rich table for people; ``--json`` for scripts."""
    from rich.console import Console
    from rich.table import Table

    c = Console()
    t = Table(title="Alarm-system KPIs (ISA-18.2 / EEMUA 191)")
    t.add_column("KPI")
    t.add_column("value", justify="right")
    t.add_column("target")
    t.add_row("alarms raised", str(k["alarms"]), "")
    t.add_row(f"alarms per {WINDOW_MIN} min, average", f"{k['per_10min_avg']:g}", "≤ 1 (very likely acceptable)")
    t.add_row(f"alarms per {WINDOW_MIN} min at one site, peak", str(k["per_10min_peak"]), f"≤ {FLOOD_MORE_THAN}")
    t.add_row(f"{WINDOW_MIN}-min periods in flood (> {FLOOD_MORE_THAN} alarms at one site)",
              str(k["flood_windows"]), "0")
    t.add_row("time in flood", f"{k['flood_time_pct']:g} %", "< 1 %")
    t.add_row(f"chattering alarms (≥ {CHATTER_RAISES} raises in {CHATTER_WINDOW_MS // 1000} s)",
              str(len(k["chattering"])), "0")
    t.add_row(f"stale alarms (standing > {STALE_AFTER_MS // 3_600_000} h)", str(len(k["stale"])), "< 5")
    prio = " / ".join(str(k["priority"].get(p, 0)) for p in PRIORITIES)
    t.add_row("priority high / medium / low", prio, "≈ 5 / 15 / 80 %")
    c.print(t)
    top = Table(title="10 most frequent alarms")
    top.add_column("alarm")
    top.add_column("count", justify="right")
    for aid, n in k["top10"]:
        top.add_row(aid, str(n))
    c.print(top)
    for name in ("chattering", "stale"):
        if k[name]:
            c.print(f"{name}: " + ", ".join(k[name]))
