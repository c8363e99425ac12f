"""The compliance figures of CONTRACT §11, computed from the raw readings of the day (or month).

Readings, hours and days are valid by the rules of :mod:`smartpark.averages`, the ones the alert engine
judges and the dashboards draw: a reading counts unless its quality is ``bad`` or it carries an HJ 212 flag
other than ``N`` and ``S``; an hour needs ``min_valid`` (75 %) of its expected readings; a day 20 valid hours;
a day's mean is the mean of its valid hours' means. A month is valid with at least 27 valid days (25 in
February, as GB 3095 asks of a monthly mean), or ``min_valid`` of its days; its mean is the mean of the valid
days' means.

A limit is compared as its entry's ``comparator`` says: ``max`` exceeded when the mean is above it, ``min`` when
below, ``range`` when outside. Five-minute entries (GB 18484's furnace temperature) give the day's excursions
as the engine raises them: each run of rolling five-minute means (:func:`rolling_means`) that breaks the limit,
with its first mean.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from smartpark.averages import (
    FIVE_MIN_MS,
    HOUR_MS,
    day_need,
    entry,
    five_min_need,
    hour_need,
    is_valid,
    month_need,
    violates,
)
from smartpark.influx import InfluxClient
from smartpark.lineproto import quote_ident, quote_literal
from smartpark.park import Park, Regulatory, SensorRef
from smartpark.schema import ALARM, READING


def exceeds(reg: Regulatory | None, mean: float | None) -> bool:
    """Whether a period's mean breaks its limit: the engine's own comparison (``smartpark.averages.violates``)."""
    return reg is not None and mean is not None and violates(reg, mean)[0]


def limit_text(reg: Regulatory | None) -> str:
    if reg is None:
        return ""
    if isinstance(reg.limit, tuple):
        return f"{reg.limit[0]:g}..{reg.limit[1]:g}"
    return f"{reg.limit:g}"


def local_midnight(day: date, tz: ZoneInfo) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=tz).timestamp() * 1000)


@dataclass(slots=True)
class Period:
    """One row of the report: an hour, a day or a month."""

    start: int  # epoch ms
    period: str  # 1h | 24h | month
    mean: float | None
    valid_count: int
    valid: bool
    limit: str
    exceeded: bool
    readings: int = 0  # all readings, valid or not (hours)


@dataclass(slots=True)
class SensorReport:
    ref: SensorRef
    hours: list[Period]  # the day's 24 (or 23/25 where the zone has DST), or a month's days
    total: Period  # the day (24h) or the month
    capture: float  # valid readings / expected readings, 0..1
    excursions: list[tuple[int, float]] = field(default_factory=list)  # five-minute (start, mean) breaking the limit
    trend: list[tuple[int, float]] = field(default_factory=list)  # (ts, value) of the valid readings, for plots

    @property
    def exceedance_hours(self) -> list[Period]:
        return [h for h in self.hours if h.exceeded]


@dataclass(slots=True)
class SiteReport:
    site: str
    name: str
    name_zh: str | None
    sensors: list[SensorReport]
    alarms: list[dict[str, Any]]


@dataclass(slots=True)
class Report:
    kind: str  # daily | monthly
    label: str  # 2026-11-20 | 2026-11
    start: int
    end: int
    tz: ZoneInfo
    park_name: str
    sites: list[SiteReport]

    def iso(self, ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, self.tz).isoformat()


def regulated(park: Park, site: str | None) -> dict[str, list[SensorRef]]:
    out: dict[str, list[SensorRef]] = {}
    for s in park.sites:
        if site is None or s.id == site:
            out[s.id] = [r for r in park if r.site == s.id and r.sensor.regulatory]
    return out


async def _raw(db: InfluxClient, site: str, refs: list[SensorRef], start: int, end: int
               ) -> dict[tuple[str, str], list[tuple[int, float, bool]]]:
    """(asset, sensor) -> [(ts, value, valid)] of the site's regulated sensors in [start, end)."""
    out: dict[tuple[str, str], list[tuple[int, float, bool]]] = {(r.asset, r.sensor.id): [] for r in refs}
    if not refs:
        return out
    sensors = " OR ".join(f'"sensor" = {quote_literal(s)}' for s in sorted({r.sensor.id for r in refs}))
    q = (f'SELECT * FROM {quote_ident(READING)} WHERE "site" = {quote_literal(site)} AND ({sensors}) '
         f'AND time >= {start}ms AND time < {end}ms GROUP BY "asset", "sensor"')
    for result in await db.query(q):
        for series in result.get("series", []):
            tags = series.get("tags", {})
            key = (tags.get("asset"), tags.get("sensor"))
            if key not in out:
                continue
            cols = series["columns"]
            t, v = cols.index("time"), cols.index("value")
            qi = cols.index("quality") if "quality" in cols else None
            fi = cols.index("flag") if "flag" in cols else None
            rows = out[key]
            for row in series["values"]:
                if row[v] is None:
                    continue
                rows.append((row[t], float(row[v]), is_valid(row[qi] if qi is not None else None,
                                                             row[fi] if fi is not None else None)))
    return out


async def _alarms(db: InfluxClient, site: str, start: int, end: int) -> list[dict[str, Any]]:
    q = (f'SELECT * FROM {quote_ident(ALARM)} WHERE "site" = {quote_literal(site)} AND time >= {start}ms '
         f"AND time < {end}ms")
    try:
        return await db.rows(q)
    except ValueError:
        return []


def rolling_means(readings: list[tuple[int, float, bool]], need: int) -> list[tuple[int, float]]:
    """The rolling five-minute means the alert engine judges: at each valid reading, the mean of the valid
    readings in the five minutes up to it, where they are at least ``need``."""
    window: deque[tuple[int, float]] = deque()
    total = 0.0
    out = []
    for ts, value, valid in readings:
        if not valid:
            continue
        window.append((ts, value))
        total += value
        while window[0][0] <= ts - FIVE_MIN_MS:
            total -= window.popleft()[1]
        if len(window) == 1:
            total = value  # no drift accumulates past an empty window
        if len(window) >= need:
            out.append((ts, total / len(window)))
    return out


def excursions_of(reg: Regulatory | None, means: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """The first mean of each run of means that breaks the limit: one excursion each, as the engine counts."""
    out = []
    inside = False
    for ts, mean in means:
        breaks = exceeds(reg, mean)
        if breaks and not inside:
            out.append((ts, mean))
        inside = breaks
    return out


def sensor_day(ref: SensorRef, readings: list[tuple[int, float, bool]], start: int, end: int) -> SensorReport:
    hour_reg, day_reg, five_reg = entry(ref.sensor, "1h"), entry(ref.sensor, "24h"), entry(ref.sensor, "5min")
    expected = 3600 / ref.sensor.interval_s
    need = hour_need(ref.sensor)
    buckets: dict[int, list[float]] = {}
    counts: dict[int, int] = {}
    for ts, value, valid in readings:
        h = start + (ts - start) // HOUR_MS * HOUR_MS
        counts[h] = counts.get(h, 0) + 1
        if valid:
            buckets.setdefault(h, []).append(value)
    hours: list[Period] = []
    for h in range(start, end, HOUR_MS):
        vals = buckets.get(h, [])
        mean = sum(vals) / len(vals) if vals else None
        valid = len(vals) >= need
        hours.append(Period(h, "1h", mean, len(vals), valid, limit_text(hour_reg),
                            valid and exceeds(hour_reg, mean), counts.get(h, 0)))
    valid_hours = [h for h in hours if h.valid and h.mean is not None]
    need_hours = day_need(ref.sensor, len(hours))
    day_ok = len(valid_hours) >= need_hours
    day_mean = sum(h.mean for h in valid_hours) / len(valid_hours) if day_ok else None  # type: ignore[misc]  # valid hours have a mean
    total = Period(start, "24h", day_mean, len(valid_hours), day_ok, limit_text(day_reg), exceeds(day_reg, day_mean))
    n_valid = sum(len(v) for v in buckets.values())
    excursions = excursions_of(five_reg, rolling_means(readings, five_min_need(ref.sensor))) if five_reg else []
    trend = [(ts, v) for ts, v, ok in readings if ok]
    return SensorReport(ref, hours, total, n_valid / (expected * len(hours)) if hours else 0.0, excursions, trend)


async def daily_report(db: InfluxClient, park: Park, day: date, site: str | None = None) -> Report:
    tz = ZoneInfo(park.park.timezone)
    start, end = local_midnight(day, tz), local_midnight(day + timedelta(days=1), tz)
    sites = []
    for site_id, refs in regulated(park, site).items():
        raw = await _raw(db, site_id, refs, start, end)
        s = park.site(site_id)
        assert s is not None
        sensors = [sensor_day(r, sorted(raw[r.asset, r.sensor.id]), start, end) for r in refs]
        sites.append(SiteReport(site_id, s.name, s.name_zh, sensors, await _alarms(db, site_id, start, end)))
    return Report("daily", day.isoformat(), start, end, tz, park.park.name, sites)


async def monthly_report(db: InfluxClient, park: Park, year: int, month: int, site: str | None = None) -> Report:
    """The month's daily means (one raw day at a time), valid days, exceedance days, the monthly mean."""
    tz = ZoneInfo(park.park.timezone)
    first = date(year, month, 1)
    after = date(year + (month == 12), month % 12 + 1, 1)
    days = [first + timedelta(days=i) for i in range((after - first).days)]
    start, end = local_midnight(first, tz), local_midnight(after, tz)
    sites = []
    for site_id, refs in regulated(park, site).items():
        per_sensor: dict[str, list[SensorReport]] = {r.key: [] for r in refs}
        alarms: list[dict[str, Any]] = []
        for d in days:
            a, b = local_midnight(d, tz), local_midnight(d + timedelta(days=1), tz)
            raw = await _raw(db, site_id, refs, a, b)
            for r in refs:
                rep = sensor_day(r, sorted(raw[r.asset, r.sensor.id]), a, b)
                rep.trend = []
                per_sensor[r.key].append(rep)
        alarms = await _alarms(db, site_id, start, end)
        sensors = []
        for r in refs:
            reps = per_sensor[r.key]
            daily = [rep.total for rep in reps]
            valid_days = [p for p in daily if p.valid and p.mean is not None]
            month_reg = entry(r.sensor, "monthly")
            ok = len(valid_days) >= month_need(r.sensor, month, len(days))
            mean = sum(p.mean for p in valid_days) / len(valid_days) if ok else None  # type: ignore[misc]  # valid days have a mean
            total = Period(start, "month", mean, len(valid_days), ok, limit_text(month_reg), exceeds(month_reg, mean))
            capture = sum(rep.capture for rep in reps) / len(reps)
            excursions = [e for rep in reps for e in rep.excursions]
            sensors.append(SensorReport(r, daily, total, capture, excursions,
                                        [(p.start, p.mean) for p in daily if p.mean is not None]))
        s = park.site(site_id)
        assert s is not None
        sites.append(SiteReport(site_id, s.name, s.name_zh, sensors, alarms))
    return Report("monthly", f"{year:04d}-{month:02d}", start, end, tz, park.park.name, sites)
