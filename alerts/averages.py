"""The regulatory rules (GB 18484-2020, GB 18918, HJ 75-2017): the limit on each reading, the rolling 5-minute
mean and its excursions per natural day, and the clock-hour, daily and monthly means in the park's time zone.

- ``reg_instant``: the limit on each reading (deadband for clearing, so it cannot chatter).
- ``reg_5min``: rolling 5-minute mean (GB 18484 furnace temperature), judged when at least ``min_valid``
  (default 75 %) of the expected readings are in the window; ``reg_5min_excursions``: more than
  :data:`MAX_EXCURSIONS` raised 5-minute excursions in one natural day (GB 18484-2020 9.4).
- ``reg_1h``: clock-hour mean, valid with ``min_valid`` (default 75 %, HJ 75-2017: 45 of 60 minutes) of the
  expected readings; ``reg_24h``: mean of the valid hourly means of a natural day, valid with at least
  :data:`DAY_VALID_HOURS` valid hours (GB 18484-2020 3.18/3.19); ``reg_monthly``: mean of the valid days'
  means of a calendar month, valid with 27 valid days (25 in February) or ``min_valid`` of its days. A period
  is judged when it ends; the event carries the period end as its time and the validity in its message.

Which readings count and how many a period needs is :mod:`smartpark.averages`, the one definition the compliance
report and the dashboards share. :class:`Averaging` is the part of :class:`alerts.Engine` that judges the
averages; :class:`Buckets` is a sensor's hour/day/month state.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from smartpark.averages import (
    DAY_MS,
    FIVE_MIN_MS,
    HOUR_MS,
    day_need,
    hour_need,
    month_need,
    violates,
)

from . import texts
from .alarm import Alarm, Lifecycle
from .events import AlarmEvent
from .sensor import SensorState

ROLL_MS = {"5min": FIVE_MIN_MS}
BUCKET_AVG = ("1h", "24h", "monthly")
MAX_EXCURSIONS = 5
PERIOD_GRACE_MS = 10_000
OUTAGE_MS = 40 * 24 * HOUR_MS  # after a longer outage the buckets start afresh rather than close empty hours


class Buckets:
    """A sensor's running clock-hour, natural-day and calendar-month sums; the day holds valid hourly means, the
    month valid daily means. Kept in snapshots as the list :meth:`dump` (this order)."""

    __slots__ = ("day_end", "day_n", "day_sum", "hour_end", "hour_n", "hour_sum", "month_days", "month_end",
                 "month_n", "month_sum")

    def __init__(self, hour_end: float, hour_sum: float, hour_n: float, day_end: float, day_sum: float,
                 day_n: float, month_end: float, month_sum: float, month_n: float, month_days: float) -> None:
        self.hour_end, self.hour_sum, self.hour_n = hour_end, hour_sum, hour_n          # readings of the hour
        self.day_end, self.day_sum, self.day_n = day_end, day_sum, day_n                # valid hours of the day
        self.month_end, self.month_sum, self.month_n = month_end, month_sum, month_n    # valid days of the month
        self.month_days = month_days                                                    # days in the month

    def dump(self) -> list[float]:
        return [self.hour_end, self.hour_sum, self.hour_n, self.day_end, self.day_sum, self.day_n, self.month_end,
                self.month_sum, self.month_n, self.month_days]

    @classmethod
    def load(cls, d: list[Any] | None) -> Buckets | None:
        if d is None:
            return None
        b = cls(*d)
        if b.month_days > 31:  # earlier versions summed the month's valid hours: the month starts afresh
            b.month_sum, b.month_n, b.month_days = 0.0, 0, round(b.month_days / 24)
        return b


class Averaging(Lifecycle):
    """The regulatory rules of :class:`alerts.Engine`; periods are clock-aligned in the park's time zone."""

    tz: ZoneInfo
    _sensors: list[SensorState | None]
    _warming: bool  # rebuilding the windows from history: a period that ends is not judged

    def _instant(self, a: Alarm, v: float, ts: int, out: list[AlarmEvent]) -> None:
        reg = a.reg
        assert reg is not None
        on, lim = violates(reg, v)
        a.value = v
        if on:
            a.limit = lim
        off = not violates(reg, v, a.deadband)[0] if a.active else False
        self._eval(a, on, off, ts, out)

    def _rolling(self, s: SensorState, v: float, ts: int, out: list[AlarmEvent]) -> None:
        dq = s.roll_dq
        dq.append((ts, v))
        s.roll_sum += v
        horizon = ts - ROLL_MS["5min"]
        while dq[0][0] <= horizon:
            s.roll_sum -= dq.popleft()[1]
        n = len(dq)
        if n < s.roll_n_need:
            return
        if n == 1:
            s.roll_sum = v  # no drift accumulates past an empty window
        a = s.roll
        assert a is not None and a.reg is not None
        mean = s.roll_sum / n
        on, lim = violates(a.reg, mean)
        a.value = mean
        a.limit = lim
        self._eval(a, on, not on, ts, out, lambda: texts.rolling_mean(n))

    def _excursion(self, a: Alarm, ts: int, out: list[AlarmEvent]) -> None:
        s = self._sensors[a.ref.index]
        assert s is not None and s.exc is not None
        if ts >= s.exc_day_end:
            self._exc_rollover(s, ts, out)
        s.exc_count += 1
        e = s.exc
        e.value = float(s.exc_count)
        if s.exc_count > MAX_EXCURSIONS and not e.active:
            self._eval(e, True, False, ts, out, texts.excursions(s.exc_count))

    def _exc_rollover(self, s: SensorState, ts: int, out: list[AlarmEvent]) -> None:
        e = s.exc
        assert e is not None
        if e.active:
            self._eval(e, False, True, s.exc_day_end, out, texts.NEW_DAY)
        s.exc_count = 0
        _, s.exc_day_end = self._day(ts)

    # clock-aligned periods in the park's time zone
    def _local(self, ts: int) -> datetime:
        return datetime.fromtimestamp(ts / 1000, self.tz)

    def _hour(self, ts: int) -> tuple[int, int]:
        d = self._local(ts).replace(minute=0, second=0, microsecond=0)
        start = int(d.timestamp() * 1000)
        return start, start + HOUR_MS

    def _day(self, ts: int) -> tuple[int, int]:
        d = self._local(ts).replace(hour=0, minute=0, second=0, microsecond=0)
        nxt = (d + timedelta(days=1, hours=2)).replace(hour=0)
        return int(d.timestamp() * 1000), int(nxt.timestamp() * 1000)

    def _month(self, ts: int) -> tuple[int, int]:
        d = self._local(ts).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        nxt = (d + timedelta(days=32)).replace(day=1)
        return int(d.timestamp() * 1000), int(nxt.timestamp() * 1000)

    def _bucket(self, s: SensorState, v: float, ts: int, out: list[AlarmEvent]) -> None:
        b = s.bucket
        if b is None:
            s.bucket = b = self._new_bucket(ts)
        elif ts >= b.hour_end:
            self._close_hours(s, ts, out)
        b.hour_sum += v
        b.hour_n += 1

    def _new_bucket(self, ts: int) -> Buckets:
        _, h_end = self._hour(ts)
        _, d_end = self._day(ts)
        m_start, m_end = self._month(ts)
        return Buckets(h_end, 0.0, 0, d_end, 0.0, 0, m_end, 0.0, 0, round((m_end - m_start) / DAY_MS))

    def _close_hours(self, s: SensorState, ts: int, out: list[AlarmEvent]) -> None:
        """Close every clock hour that ended before ``ts``; judge the hourly, daily and monthly means."""
        b = s.bucket
        assert b is not None
        while ts >= b.hour_end:
            h_end = int(b.hour_end)
            a1 = s.bucket_alarms.get("1h")
            sensor = s.ref.sensor
            need_h = hour_need(sensor)
            n = int(b.hour_n)
            if n >= need_h and n > 0:
                mean = b.hour_sum / n
                b.day_sum += mean
                b.day_n += 1
                if a1 is not None:
                    self._judge(a1, mean, h_end, out, texts.hourly_mean(n, need_h))
            b.hour_end = h_end + HOUR_MS
            b.hour_sum, b.hour_n = 0.0, 0
            if h_end >= b.day_end:
                a24 = s.bucket_alarms.get("24h")
                d_start, d_end = self._day(int(b.day_end) - 1)
                need_d = day_need(sensor, round((d_end - d_start) / HOUR_MS))
                if b.day_n >= need_d:  # a valid day: its mean counts in the month's
                    b.month_sum += b.day_sum / b.day_n
                    b.month_n += 1
                    if a24 is not None:
                        self._judge(a24, b.day_sum / b.day_n, int(b.day_end), out,
                                    texts.daily_mean(int(b.day_n), need_d))
                b.day_end = self._day(h_end)[1]
                b.day_sum, b.day_n = 0.0, 0
            if h_end >= b.month_end:
                am = s.bucket_alarms.get("monthly")
                need_m = month_need(sensor, self._local(int(b.month_end) - 1).month, int(b.month_days))
                if am is not None and b.month_n >= need_m:
                    self._judge(am, b.month_sum / b.month_n, int(b.month_end), out,
                                texts.monthly_mean(int(b.month_n), need_m))
                m_start, m_end = self._month(h_end)
                b.month_end, b.month_sum, b.month_n, b.month_days = m_end, 0.0, 0, round((m_end - m_start) / DAY_MS)
            if ts - b.hour_end > OUTAGE_MS:  # a long outage: start afresh rather than close empty hours
                s.bucket = self._new_bucket(ts)
                return

    def _judge(self, a: Alarm, mean: float, ts: int, out: list[AlarmEvent], detail: str) -> None:
        if self._warming:
            return  # a period that ended in history is not judged again at start
        assert a.reg is not None
        on, lim = violates(a.reg, mean)
        a.value = mean
        a.limit = lim
        self._eval(a, on, not on, ts, out, detail)

    def _periods_ended(self, s: SensorState, now: int, out: list[AlarmEvent]) -> None:
        """Without a reading: the clock hours (and days, months) that ended, and the day of the excursions."""
        if s.bucket is not None and now >= s.bucket.hour_end + PERIOD_GRACE_MS:
            self._close_hours(s, now - PERIOD_GRACE_MS, out)
        if s.exc is not None and s.exc_day_end and now >= s.exc_day_end:
            self._exc_rollover(s, now, out)

    def _window_reach(self, s: SensorState) -> int:
        """How far back (ms) the sensor's averaging windows reach: the history to rebuild at start."""
        back = ROLL_MS["5min"] if s.roll is not None else 0
        if "1h" in s.bucket_alarms:
            back = max(back, HOUR_MS)
        if "24h" in s.bucket_alarms:
            back = max(back, 24 * HOUR_MS)
        if "monthly" in s.bucket_alarms:
            back = max(back, 31 * 24 * HOUR_MS)
        return back

    def _warm_windows(self, s: SensorState, v: float, ts: int) -> None:
        """A historical reading into the rolling window and the buckets: no rule is judged, no event made."""
        if s.roll is not None:
            s.roll_dq.append((ts, v))
            s.roll_sum += v
            while s.roll_dq[0][0] <= ts - ROLL_MS["5min"]:
                s.roll_sum -= s.roll_dq.popleft()[1]
        if s.bucket_alarms:
            self._warming = True
            try:
                self._bucket(s, v, ts, [])
            finally:
                self._warming = False
