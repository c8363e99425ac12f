"""The alarm engine: readings in, ISA-18.2 alarm events out. Pure and synchronous: no I/O, no wall clock.

``Engine.process(reading)`` evaluates every rule of that reading's sensor; ``Engine.tick(now_ms)`` handles
what happens without a reading (no data, on/off delays that expire, clock-hour and daily averages whose
period ended, shelving expiry). State is kept per (sensor, rule) in :class:`Alarm`; the ISA-18.2 state is
derived from four flags (active, acked, shelved, out of service) rather than stored.

Rules (from the park model, CONTRACT §4-5, plus the rules file):

- ``ll l h hh``: raised when the reading crosses the limit for ``on_delay_s``; cleared when it is back
  by the ``deadband`` for ``off_delay_s``.
- ``roc``: change over the last minute larger than ``rate_per_min``.
- ``reg_instant``: the regulatory limit on each reading (deadband for clearing, so it cannot chatter).
- ``reg_5min``: rolling 5-minute mean (GB 18484 furnace temperature), only when at least ``min_valid``
  (default 75 %) of the expected readings are in the window; ``reg_5min_excursions``: more than 5 raised
  5-minute excursions in one natural day of the park's time zone (GB 18484-2020 9.4).
- ``reg_1h``: clock-hour mean, valid with ``min_valid`` (default 75 %, HJ 75-2017: 45 of 60 minutes) of
  the expected readings; ``reg_24h``: mean of the valid hourly means of a natural day, valid with at least
  20 valid hours (GB 18484-2020 3.18/3.19; used for GB 18918 daily averages too); ``reg_monthly``: mean of
  the valid days' means of a calendar month, valid with 27 valid days (25 in February) or ``min_valid`` of
  its days. Period rules
  are judged when the period ends; the event carries the period end as its time and the validity in its
  message.
- ``no_data``: nothing for 3 x ``interval_s``; ``stuck``: the value did not change for ``stuck_s``
  (default 4 x ``sample_cycle_s`` for analyzers, max(600 s, 10 x ``interval_s``) otherwise; a value on
  the range bounds or 0 is a stopped machine, not a stuck sensor); ``out_of_range``: outside the
  instrument range (a sensor fault; the sensor's limit and regulatory rules are not evaluated meanwhile);
  ``bad_quality``: readings of quality ``bad`` for longer than 3 x ``interval_s`` (or ``bad_quality_s``). A
  bad reading is a sign of life for ``no_data`` but is never evaluated against limits or averaged.
- custom rules: a boolean expression over sensors (rules file); plant states suppress alarms by design.

Time of a reading: with the wall clock a reading is never evaluated ahead of this machine's clock (one stamped
ahead is evaluated at its arrival); a reading older than its sensor's newest is evaluated at the sensor's
newest time, unless it was seen before (same timestamp: a redelivery) or is older than the last
:data:`RECENT` readings of its sensor (too late to judge; the collector stores it all the same). So no
timestamp can hold back later readings.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from smartpark.averages import (
    DAY_MS,
    FIVE_MIN_MS,
    HOUR_MS,
    day_need,
    five_min_need,
    hour_need,
    is_valid,
    month_need,
)
from smartpark.errors import UsageError
from smartpark.numbers import beside_limit
from smartpark.park import LIMIT_KEYS, Park, Regulatory, SensorRef
from smartpark.wire import Reading

from .clock import Clock, EventClock
from .events import (
    ACKED,
    ACKED_EV,
    CLEARED,
    IN_SERVICE,
    NORM,
    OOSRV,
    OUT_OF_SERVICE,
    RAISED,
    RTNUN,
    SHELVED,
    SHLVD,
    UNACK,
    UNSHELVED,
    AlarmEvent,
    default_priority,
)
from .rules import CustomRule, PlantState, RuleSet

log = logging.getLogger(__name__)

ROLL_MS = {"5min": FIVE_MIN_MS}
BUCKET_AVG = ("1h", "24h", "monthly")
MAX_EXCURSIONS = 5
PERIOD_GRACE_MS = 10_000
RECENT = 32  # timestamps remembered per sensor to recognise a redelivered reading

LABELS = {
    "hh": ("High-high", "高高报警"), "h": ("High", "高报警"), "l": ("Low", "低报警"), "ll": ("Low-low", "低低报警"),
    "roc": ("Rate of change", "变化率报警"), "no_data": ("No data", "无数据"),
    "stuck": ("Flat-lined (stuck)", "数据恒定(疑似卡死)"), "out_of_range": ("Outside instrument range", "超出量程"),
    "reg_5min_excursions": ("More than 5 five-minute excursions today", "当日5分钟均值超标超过5次"),
    "reg_instant": ("Regulatory limit", "超过排放/法规限值"), "reg_5min": ("Regulatory 5-min mean", "5分钟均值超标"),
    "reg_1h": ("Regulatory hourly mean", "小时均值超标"), "reg_24h": ("Regulatory daily mean", "日均值超标"),
    "reg_monthly": ("Regulatory monthly mean", "月均值超标"),
    "bad_quality": ("Bad quality", "数据质量坏"),
}


class PlantStateRt:
    """A plant state at run time (active or not), with the alarms it suppresses."""

    __slots__ = ("active", "alarms", "name", "spec")

    def __init__(self, spec: PlantState) -> None:
        self.spec = spec
        self.name = spec.spec.name
        self.active = False
        self.alarms: list[Alarm] = []


class Alarm:
    """State of one (sensor, rule). The ISA-18.2 state is derived from the flags."""

    __slots__ = ("acked", "active", "asset", "custom", "deadband", "id", "label", "last_ts", "limit", "off_ms",
                 "on_ms", "oos", "pending", "priority", "ref", "reg", "rule", "sensor", "shelved_until", "site",
                 "suppressors", "value")

    def __init__(self, ref: SensorRef, rule: str, priority: str, *, limit: float | None = None,
                 on_ms: int = 0, off_ms: int = 0, deadband: float = 0.0, reg: Regulatory | None = None,
                 custom: CustomRule | None = None) -> None:
        self.ref = ref
        self.site, self.asset, self.sensor = ref.site, ref.asset, ref.sensor.id
        self.rule = rule
        self.id = f"{ref.key}/{rule}"
        self.priority = priority
        self.limit = limit
        self.on_ms, self.off_ms, self.deadband = on_ms, off_ms, deadband
        self.reg = reg
        self.custom = custom
        self.label = LABELS.get(rule) or ((custom.spec.message or rule, custom.spec.message_zh or rule)
                                          if custom else (rule, rule))
        self.active = False
        self.acked = True
        self.shelved_until: int | None = None
        self.oos = False
        self.pending: int | None = None
        self.value: float | None = None
        self.last_ts: int | None = None
        self.suppressors: tuple[PlantStateRt, ...] = ()

    @property
    def state(self) -> str:
        if self.oos:
            return OOSRV
        if self.shelved_until is not None:
            return SHLVD
        if self.active:
            return ACKED if self.acked else UNACK
        return NORM if self.acked else RTNUN

    @property
    def annunciated(self) -> bool:
        return not self.oos and self.shelved_until is None

    def dump(self) -> list[Any]:
        return [self.active, self.acked, self.shelved_until, self.oos, self.pending, self.value, self.limit,
                self.last_ts]

    def load(self, d: list[Any]) -> None:
        (self.active, self.acked, self.shelved_until, self.oos, self.pending, self.value, self.limit,
         self.last_ts) = d


class _Sensor:
    """Everything the engine keeps per sensor; ``process`` touches only this object."""

    __slots__ = (
        "asset_states",
        "bad_ms",
        "bad_since",
        "bq",
        "bucket",
        "bucket_alarms",
        "custom",
        "exc",
        "exc_count",
        "exc_day_end",
        "hi",
        "hot",
        "instant",
        "last_seen",
        "last_ts",
        "limits",
        "lo",
        "nd",
        "nodata_ms",
        "oor",
        "qhi",
        "qlo",
        "recent",
        "ref",
        "roc",
        "roc_dq",
        "roc_rate",
        "roll",
        "roll_dq",
        "roll_n_need",
        "roll_sum",
        "stuck",
        "stuck_ms",
        "stuck_since",
        "stuck_v",
    )

    def __init__(self, ref: SensorRef) -> None:
        s = ref.sensor
        self.ref = ref
        self.lo, self.hi = s.range
        self.last_ts = -1
        self.last_seen: int | None = None
        self.nodata_ms = int(3 * s.interval_s * 1000)
        self.bad_ms = int((s.bad_quality_s or 3 * s.interval_s) * 1000)
        self.bad_since: int | None = None  # time of the first of the current run of bad readings
        self.bq: Alarm
        self.recent: deque[int] = deque(maxlen=RECENT)  # the original timestamps of the last readings
        self.limits: list[Alarm] = []
        self.qlo, self.qhi = -math.inf, math.inf
        self.hot = False
        self.nd: Alarm
        self.oor: Alarm
        self.stuck: Alarm
        self.stuck_ms = int((s.stuck_s or (4 * s.sample_cycle_s if s.sample_cycle_s else max(600.0, 10 * s.interval_s)))
                            * 1000)
        self.stuck_v: float | None = None
        self.stuck_since = 0
        self.roc: Alarm | None = None
        self.roc_rate = s.rate_per_min or 0.0
        self.roc_dq: deque[tuple[int, float]] = deque()
        self.instant: Alarm | None = None
        self.roll: Alarm | None = None
        self.roll_dq: deque[tuple[int, float]] = deque()
        self.roll_sum = 0.0
        self.roll_n_need = 0
        self.exc: Alarm | None = None
        self.exc_count = 0
        self.exc_day_end = 0
        # [h_end, h_sum, h_n, d_end, d_sum (of valid hours' means), d_n, m_end, m_sum (of valid days' means), m_n,
        #  m_days]
        self.bucket: list[float] | None = None
        self.bucket_alarms: dict[str, Alarm] = {}
        self.custom: list[Alarm] = []
        self.asset_states: list[PlantStateRt] = []


def _beside(value: float | None, limit: float | None) -> tuple[str, str]:
    """Value and limit with the digits that show the side (1099.6 beside 1100 never reads as 1100)."""
    if value is None or limit is None:
        return _fmt(value), _fmt(limit)
    return beside_limit(value, limit)


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.0f}"


class Engine:
    """``Engine(park, rules, clock)``: evaluates readings synchronously and returns alarm events.

    ``sites`` restricts evaluation to some sites (readings of others are ignored), e.g. for a scenario.
    """

    def __init__(self, park: Park, rules: RuleSet | None = None, clock: Clock | None = None, *,
                 sites: Iterable[str] | None = None) -> None:
        self.park = park
        self.rules = rules or RuleSet()
        self.clock: Clock = clock or EventClock()
        self.tz = ZoneInfo(park.park.timezone)
        only = set(sites) if sites is not None else None
        self.alarms: dict[str, Alarm] = {}
        self._sensors: list[_Sensor | None] = [None] * len(park)
        self._latest: list[float | None] = [None] * len(park)
        self._states = {ps.spec.name: PlantStateRt(ps) for ps in self.rules.states}
        self._pending: set[Alarm] = set()
        self._shelved: set[Alarm] = set()
        self._seq = 0
        self._armed: int | None = None
        self._warming = False
        # the newest time read from the wall clock: a reading stamped later may lie ahead of it (wall clock only)
        self._max_ahead = getattr(self.clock, "max_ahead_ms", None)
        self._now_seen: float = -math.inf if self._max_ahead is not None else math.inf
        self.future_readings = 0  # readings evaluated at arrival because their ts lay too far ahead
        self._future_warned: set[str] = set()
        for ref in park:
            if only is None or ref.site in only:
                self._sensors[ref.index] = self._build(ref)
        for cr in self.rules.custom:
            s = self._sensors[cr.index]
            if s is None:
                continue
            a = self._add(Alarm(s.ref, cr.spec.name, cr.spec.priority, on_ms=int(cr.spec.on_delay_s * 1000),
                                off_ms=int(cr.spec.off_delay_s * 1000), custom=cr))
            for idx in cr.expr.indexes:
                si = self._sensors[idx]
                if si is not None:
                    si.custom.append(a)
        for st in self._states.values():
            for idx in st.spec.expr.indexes:
                si = self._sensors[idx]
                if si is not None:
                    si.asset_states.append(st)
        for a in self.alarms.values():
            names = self.rules.suppressors(a.id, a.custom)
            a.suppressors = tuple(self._states[n] for n in names if n in self._states)
            for st in a.suppressors:
                st.alarms.append(a)

    # ------------------------------------------------------------------ construction
    def _add(self, a: Alarm) -> Alarm:
        self.alarms[a.id] = a
        return a

    def _prio(self, ref: SensorRef, rule: str) -> str:
        return ref.sensor.priority.get(rule) or default_priority(rule)

    def _build(self, ref: SensorRef) -> _Sensor:
        s = ref.sensor
        st = _Sensor(ref)
        on, off = int(s.on_delay_s * 1000), int(s.off_delay_s * 1000)
        for key, limit in s.limits.items():
            st.limits.append(self._add(Alarm(ref, key, self._prio(ref, key), limit=limit, on_ms=on, off_ms=off,
                                             deadband=s.deadband)))
        highs = [lim for k, lim in s.limits.items() if k in ("h", "hh")]
        lows = [lim for k, lim in s.limits.items() if k in ("l", "ll")]
        st.qhi = min(highs) if highs else math.inf
        st.qlo = max(lows) if lows else -math.inf
        st.nd = self._add(Alarm(ref, "no_data", self._prio(ref, "no_data")))
        st.oor = self._add(Alarm(ref, "out_of_range", self._prio(ref, "out_of_range")))
        st.stuck = self._add(Alarm(ref, "stuck", self._prio(ref, "stuck")))
        st.bq = self._add(Alarm(ref, "bad_quality", self._prio(ref, "bad_quality")))
        if s.rate_per_min:
            st.roc = self._add(Alarm(ref, "roc", self._prio(ref, "roc"), limit=s.rate_per_min, on_ms=on, off_ms=off))
        for reg in s.regulatory:
            reg_limit = float(reg.limit) if isinstance(reg.limit, float | int) else None
            a = self._add(Alarm(ref, reg.rule, self._prio(ref, reg.rule), limit=reg_limit, reg=reg,
                                deadband=s.deadband if reg.averaging == "instant" else 0.0))
            if reg.averaging == "instant":
                st.instant = a
            elif reg.averaging == "5min":
                st.roll = a
                st.roll_n_need = five_min_need(s)
                st.exc = self._add(Alarm(ref, "reg_5min_excursions", self._prio(ref, "reg_5min_excursions"),
                                         limit=MAX_EXCURSIONS))
            else:
                st.bucket_alarms[reg.averaging] = a
        return st

    # ------------------------------------------------------------------ events
    def _event(self, a: Alarm, kind: str, ts: int, message: str, operator: str | None = None) -> AlarmEvent:
        self._seq += 1
        a.last_ts = ts
        return AlarmEvent(a.id, a.site, a.asset, a.sensor, a.rule, a.priority, kind, a.state,
                          a.value, a.limit, ts, message, operator, self._seq)

    def _text(self, a: Alarm, kind: str, detail: str) -> str:
        s = a.ref.sensor
        en, zh = a.label
        unit = s.unit
        if a.rule in ("no_data", "stuck", "out_of_range", "bad_quality", "reg_5min_excursions") or a.custom:
            what_en, what_zh = detail, detail
        else:
            value, limit = _beside(a.value, a.limit)
            what_en = f"{value} {unit} (limit {limit})" + (f", {detail}" if detail else "")
            what_zh = f"{value} {unit} (限值 {limit})" + (f", {detail}" if detail else "")
        name_zh = s.name_zh or s.name
        if kind == RAISED:
            return f"【{zh}】{name_zh} {what_zh} | {en}: {s.name} {what_en} [{a.id}]"
        return f"【恢复】{zh} {name_zh} {what_zh} | Cleared: {en}, {s.name} {what_en} [{a.id}]"

    def _raise(self, a: Alarm, ts: int, out: list[AlarmEvent], detail: str = "") -> None:
        a.active = True
        a.pending = None
        self._pending.discard(a)
        if a.annunciated:
            a.acked = False
            out.append(self._event(a, RAISED, ts, self._text(a, RAISED, detail)))
        else:
            a.last_ts = ts
        if a.rule == "reg_5min":  # a legal excursion counts whether or not an operator shelved its alarm
            self._excursion(a, ts, out)

    def _clear(self, a: Alarm, ts: int, out: list[AlarmEvent], detail: str = "") -> None:
        a.active = False
        a.pending = None
        self._pending.discard(a)
        if not a.annunciated:
            a.last_ts = ts
            return
        out.append(self._event(a, CLEARED, ts, self._text(a, CLEARED, detail)))

    def _eval(self, a: Alarm, on: bool, off: bool, ts: int, out: list[AlarmEvent], detail: str = "") -> None:
        """One step of a rule's condition, with on/off delays and suppression by design."""
        if a.suppressors:
            for st in a.suppressors:
                if st.active:
                    on, off = False, True
                    detail = f"suppressed by plant state {st.name}"
                    break
        # raising waits on_delay while the condition holds, clearing waits off_delay: one mechanism, two ways
        want, delay, act = (off, a.off_ms, self._clear) if a.active else (on, a.on_ms, self._raise)
        if want:
            if delay == 0:
                act(a, ts, out, detail)
                return
            if a.pending is None:
                a.pending = ts
                self._pending.add(a)
            if ts - a.pending >= delay:
                act(a, ts, out, detail)
        elif a.pending is not None:
            a.pending = None
            self._pending.discard(a)

    # ------------------------------------------------------------------ readings
    def process(self, r: Reading) -> list[AlarmEvent]:
        """Evaluate one accepted reading at its time (see the module's docstring: early and late readings)."""
        s = self._sensors[r.ref.index]
        if s is None:
            return []
        ts = r.ts_ms
        if ts > self._now_seen:  # possibly ahead of the wall clock: never evaluated ahead of it
            ts = self._not_ahead(r)
        recent = s.recent
        if ts <= s.last_ts:
            if r.ts_ms in recent or not recent or (len(recent) == RECENT and r.ts_ms < min(recent)):
                return []  # a redelivery, or too late to judge (the collector stores it all the same)
            ts = s.last_ts  # out of order: judged now, at the sensor's newest time
        recent.append(r.ts_ms)
        s.last_ts = ts
        self.clock.observe(ts)
        if self._armed is None:
            self._arm(ts)
        out: list[AlarmEvent] = []
        s.last_seen = ts
        if s.nd.active:
            s.nd.value = r.value
            self._clear(s.nd, ts, out, "data again")
        v = r.value
        if not s.lo <= v <= s.hi:
            self._latest[r.ref.index] = None
            if not s.oor.active:
                s.oor.value = v
                s.oor.limit = s.hi if v > s.hi else s.lo
                self._eval(s.oor, True, False, ts, out,
                           f"{_fmt(v)} {r.ref.sensor.unit} outside [{_fmt(s.lo)}, {_fmt(s.hi)}]")
            return out
        if s.oor.active:
            s.oor.value = v
            self._eval(s.oor, False, True, ts, out, f"{_fmt(v)} {r.ref.sensor.unit} back in range")
        if r.quality == "bad":  # a sign of life (above), never judged against limits
            self._latest[r.ref.index] = None
            if s.bad_since is None:
                s.bad_since = ts
            elif not s.bq.active and ts - s.bad_since > s.bad_ms:
                self._bad_quality(s, ts, out)
            return out
        if s.bad_since is not None:
            s.bad_since = None
            if s.bq.active:
                s.bq.value = v
                self._eval(s.bq, False, True, ts, out, f"quality {r.quality} again")
        self._latest[r.ref.index] = v
        if s.asset_states:
            self._plant_states(s, ts, out)
        # flat line
        if v == s.stuck_v and v != 0 and v != s.lo and v != s.hi:
            if not s.stuck.active and ts - s.stuck_since >= s.stuck_ms:
                s.stuck.value = v
                self._eval(s.stuck, True, False, ts, out,
                           f"value {_fmt(v)} unchanged for {(ts - s.stuck_since) / 60000:.0f} min")
        else:
            s.stuck_v = v
            s.stuck_since = ts
            if s.stuck.active:
                s.stuck.value = v
                self._eval(s.stuck, False, True, ts, out, f"value changes again ({_fmt(v)})")
        # limits: the fast path skips them inside the quiet band when nothing is active or pending
        if s.hot or v > s.qhi or v < s.qlo:
            hot = False
            for a in s.limits:
                a.value = v
                lim = a.limit
                if a.rule[0] == "h":
                    self._eval(a, v > lim, v <= lim - a.deadband, ts, out)  # type: ignore[operator]
                else:
                    self._eval(a, v < lim, v >= lim + a.deadband, ts, out)  # type: ignore[operator]
                hot = hot or a.active or a.pending is not None
            s.hot = hot
        if s.roc is not None:
            self._roc(s, v, ts, out)
        if s.instant is not None:
            self._instant(s.instant, v, ts, out)
        if is_valid(r.quality, r.flag):  # the readings the averages count (smartpark.averages)
            if s.roll is not None:
                self._rolling(s, v, ts, out)
            if s.bucket_alarms:
                self._bucket(s, v, ts, out)
        if s.exc is not None and ts >= s.exc_day_end:
            self._exc_rollover(s, ts, out)
        for a in s.custom:
            self._custom(a, ts, out)
        return out

    def _bad_quality(self, s: _Sensor, ts: int, out: list[AlarmEvent]) -> None:
        assert s.bad_since is not None
        s.bq.value = None
        self._eval(s.bq, True, False, ts, out,
                   f"quality bad for more than {s.bad_ms // 1000} s (readings not evaluated against limits)")

    def _ahead(self, ts: int) -> bool:
        """Whether ``ts`` lies ahead of the wall clock (refreshing the newest time read from it)."""
        if self._max_ahead is None:
            return False
        self._now_seen = self.clock.now_ms()
        return ts > self._now_seen

    def _not_ahead(self, r: Reading) -> int:
        """With the wall clock, the time to evaluate a reading stamped after the last time read from the clock:
        its own, or now when it lies ahead of now (taken at its word it would hold back every later reading of
        its sensor until real time caught up). Beyond the tolerance (a wrong clock) it is counted and warned
        once per sensor. The clock is read only here, so mostly once per tolerance of stream time."""
        ts = r.ts_ms
        if not self._ahead(ts):
            return ts
        now = int(self._now_seen)
        assert self._max_ahead is not None  # _ahead is True only with a wall clock
        if ts - now > self._max_ahead:
            self.future_readings += 1
            if r.ref.key not in self._future_warned:
                self._future_warned.add(r.ref.key)
                log.warning("alerts: %s sent a reading stamped %.0f s ahead of this machine's clock; evaluated at "
                            "its arrival instead (check the clock of the sensor or its gateway; warned once per "
                            "sensor)", r.ref.key, (ts - now) / 1000)
        return now

    def needs_history(self) -> dict[str, int]:
        """Sensor key -> how far back (ms before now) its averaging windows reach: what to rebuild at start."""
        out = {}
        for s in self._sensors:
            if s is None:
                continue
            back = ROLL_MS["5min"] if s.roll is not None else 0
            if "1h" in s.bucket_alarms:
                back = max(back, HOUR_MS)
            if "24h" in s.bucket_alarms:
                back = max(back, 24 * HOUR_MS)
            if "monthly" in s.bucket_alarms:
                back = max(back, 31 * 24 * HOUR_MS)
            if back:
                out[s.ref.key] = back
        return out

    def warm(self, r: Reading) -> None:
        """Feed a historical reading into the averaging windows only: no rule is evaluated, no event made.

        At a first start the rolling 5-minute window and the clock-hour/day/month buckets are rebuilt
        from InfluxDB history this way, so that the first averages judged are complete."""
        s = self._sensors[r.ref.index]
        if (s is None or not is_valid(r.quality, r.flag) or not s.lo <= r.value <= s.hi or r.ts_ms <= s.last_ts
                or (r.ts_ms > self._now_seen and self._ahead(r.ts_ms))):
            return
        v, ts = r.value, r.ts_ms
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

    def _arm(self, ts: int) -> None:
        """The first moment the engine knows the time: sensors not heard of yet are due from then on."""
        self._armed = ts
        for s in self._sensors:
            if s is not None and s.last_seen is None:
                s.last_seen = ts

    def _violates(self, reg: Regulatory, v: float, margin: float = 0.0) -> tuple[bool, float]:
        lim = reg.limit
        if reg.comparator == "max":
            return v > lim - margin, float(lim)  # type: ignore[operator, arg-type]
        if reg.comparator == "min":
            return v < lim + margin, float(lim)  # type: ignore[operator, arg-type]
        lo, hi = lim  # type: ignore[misc]
        return (v < lo + margin or v > hi - margin), float(lo if v < (lo + hi) / 2 else hi)

    def _instant(self, a: Alarm, v: float, ts: int, out: list[AlarmEvent]) -> None:
        reg = a.reg
        assert reg is not None
        on, lim = self._violates(reg, v)
        a.value = v
        if on:
            a.limit = lim
        off = not self._violates(reg, v, a.deadband)[0] if a.active else False
        self._eval(a, on, off, ts, out)

    def _roc(self, s: _Sensor, v: float, ts: int, out: list[AlarmEvent]) -> None:
        dq = s.roc_dq
        dq.append((ts, v))
        while len(dq) >= 2 and dq[1][0] <= ts - 60_000:
            dq.popleft()
        t0, v0 = dq[0]
        if t0 >= ts:
            return
        rate = abs(v - v0) * 60_000 / max(ts - t0, 60_000)
        a = s.roc
        assert a is not None
        a.value = rate
        self._eval(a, rate > s.roc_rate, rate <= 0.8 * s.roc_rate, ts, out,
                   f"{_fmt(rate)} {s.ref.sensor.unit}/min (limit {_fmt(s.roc_rate)})")

    def _rolling(self, s: _Sensor, v: float, ts: int, out: list[AlarmEvent]) -> None:
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
        on, lim = self._violates(a.reg, mean)
        a.value = mean
        a.limit = lim
        self._eval(a, on, not on, ts, out, f"5-min mean of {n} values")

    def _excursion(self, a: Alarm, ts: int, out: list[AlarmEvent]) -> None:
        s = self._sensors[a.ref.index]
        assert s is not None and s.exc is not None
        if ts >= s.exc_day_end:
            self._exc_rollover(s, ts, out)
        s.exc_count += 1
        e = s.exc
        e.value = float(s.exc_count)
        if s.exc_count > MAX_EXCURSIONS and not e.active:
            self._eval(e, True, False, ts, out, f"{s.exc_count} five-minute excursions today (more than 5)")

    def _exc_rollover(self, s: _Sensor, ts: int, out: list[AlarmEvent]) -> None:
        e = s.exc
        assert e is not None
        if e.active:
            self._eval(e, False, True, s.exc_day_end, out, "a new day starts")
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

    def _bucket(self, s: _Sensor, v: float, ts: int, out: list[AlarmEvent]) -> None:
        b = s.bucket
        if b is None:
            s.bucket = b = self._new_bucket(ts)
        elif ts >= b[0]:
            self._close_hours(s, ts, out)
        b[1] += v
        b[2] += 1

    def _new_bucket(self, ts: int) -> list[float]:
        _, h_end = self._hour(ts)
        _, d_end = self._day(ts)
        m_start, m_end = self._month(ts)
        return [h_end, 0.0, 0, d_end, 0.0, 0, m_end, 0.0, 0, round((m_end - m_start) / DAY_MS)]

    def _close_hours(self, s: _Sensor, ts: int, out: list[AlarmEvent]) -> None:
        """Close every clock hour that ended before ``ts``; judge the hourly, daily and monthly means."""
        b = s.bucket
        assert b is not None
        sensor = s.ref.sensor
        while ts >= b[0]:
            h_end = int(b[0])
            a1 = s.bucket_alarms.get("1h")
            need_h = hour_need(sensor)
            n = int(b[2])
            if n >= need_h and n > 0:
                mean = b[1] / n
                b[4] += mean
                b[5] += 1
                if a1 is not None:
                    self._judge(a1, mean, h_end, out, f"hourly mean of {n} values (valid, need {need_h})")
            b[0] = h_end + HOUR_MS
            b[1], b[2] = 0.0, 0
            if h_end >= b[3]:
                a24 = s.bucket_alarms.get("24h")
                d_start, d_end = self._day(int(b[3]) - 1)
                need_d = day_need(sensor, round((d_end - d_start) / HOUR_MS))
                if b[5] >= need_d:  # a valid day: its mean counts in the month's
                    b[7] += b[4] / b[5]
                    b[8] += 1
                    if a24 is not None:
                        self._judge(a24, b[4] / b[5], int(b[3]), out,
                                    f"daily mean of {int(b[5])} valid hours (need {need_d})")
                b[3] = self._day(h_end)[1]
                b[4], b[5] = 0.0, 0
            if h_end >= b[6]:
                am = s.bucket_alarms.get("monthly")
                need_m = month_need(sensor, self._local(int(b[6]) - 1).month, int(b[9]))
                if am is not None and b[8] >= need_m:
                    self._judge(am, b[7] / b[8], int(b[6]), out,
                                f"monthly mean of {int(b[8])} valid days (need {need_m})")
                m_start, m_end = self._month(h_end)
                b[6], b[7], b[8], b[9] = m_end, 0.0, 0, round((m_end - m_start) / DAY_MS)
            if ts - b[0] > 40 * 24 * HOUR_MS:  # a long outage: start afresh rather than close empty hours
                s.bucket = self._new_bucket(ts)
                return

    def _judge(self, a: Alarm, mean: float, ts: int, out: list[AlarmEvent], detail: str) -> None:
        if self._warming:
            return  # a period that ended in history is not judged again at start
        assert a.reg is not None
        on, lim = self._violates(a.reg, mean)
        a.value = mean
        a.limit = lim
        self._eval(a, on, not on, ts, out, detail)

    def _plant_states(self, s: _Sensor, ts: int, out: list[AlarmEvent]) -> None:
        for st in s.asset_states:
            try:
                now = st.spec.expr.fn(self._latest)
            except (TypeError, ZeroDivisionError):
                continue
            if now != st.active:
                st.active = now
                if now:
                    for a in st.alarms:
                        if a.active:
                            self._eval(a, False, True, ts, out)
                            if a.active:  # an off-delay: suppression by design is immediate
                                self._clear(a, ts, out, f"suppressed by plant state {st.name}")

    def _custom(self, a: Alarm, ts: int, out: list[AlarmEvent]) -> None:
        cr = a.custom
        assert cr is not None
        try:
            on = cr.expr.fn(self._latest)
        except (TypeError, ZeroDivisionError):
            return  # a sensor of the expression has no valid value: no judgement
        a.value = self._latest[cr.index]
        self._eval(a, on, not on, ts, out, f"{cr.expr.text}" + (f": {cr.spec.message}" if cr.spec.message else ""))

    # ------------------------------------------------------------------ time passing
    def tick(self, now_ms: int | None = None) -> list[AlarmEvent]:
        """What happens without readings: no data, expired delays, ended averaging periods, shelving expiry."""
        now = self.clock.now_ms() if now_ms is None else now_ms
        out: list[AlarmEvent] = []
        if self._armed is None:
            if now <= 0:
                return out
            self._arm(now)
        for a in sorted(self._pending, key=lambda x: x.pending or 0):
            if a.pending is None:
                continue
            delay = a.off_ms if a.active else a.on_ms
            due = a.pending + delay
            if now >= due:
                if a.active:
                    self._clear(a, due, out)
                else:
                    self._raise(a, due, out)
        for s in self._sensors:
            if s is None:
                continue
            if not s.nd.active and s.last_seen is not None and now - s.last_seen > s.nodata_ms:
                s.nd.value = None
                due = s.last_seen + s.nodata_ms
                self._eval(s.nd, True, False, due, out,
                           f"no reading for more than {s.nodata_ms // 1000} s (3 x interval)")
            if s.bad_since is not None and not s.bq.active and now - s.bad_since > s.bad_ms:
                self._bad_quality(s, s.bad_since + s.bad_ms, out)
            if s.bucket is not None and now >= s.bucket[0] + PERIOD_GRACE_MS:
                self._close_hours(s, now - PERIOD_GRACE_MS, out)
            if s.exc is not None and s.exc_day_end and now >= s.exc_day_end:
                self._exc_rollover(s, now, out)
        for a in sorted(self._shelved, key=lambda x: x.shelved_until or 0):
            if a.shelved_until is not None and now >= a.shelved_until:
                out.append(self._unshelve(a, a.shelved_until, "system", "shelving expired"))
        return out

    # ------------------------------------------------------------------ operators (ISA-18.2)
    def get(self, alarm_id: str) -> Alarm:
        a = self.alarms.get(alarm_id)
        if a is None:
            raise UsageError(f"unknown alarm id {alarm_id!r} (site/asset/sensor/rule)")
        return a

    def _now(self, now_ms: int | None) -> int:
        return self.clock.now_ms() if now_ms is None else now_ms

    @staticmethod
    def _audit(verb: str, operator: str, comment: str | None) -> str:
        return f"{verb} by {operator}" + (f": {comment}" if comment else "")

    def ack(self, alarm_id: str, operator: str, comment: str | None = None,
            now_ms: int | None = None) -> AlarmEvent:
        a = self.get(alarm_id)
        if a.state not in (UNACK, RTNUN):
            raise UsageError(f"alarm {alarm_id} is {a.state}: nothing to acknowledge")
        a.acked = True
        return self._event(a, ACKED_EV, self._now(now_ms), self._audit("acknowledged", operator, comment), operator)

    def shelve(self, alarm_id: str, operator: str, comment: str | None, duration_s: float,
               now_ms: int | None = None, max_s: float | None = None) -> AlarmEvent:
        """``max_s``: the operator's own bound (by role), instead of the rules file's ``max_shelve_h``."""
        a = self.get(alarm_id)
        if not comment or not comment.strip():
            raise UsageError("shelving needs a reason (--comment)")
        cap = self.rules.max_shelve_s if max_s is None else max_s
        if not 0 < duration_s <= cap:
            raise UsageError(f"shelving lasts more than 0 and at most {cap / 3600:g} h, got {duration_s:g} s")
        if a.oos:
            raise UsageError(f"alarm {alarm_id} is out of service")
        now = self._now(now_ms)
        a.shelved_until = now + int(duration_s * 1000)
        self._shelved.add(a)
        return self._event(a, SHELVED, now, self._audit(f"shelved for {duration_s / 3600:g} h", operator, comment),
                           operator)

    def unshelve(self, alarm_id: str, operator: str, comment: str | None = None,
                 now_ms: int | None = None) -> AlarmEvent:
        a = self.get(alarm_id)
        if a.shelved_until is None:
            raise UsageError(f"alarm {alarm_id} is not shelved")
        return self._unshelve(a, self._now(now_ms), operator, comment)

    def _unshelve(self, a: Alarm, ts: int, operator: str, comment: str | None) -> AlarmEvent:
        a.shelved_until = None
        self._shelved.discard(a)
        a.acked = not a.active  # an alarm still active is annunciated again
        return self._event(a, UNSHELVED, ts, self._audit("unshelved", operator, comment), operator)

    def out_of_service(self, alarm_id: str, operator: str, comment: str | None,
                       now_ms: int | None = None) -> AlarmEvent:
        a = self.get(alarm_id)
        if not comment:
            raise UsageError("taking an alarm out of service needs a reason (--comment)")
        a.oos = True
        a.shelved_until = None
        self._shelved.discard(a)
        return self._event(a, OUT_OF_SERVICE, self._now(now_ms), self._audit("out of service", operator, comment),
                           operator)

    def in_service(self, alarm_id: str, operator: str, comment: str | None = None,
                   now_ms: int | None = None) -> AlarmEvent:
        a = self.get(alarm_id)
        if not a.oos:
            raise UsageError(f"alarm {alarm_id} is in service")
        a.oos = False
        a.acked = not a.active
        return self._event(a, IN_SERVICE, self._now(now_ms), self._audit("in service", operator, comment), operator)

    # ------------------------------------------------------------------ views and persistence
    def active(self) -> list[dict[str, Any]]:
        """Alarms that are not NORM, most important first: what an operator's alarm list shows."""
        order = {"high": 0, "medium": 1, "low": 2}
        rows = [a for a in self.alarms.values() if a.state != NORM]
        rows.sort(key=lambda a: (order.get(a.priority, 3), -(a.last_ts or 0)))
        return [{"id": a.id, "site": a.site, "asset": a.asset, "sensor": a.sensor, "rule": a.rule,
                 "priority": a.priority, "state": a.state, "value": a.value, "limit": a.limit, "since": a.last_ts,
                 "shelved_until": a.shelved_until, "message": self._text(a, RAISED, "") if a.active else ""}
                for a in rows]

    def unacked_events(self) -> list[AlarmEvent]:
        """A ``raised`` event for every alarm that is active and unacknowledged (to resume repeats)."""
        return [AlarmEvent(a.id, a.site, a.asset, a.sensor, a.rule, a.priority, RAISED, a.state, a.value, a.limit,
                           a.last_ts or 0, self._text(a, RAISED, "")) for a in self.alarms.values() if a.state == UNACK]

    def apply(self, alarm_id: str, dump: list[Any]) -> None:
        """Restore one alarm's flags (journal replay)."""
        a = self.alarms.get(alarm_id)
        if a is None:
            return
        a.load(dump)
        (self._shelved.add if a.shelved_until is not None else self._shelved.discard)(a)
        (self._pending.add if a.pending is not None else self._pending.discard)(a)

    def dump(self) -> dict[str, Any]:
        """The whole state as JSON-able data: alarm flags, windows and averaging buckets."""
        sensors = {}
        for s in self._sensors:
            if s is None:
                continue
            sensors[s.ref.key] = [s.last_ts, s.last_seen, s.stuck_v, s.stuck_since, list(s.roc_dq), list(s.roll_dq),
                                  s.exc_count, s.exc_day_end, s.bucket, s.hot, s.bad_since, list(s.recent)]
        return {"version": 1, "seq": self._seq, "armed": self._armed, "now": self.clock.now_ms(),
                "alarms": {a.id: a.dump() for a in self.alarms.values()}, "sensors": sensors,
                "latest": self._latest, "states": {n: st.active for n, st in self._states.items()}}

    def load(self, d: dict[str, Any]) -> None:
        self._seq = int(d.get("seq", 0))
        self._armed = d.get("armed")
        if isinstance(self.clock, EventClock) and d.get("now"):
            self.clock.observe(int(d["now"]))
        for aid, ad in d.get("alarms", {}).items():
            self.apply(aid, ad)
        for key, sd in d.get("sensors", {}).items():
            try:
                s = self._sensors[self.park.get(key).index]
            except KeyError:
                continue
            if s is None:
                continue
            (s.last_ts, s.last_seen, s.stuck_v, s.stuck_since, roc, roll, s.exc_count, s.exc_day_end, s.bucket,
             s.hot) = sd[:10]
            if len(sd) >= 12:  # snapshots of earlier versions have neither
                s.bad_since = sd[10]
                s.recent.extend(int(t) for t in sd[11])
            s.roc_dq = deque((int(t), float(v)) for t, v in roc)
            s.roll_dq = deque((int(t), float(v)) for t, v in roll)
            s.roll_sum = sum(v for _, v in s.roll_dq)
            if s.bucket is not None and s.bucket[9] > 31:  # earlier versions summed the month's hours: start afresh
                s.bucket[7], s.bucket[8], s.bucket[9] = 0.0, 0, round(s.bucket[9] / 24)
        latest = d.get("latest") or []
        if len(latest) == len(self._latest):
            self._latest = list(latest)
        for n, act in d.get("states", {}).items():
            if n in self._states:
                self._states[n].active = bool(act)

    def resync(self, seq: int = 0) -> None:
        """After restoring alarm flags from the journal: derived per-sensor flags and the event counter."""
        self._seq = max(self._seq, seq)
        for s in self._sensors:
            if s is not None:
                s.hot = any(a.active or a.pending is not None for a in s.limits)

    @property
    def seq(self) -> int:
        return self._seq

    def sensor_last_ts(self) -> dict[str, int]:
        return {s.ref.key: s.last_ts for s in self._sensors if s is not None and s.last_ts >= 0}


__all__ = ["LIMIT_KEYS", "Alarm", "Engine"]
