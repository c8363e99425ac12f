"""Alarm-system KPIs (ISA-18.2 / EEMUA 191) computed from the ``alarm`` measurement.

Only ``raised`` events count as alarms. Flood: more than 10 alarms at one site within a 10-minute
window (sliding, per alarm); the time in flood is the union of those windows over the period.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from smartpark.schema import PRIORITIES, RAISED, STANDING_STATES

TEN_MIN = 600_000
DAY = 86_400_000


def kpis(rows: list[dict[str, Any]], start_ms: int, end_ms: int) -> dict[str, Any]:
    """``rows``: points of the ``alarm`` measurement (``time`` in ms, tags and fields)."""
    rows = sorted(rows, key=lambda r: r["time"])
    raised = [r for r in rows if r.get("event") == RAISED]
    span = max(end_ms - start_ms, TEN_MIN)
    buckets = Counter((r["time"] - start_ms) // TEN_MIN for r in raised)
    ids = [f"{r['site']}/{r['asset']}/{r['sensor']}/{r['rule']}" for r in raised]
    # flood intervals per site: [t, t + 10 min) for every alarm that makes the window count exceed 10
    flood: list[tuple[int, int]] = []
    by_site: dict[str, list[int]] = defaultdict(list)
    for r in raised:
        by_site[r["site"]].append(r["time"])
    for ts in by_site.values():
        j = 0
        for i, t in enumerate(ts):
            while ts[j] <= t - TEN_MIN:
                j += 1
            if i - j + 1 > 10:
                flood.append((t, min(t + TEN_MIN, end_ms)))
    flood.sort()
    covered, cur_s, cur_e = 0, None, None
    for s, e in flood:
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                covered += cur_e - cur_s  # type: ignore[operator]
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        covered += cur_e - cur_s  # type: ignore[operator]
    # chattering: 3 or more raises of one alarm within 1 minute
    times: dict[str, list[int]] = defaultdict(list)
    for aid, r in zip(ids, raised, strict=True):
        times[aid].append(r["time"])
    chattering = sorted(a for a, ts in times.items()
                        if any(ts[i + 2] - ts[i] <= 60_000 for i in range(len(ts) - 2)))
    # stale: the latest event of the alarm leaves it active, and it was raised more than 24 h before the end
    last: dict[str, dict[str, Any]] = {}
    last_raise: dict[str, int] = {}
    for r in rows:
        aid = f"{r['site']}/{r['asset']}/{r['sensor']}/{r['rule']}"
        last[aid] = r
        if r.get("event") == RAISED:
            last_raise[aid] = r["time"]
    stale = sorted(a for a, r in last.items() if r.get("state") in STANDING_STATES
                   and a in last_raise and end_ms - last_raise[a] > DAY)
    return {
        "since_ms": start_ms, "until_ms": end_ms, "alarms": len(raised),
        "per_10min_avg": round(len(raised) * TEN_MIN / span, 3),
        "per_10min_peak": max(buckets.values(), default=0),
        "flood_time_pct": round(100.0 * covered / span, 2),
        "top10": Counter(ids).most_common(10),
        "chattering": chattering,
        "stale": stale,
        "priority": dict(Counter(r.get("priority", "?") for r in raised)),
        "operator_actions": sum(1 for r in rows if r.get("operator")),
    }


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
    t.add_row("alarms per 10 min, average", f"{k['per_10min_avg']:g}", "≤ 1 (very likely acceptable)")
    t.add_row("alarms per 10 min, peak", str(k["per_10min_peak"]), "≤ 10")
    t.add_row("time in flood", f"{k['flood_time_pct']:g} %", "< 1 %")
    t.add_row("chattering alarms (≥3 in 1 min)", str(len(k["chattering"])), "0")
    t.add_row("stale alarms (active > 24 h)", str(len(k["stale"])), "< 5")
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
