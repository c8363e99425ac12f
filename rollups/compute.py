"""The rollups of CONTRACT §10: ``reading_5m``, ``reading_1h``, ``reading_1d`` recomputed for touched periods.

Five-minute points come either from the runner, which aggregated them from the journal's readings
(rollups/windows.py), or from ``raw`` by InfluxQL (``sum`` / ``count``, ``min``, ``max`` of ``value``;
``good`` is ``count(value) - count(quality)``, since ``quality`` is written only when it is not good). Hours
and days are combined from the five-minute points of the same recompute or already stored: ``min``,
``max``, ``count`` and ``good`` combine exactly, and ``mean`` as the count-weighted mean, which equals the
InfluxQL mean over ``raw`` up to float rounding (relative 1e-12) while reading 1/12 (hours) and 1/288
(days) of the points. Days begin at midnight in the park's time zone. Each day touched is one unit of work:
its five-minute periods, then its hours, then the day, so that a rebuild of a year holds one day in memory.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from smartpark.averages import HOUR_MS
from smartpark.influx import InfluxClient, Retention
from smartpark.lineproto import encode_line
from smartpark.schema import READING, ROLLUPS

from .journal import PERIOD_MS

PERIODS = ROLLUPS  # period -> its measurement
RAW_MEASUREMENT = READING
WRITE_BATCH = 5000

Key = tuple[str, str, str]  # site, asset, sensor


@dataclass(slots=True)
class Agg:
    """One rollup point's fields (not frozen: a day of 24 sensors makes 7,000 of them per recompute, and a
    frozen dataclass's ``__init__`` goes through ``object.__setattr__`` for every field)."""

    mean: float
    min: float
    max: float
    count: int
    good: int

    @staticmethod
    def combine(parts: Iterable[Agg]) -> Agg:
        items = [p for p in parts if p.count]
        count = good = 0
        lo, hi = items[0].min, items[0].max
        for p in items:
            count += p.count
            good += p.good
            if p.min < lo:
                lo = p.min
            if p.max > hi:
                hi = p.max
        return Agg(sum([p.mean * p.count for p in items]) / count, lo, hi, count, good)

    def fields(self) -> dict[str, float | int]:
        return {"mean": float(self.mean), "min": float(self.min), "max": float(self.max),
                "count": self.count, "good": self.good}


def day_start(ms: int, tz: ZoneInfo) -> int:
    """Epoch ms of the local midnight that begins the day holding ``ms``."""
    local = datetime.fromtimestamp(ms / 1000, tz)
    return int(datetime(local.year, local.month, local.day, tzinfo=tz).timestamp() * 1000)


def next_day(start_ms: int, tz: ZoneInfo) -> int:
    local = datetime.fromtimestamp(start_ms / 1000, tz).date() + timedelta(days=1)
    return int(datetime(local.year, local.month, local.day, tzinfo=tz).timestamp() * 1000)


def ranges(periods: Iterable[int]) -> Iterator[tuple[int, int]]:
    """Consecutive five-minute period numbers as ``[start_ms, end_ms)`` ranges."""
    for _, run in itertools.groupby(enumerate(sorted(set(periods))), key=lambda t: t[1] - t[0]):
        block = [p for _, p in run]
        yield block[0] * PERIOD_MS, (block[-1] + 1) * PERIOD_MS


class Rollups:
    """``await Rollups(db, retention, tz).recompute(periods)``: rewrite every rollup point those periods touch."""

    def __init__(self, db: InfluxClient, retention: Retention, tz: str, *, concurrency: int = 2) -> None:
        self.db = db
        self.concurrency = max(1, concurrency)
        self.retention = retention
        self.tz = ZoneInfo(tz)
        self.points_written = 0
        self.raw_rows = 0  # five-minute groups read from raw (each holds many readings)

    async def recompute(self, periods: Iterable[int], fives: dict[tuple[Key, int], Agg] | None = None,
                        computed: Iterable[int] = ()) -> int:
        """Recompute the periods' five-minute points, their hours and their days; returns points written.

        ``computed`` periods are not read from raw: their five-minute points are those of ``fives`` (the
        runner aggregated them from the journal); the hours and days are combined from them the same way. A
        period in both is read from raw (a late reading came after it was computed)."""
        periods = set(periods)
        done = set(computed) - periods
        by_day: dict[int, set[int]] = {}
        day_of: dict[int, int] = {}  # period -> its day's start: one zone lookup per period, not per point
        for p in periods | done:
            day = day_of[p] = day_start(p * PERIOD_MS, self.tz)
            by_day.setdefault(day, set()).add(p)
        given: dict[int, dict[tuple[Key, int], Agg]] = {}
        for (key, ts), agg in (fives or {}).items():
            p = ts // PERIOD_MS
            if p in done:
                given.setdefault(day_of[p], {})[key, ts] = agg
        return await self._days(sorted(by_day.items()), given, done)

    async def rebuild(self, since_ms: int, until_ms: int) -> int:
        """Every rollup point of ``[since, until)`` (widened to whole five-minute periods) from ``raw``."""
        first, last = since_ms // PERIOD_MS, -(-until_ms // PERIOD_MS)
        days: list[tuple[int, set[int]]] = []
        day = day_start(first * PERIOD_MS, self.tz)
        while day < last * PERIOD_MS:
            end = next_day(day, self.tz)
            days.append((day, set(range(max(first, day // PERIOD_MS), min(last, end // PERIOD_MS)))))
            day = end
        return await self._days(days, {}, set())

    async def _days(self, days: list[tuple[int, set[int]]], given: dict[int, dict[tuple[Key, int], Agg]],
                    computed: set[int]) -> int:
        """Days are independent: ``concurrency`` of them at a time, so that InfluxDB aggregates on as many
        cores (one query runs on one)."""
        slots = asyncio.Semaphore(self.concurrency)

        async def one(start: int, periods: set[int]) -> int:
            async with slots:
                return await self._day(start, periods, given.get(start, {}), periods - computed)

        return sum(await asyncio.gather(*(one(d, p) for d, p in days)))

    async def _day(self, start: int, periods: set[int], given: dict[tuple[Key, int], Agg], raw: set[int]) -> int:
        end = next_day(start, self.tz)
        fives: dict[tuple[Key, int], Agg] = dict(given)
        if raw:
            statements = [self._raw_statement(a, b) for a, b in ranges(raw)]
            rows = 0
            for result in await self.db.query(";".join(statements)):
                for key, ts, agg in _series_rows(result, raw=True):
                    fives[key, ts] = agg
                    rows += 1
            self.raw_rows += rows
        fresh_fives = dict(fives)
        hours = {p * PERIOD_MS // HOUR_MS * HOUR_MS for p in periods}
        partial = [h for h in sorted(hours) if any(q not in periods for q in range(h // PERIOD_MS,
                                                                                   (h + HOUR_MS) // PERIOD_MS))]
        for h0, h1 in _merge(partial, HOUR_MS):
            for key, ts, agg in await self._stored("5m", h0, h1):
                fives.setdefault((key, ts), agg)
        hour_aggs = _group(fives, HOUR_MS, hours)
        day_hours = dict(hour_aggs)
        if any(h not in hours for h in range(start, end, HOUR_MS)):
            for key, ts, agg in await self._stored("1h", start, end):
                day_hours.setdefault((key, ts), agg)
        day_aggs: dict[tuple[Key, int], Agg] = {}
        per_key: dict[Key, list[Agg]] = {}
        for (key, _), agg in day_hours.items():
            per_key.setdefault(key, []).append(agg)
        for key, parts in per_key.items():
            day_aggs[key, start] = Agg.combine(parts)
        lines = [*_lines(PERIODS["5m"], fresh_fives), *_lines(PERIODS["1h"], hour_aggs),
                 *_lines(PERIODS["1d"], day_aggs)]
        for i in range(0, len(lines), WRITE_BATCH):
            await self.db.write(lines[i:i + WRITE_BATCH], precision="ms", rp=self.retention.rollup)
        self.points_written += len(lines)
        return len(lines)

    def _raw_statement(self, start: int, end: int) -> str:
        # sum rather than mean: 1.45x faster in InfluxDB 1.x (docs/benchmarks/rollups.md), and sum / count is
        # the mean InfluxQL computes, up to the last bit
        return (f"SELECT sum(value), min(value), max(value), count(value), count(quality) "
                f"FROM {self.retention.measurement(RAW_MEASUREMENT)} WHERE time >= {start}ms AND time < {end}ms "
                f'GROUP BY time(5m), "site", "asset", "sensor" fill(none)')

    async def _stored(self, period: str, start: int, end: int) -> Iterator[tuple[Key, int, Agg]]:
        q = (f'SELECT "mean", "min", "max", "count", "good" FROM '
             f"{self.retention.measurement(PERIODS[period], rollup=True)} "
             f'WHERE time >= {start}ms AND time < {end}ms GROUP BY "site", "asset", "sensor"')
        out: list[tuple[Key, int, Agg]] = []
        for result in await self.db.query(q):
            out.extend(_series_rows(result, raw=False))
        return iter(out)


def _series_rows(result: dict[str, object], *, raw: bool) -> Iterator[tuple[Key, int, Agg]]:
    for series in result.get("series", []) or []:  # type: ignore[attr-defined]  # InfluxDB's JSON
        tags = series.get("tags", {})
        key = (tags.get("site", ""), tags.get("asset", ""), tags.get("sensor", ""))
        for row in series["values"]:
            if raw:
                ts, total, lo, hi, count, bad = row
                if not count:
                    continue
                yield key, ts, Agg(total / count, lo, hi, int(count), int(count) - int(bad or 0))
            else:
                ts, mean, lo, hi, count, good = row
                if count:
                    yield key, ts, Agg(mean, lo, hi, int(count), int(good or 0))


def _group(fives: dict[tuple[Key, int], Agg], size_ms: int, starts: set[int]) -> dict[tuple[Key, int], Agg]:
    groups: dict[tuple[Key, int], list[Agg]] = {}
    for (key, ts), agg in fives.items():
        start = ts // size_ms * size_ms
        if start in starts:
            groups.setdefault((key, start), []).append(agg)
    return {k: Agg.combine(v) for k, v in groups.items()}


def _merge(starts: list[int], size: int) -> Iterator[tuple[int, int]]:
    for _, run in itertools.groupby(enumerate(starts), key=lambda t: t[1] - t[0] * size):
        block = [s for _, s in run]
        yield block[0], block[-1] + size


def _lines(measurement: str, aggs: dict[tuple[Key, int], Agg]) -> Iterator[str]:
    """The points, with each series' tag prefix built once (ids need no escaping, CONTRACT §1, but the
    prefix goes through :func:`encode_line` all the same); floats as ``repr`` keeps them exact."""
    prefixes: dict[Key, str] = {}
    for (key, ts), agg in aggs.items():
        prefix = prefixes.get(key)
        if prefix is None:
            site, asset, sensor = key
            prefix = prefixes[key] = encode_line(measurement, {"site": site, "asset": asset, "sensor": sensor},
                                                 {"count": 0}).rsplit(" ", 1)[0]
        yield (f"{prefix} count={agg.count}i,good={agg.good}i,max={float(agg.max)!r},mean={float(agg.mean)!r},"
               f"min={float(agg.min)!r} {ts}")
