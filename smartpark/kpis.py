"""The alarm-system KPIs of ISA-18.2 and EEMUA 191: one definition each of flood, chattering and stale, imported
by ``alerts report`` and the console (the Python over alarm events) and by the dashboards (the InfluxQL their
panels run). Both forms are built from the thresholds below, so a change of one moves all three readers.

Only ``raised`` events are annunciated alarms; an alarm is one ``site/asset/sensor/rule``; the operator position
is the site (one control room per plant of the park).

- **Flood** (ISA-18.2 table 5, EEMUA 191 §5): a 10-minute period in which *more than 10* alarms were raised at
  one site. The periods are the clock's (aligned to the epoch, so to every whole-hour time zone), as InfluxDB's
  ``GROUP BY time(10m)`` makes them: the standard's metric is the share of 10-minute periods in flood.
- **Chattering** (ISA-18.2 TR5, EEMUA 191): an alarm raised *3 or more times within 1 minute*, on a sliding
  window: any three consecutive raises of it no more than 60 s apart, first to last.
- **Stale** (EEMUA 191): an alarm standing for *more than 24 hours*: its latest event leaves it in alarm
  (``UNACK`` or ``ACKED``; a returned alarm, shelved or out of service is not standing) and its latest raise is
  more than 24 h before the end of the period. Stale is a state at the end, not a count over the period: it is
  judged over the events of the :data:`STALE_LOOKBACK_MS` before the end, whatever the period's length.

The notifications' flood gate (``alerts/notify/routing.py``) takes the same thresholds but watches the last
10 minutes as alarms arrive, since it acts at the moment the eleventh comes; the KPI counts clock periods.

Times are epoch milliseconds; a period is ``start <= time <= end`` (Grafana's ``$timeFilter``). InfluxDB keeps
event times to the nanosecond and the Python sees them to the millisecond: the two can differ only for three
raises 60 s apart to within a millisecond.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .lineproto import quote_literal
from .schema import ALARM as MEASUREMENT
from .schema import RAISED, STANDING_STATES

ALARM_TAGS = ("site", "asset", "sensor", "rule")  # an alarm's identity
POSITION_TAG = "site"  # the operator position whose load a flood measures

FLOOD_WINDOW_MS = 600_000
FLOOD_MORE_THAN = 10  # alarms raised at one site in one window
CHATTER_WINDOW_MS = 60_000
CHATTER_RAISES = 3  # raises of one alarm within the window
STALE_AFTER_MS = 86_400_000
STALE_LOOKBACK_MS = 30 * 86_400_000  # how far back the events that decide staleness are read

Row = Mapping[str, Any]


def alarm_key(row: Row) -> str:
    """``site/asset/sensor/rule`` of an ``alarm`` point."""
    return "/".join(str(row[t]) for t in ALARM_TAGS)


def _raised(rows: Iterable[Row], start_ms: int, end_ms: int) -> list[Row]:
    return sorted((r for r in rows if r.get("event") == RAISED and start_ms <= r["time"] <= end_ms),
                  key=lambda r: r["time"])


# ---------------------------------------------------------------------------------------------- Python
def window_counts(rows: Iterable[Row], start_ms: int, end_ms: int) -> Counter[tuple[str, int]]:
    """Alarms raised per (site, start of its 10-minute period)."""
    return Counter((str(r[POSITION_TAG]), r["time"] // FLOOD_WINDOW_MS * FLOOD_WINDOW_MS)
                   for r in _raised(rows, start_ms, end_ms))


def _in_flood(counts: Counter[tuple[str, int]]) -> list[tuple[str, int]]:
    return sorted((k for k, n in counts.items() if n > FLOOD_MORE_THAN), key=lambda k: (k[1], k[0]))


def _flood_pct(flooded: Iterable[tuple[str, int]], start_ms: int, end_ms: int) -> float:
    periods = max(1, (max(end_ms, start_ms + 1) - 1) // FLOOD_WINDOW_MS - start_ms // FLOOD_WINDOW_MS + 1)
    return round(100.0 * len({t for _, t in flooded}) / periods, 2)


def flood_windows(rows: Iterable[Row], start_ms: int, end_ms: int) -> list[tuple[str, int]]:
    """The (site, period start) of every 10-minute period in flood, in time order."""
    return _in_flood(window_counts(rows, start_ms, end_ms))


def flood_time_pct(rows: Iterable[Row], start_ms: int, end_ms: int) -> float:
    """Share of the period's 10-minute periods in which at least one site was in flood, in percent."""
    return _flood_pct(flood_windows(rows, start_ms, end_ms), start_ms, end_ms)


def chattering(rows: Iterable[Row], start_ms: int, end_ms: int) -> list[str]:
    """Ids of the alarms raised :data:`CHATTER_RAISES` times or more within :data:`CHATTER_WINDOW_MS`."""
    times: dict[str, list[int]] = defaultdict(list)
    for r in _raised(rows, start_ms, end_ms):
        times[alarm_key(r)].append(r["time"])
    n = CHATTER_RAISES - 1
    return sorted(a for a, ts in times.items()
                  if any(ts[i + n] - ts[i] <= CHATTER_WINDOW_MS for i in range(len(ts) - n)))


def is_stale(state: str, raised_ms: int | None, now_ms: int) -> bool:
    """One alarm: standing, and raised more than :data:`STALE_AFTER_MS` before ``now_ms``."""
    return state in STANDING_STATES and raised_ms is not None and now_ms - raised_ms > STALE_AFTER_MS


def stale(rows: Iterable[Row], end_ms: int) -> list[str]:
    """Ids of the alarms standing at ``end_ms`` for more than 24 h, judged from the events of the
    :data:`STALE_LOOKBACK_MS` up to ``end_ms``."""
    since = end_ms - STALE_LOOKBACK_MS
    last_state: dict[str, str] = {}
    last_raise: dict[str, int] = {}
    for r in sorted((r for r in rows if since < r["time"] <= end_ms), key=lambda r: r["time"]):
        aid = alarm_key(r)
        last_state[aid] = str(r.get("state"))
        if r.get("event") == RAISED:
            last_raise[aid] = r["time"]
    return sorted(a for a, s in last_state.items() if is_stale(s, last_raise.get(a), end_ms))


def summary(rows: Sequence[Row], start_ms: int, end_ms: int) -> dict[str, Any]:
    """Every KPI of the period: what ``alerts report --json``, the console's handover and ``/api/kpis`` give.

    ``rows`` are points of the ``alarm`` measurement (``time`` in ms, tags and fields); those before
    ``start_ms`` count only for staleness (read :data:`STALE_LOOKBACK_MS` back to have it complete)."""
    raised = _raised(rows, start_ms, end_ms)
    span = max(end_ms - start_ms, FLOOD_WINDOW_MS)
    in_period = [r for r in rows if start_ms <= r["time"] <= end_ms]
    counts = window_counts(raised, start_ms, end_ms)
    flooded = _in_flood(counts)
    return {
        "since_ms": start_ms, "until_ms": end_ms, "alarms": len(raised),
        "per_10min_avg": round(len(raised) * FLOOD_WINDOW_MS / span, 3),
        "per_10min_peak": max(counts.values(), default=0),
        "flood_windows": len(flooded),
        "flood_time_pct": _flood_pct(flooded, start_ms, end_ms),
        "top10": Counter(alarm_key(r) for r in raised).most_common(10),
        "chattering": chattering(raised, start_ms, end_ms),
        "stale": stale(rows, end_ms),
        "priority": dict(Counter(r.get("priority", "?") for r in raised)),
        "operator_actions": sum(1 for r in in_period if r.get("operator")),
    }


# ---------------------------------------------------------------------------------------------- InfluxQL
def _group(tags: Sequence[str]) -> str:
    return ", ".join(f'"{t}"' for t in tags)


def _where(*conds: str) -> str:
    return " AND ".join(c for c in conds if c)


def _raised_where(where: str, time_filter: str) -> str:
    return _where(where, f'"event" = {quote_literal(RAISED)}', time_filter)


def window_counts_query(where: str = "", time_filter: str = "$timeFilter") -> str:
    """Alarms raised per site and 10-minute period (``n``): the subquery of the flood and peak panels."""
    return (f'SELECT count("event") AS "n" FROM "{MEASUREMENT}" WHERE {_raised_where(where, time_filter)} '
            f'GROUP BY time({FLOOD_WINDOW_MS}ms), "{POSITION_TAG}"')


def flood_query(where: str = "", time_filter: str = "$timeFilter") -> str:
    """Number of (site, 10-minute period) in flood: ``len(flood_windows(...))``. ``where``: extra conditions
    on the tags (template variables); ``time_filter``: Grafana's macro or ``time >= ... AND time <= ...``."""
    return f'SELECT count("n") FROM ({window_counts_query(where, time_filter)}) WHERE "n" > {FLOOD_MORE_THAN}'


def peak_query(where: str = "", time_filter: str = "$timeFilter") -> str:
    """Most alarms raised at one site in one 10-minute period: ``summary(...)["per_10min_peak"]``."""
    return f'SELECT max("n") FROM ({window_counts_query(where, time_filter)})'


def chattering_query(where: str = "", time_filter: str = "$timeFilter") -> str:
    """Number of chattering alarms: ``len(chattering(...))``.

    Per alarm, ``elapsed`` gives the time between consecutive raises; the moving average of
    ``CHATTER_RAISES - 1`` of them, times that count, is the span of that many + 1 raises; an alarm chatters
    when its shortest such span is within the window. The first subquery holds every alarm raised in the range,
    so that a count of zero is told from a range without alarms."""
    n = CHATTER_RAISES - 1
    group = _group(ALARM_TAGS)
    gaps = (f'SELECT elapsed("event", 1ns) AS "gap" FROM "{MEASUREMENT}" WHERE {_raised_where(where, time_filter)} '
            f"GROUP BY {group}")
    spans = f'SELECT moving_average("gap", {n}) AS "mean_gap" FROM ({gaps}) GROUP BY {group}'
    # every alarm raised in the range has a row; one raised fewer than CHATTER_RAISES times has no span (10^18 ns)
    none = (f'SELECT count("event") * 0 + 1000000000000000000.0 AS "mean_gap" FROM "{MEASUREMENT}" '
            f"WHERE {_raised_where(where, time_filter)} GROUP BY {group}")
    shortest = f'SELECT min("mean_gap") AS "mean_gap" FROM ({none}), ({spans}) GROUP BY {group}'
    limit_ns = CHATTER_WINDOW_MS * 1_000_000 / n
    return f'SELECT count("mean_gap") FROM ({shortest}) WHERE "mean_gap" <= {limit_ns!r}'


def stale_query(where: str = "", until: str = "${__to}ms") -> str:
    """Number of stale alarms at ``until`` (an InfluxQL time: Grafana's ``${__to}ms``, or ``<epoch>ms``):
    ``len(stale(...))``, over the :data:`STALE_LOOKBACK_MS` before it.

    Three subqueries per alarm, merged: its latest state (with zeros that give the counts below their type),
    its raises, and its raises of the last 24 h; stale is standing, raised, and not raised lately."""
    group = _group(ALARM_TAGS)
    lookback = f"time > {until} - {STALE_LOOKBACK_MS}ms AND time <= {until}"
    recent = f"time >= {until} - {STALE_AFTER_MS}ms AND time <= {until}"
    raised = f'"event" = {quote_literal(RAISED)}'
    latest = (f'SELECT last("state") AS "state", count("event") * 0 AS "raised", count("event") * 0 AS "recent" '
              f'FROM "{MEASUREMENT}" WHERE {_where(where, lookback)} GROUP BY {group}')
    raises = (f'SELECT count("event") AS "raised" FROM "{MEASUREMENT}" WHERE {_where(where, raised, lookback)} '
              f"GROUP BY {group}")
    lately = (f'SELECT count("event") AS "recent" FROM "{MEASUREMENT}" WHERE {_where(where, raised, recent)} '
              f"GROUP BY {group}")
    merged = (f'SELECT last("state") AS "state", max("raised") AS "raised", max("recent") AS "recent" '
              f"FROM ({latest}), ({raises}), ({lately}) GROUP BY {group}")
    standing = " OR ".join(f'"state" = {quote_literal(s)}' for s in STANDING_STATES)
    return f'SELECT count("state") FROM ({merged}) WHERE "raised" > 0 AND "recent" = 0 AND ({standing})'


__all__ = [
    "ALARM_TAGS",
    "CHATTER_RAISES",
    "CHATTER_WINDOW_MS",
    "FLOOD_MORE_THAN",
    "FLOOD_WINDOW_MS",
    "POSITION_TAG",
    "RAISED",
    "STALE_AFTER_MS",
    "STALE_LOOKBACK_MS",
    "STANDING_STATES",
    "alarm_key",
    "chattering",
    "chattering_query",
    "flood_query",
    "flood_time_pct",
    "flood_windows",
    "is_stale",
    "peak_query",
    "stale",
    "stale_query",
    "summary",
    "window_counts",
    "window_counts_query",
]
