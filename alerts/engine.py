"""The alarm engine: readings in, ISA-18.2 alarm events out. Pure and synchronous: no I/O, no wall clock.

``Engine.process(reading)`` evaluates every rule of that reading's sensor; ``Engine.tick(now_ms)`` handles
what happens without a reading (no data, on/off delays that expire, clock-hour and daily averages whose
period ended, shelving expiry). This file is the rule evaluation; the engine's other jobs have a file each:

- :mod:`alerts.alarm`: the alarm model (:class:`Alarm`, its ISA-18.2 state derived from four flags), the
  transitions with their on/off delays and suppression by design, the operator actions;
- :mod:`alerts.averages`: the regulatory rules (GB 18484, GB 18918, HJ 75): instant limit, rolling 5-minute
  mean and its excursions, clock-hour, daily and monthly means;
- :mod:`alerts.texts`: every bilingual text (labels, event messages, details, notifications);
- :mod:`alerts.persist`: the engine's state for snapshots and journal replay;
- :mod:`alerts.sensor`: what is kept per sensor.

Rules (from the park model, CONTRACT §4-5, plus the rules file):

- ``ll l h hh``: raised when the reading crosses the limit for ``on_delay_s``; cleared when it is back
  by the ``deadband`` for ``off_delay_s``.
- ``roc``: change over the last minute larger than ``rate_per_min``.
- ``reg_*``: the regulatory limit on each reading and the averages, see :mod:`alerts.averages`.
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
from collections.abc import Iterable
from zoneinfo import ZoneInfo

from smartpark.averages import five_min_need, is_valid
from smartpark.decode import Reading
from smartpark.park import LIMIT_KEYS, Park, SensorRef
from smartpark.schema import BAD, BAD_QUALITY, HH, LL, NO_DATA, OUT_OF_RANGE, REG_5MIN_EXCURSIONS, ROC, STUCK, H, L

from . import texts
from .alarm import Alarm, PlantStateRt
from .averages import MAX_EXCURSIONS, Averaging
from .clock import Clock, EventClock
from .events import AlarmEvent, default_priority
from .persist import Persistence
from .rules import RuleSet
from .sensor import RECENT, SensorState

log = logging.getLogger(__name__)


class Engine(Persistence, Averaging):
    """``Engine(park, rules, clock)``: evaluates readings synchronously and returns alarm events.

    ``sites`` restricts evaluation to some sites (readings of others are ignored), e.g. for a scenario.
    """

    def __init__(self, park: Park, rules: RuleSet | None = None, clock: Clock | None = None, *,
                 sites: Iterable[str] | None = None) -> None:
        self.park = park
        self.rules = rules or RuleSet()
        self.clock = clock or EventClock()
        self.tz = ZoneInfo(park.park.timezone)
        only = set(sites) if sites is not None else None
        self.alarms = {}
        self._sensors = [None] * len(park)
        self._latest = [None] * len(park)
        self._states = {ps.spec.name: PlantStateRt(ps) for ps in self.rules.states}
        self._pending = set()
        self._shelved = set()
        self._seq = 0
        self._armed = None
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

    def _build(self, ref: SensorRef) -> SensorState:
        s = ref.sensor
        st = SensorState(ref)
        on, off = int(s.on_delay_s * 1000), int(s.off_delay_s * 1000)
        for key, limit in s.limits.items():
            st.limits.append(self._add(Alarm(ref, key, self._prio(ref, key), limit=limit, on_ms=on, off_ms=off,
                                             deadband=s.deadband)))
        highs = [lim for k, lim in s.limits.items() if k in (H, HH)]
        lows = [lim for k, lim in s.limits.items() if k in (L, LL)]
        st.qhi = min(highs) if highs else math.inf
        st.qlo = max(lows) if lows else -math.inf
        st.nd = self._add(Alarm(ref, NO_DATA, self._prio(ref, NO_DATA)))
        st.oor = self._add(Alarm(ref, OUT_OF_RANGE, self._prio(ref, OUT_OF_RANGE)))
        st.stuck = self._add(Alarm(ref, STUCK, self._prio(ref, STUCK)))
        st.bq = self._add(Alarm(ref, BAD_QUALITY, self._prio(ref, BAD_QUALITY)))
        if s.rate_per_min:
            st.roc = self._add(Alarm(ref, ROC, self._prio(ref, ROC), limit=s.rate_per_min, on_ms=on, off_ms=off))
        for reg in s.regulatory:
            reg_limit = float(reg.limit) if isinstance(reg.limit, float | int) else None
            a = self._add(Alarm(ref, reg.rule, self._prio(ref, reg.rule), limit=reg_limit, reg=reg,
                                deadband=s.deadband if reg.averaging == "instant" else 0.0))
            if reg.averaging == "instant":
                st.instant = a
            elif reg.averaging == "5min":
                st.roll = a
                st.roll_n_need = five_min_need(s)
                st.exc = self._add(Alarm(ref, REG_5MIN_EXCURSIONS, self._prio(ref, REG_5MIN_EXCURSIONS),
                                         limit=MAX_EXCURSIONS))
            else:
                st.bucket_alarms[reg.averaging] = a
        return st

    # ------------------------------------------------------------------ readings
    def process(self, r: Reading) -> list[AlarmEvent]:
        """Evaluate one accepted reading at its time (see the module's docstring: early and late readings)."""
        i = r.ref.index
        s = self._sensors[i]
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
        s.last_ts = s.last_seen = ts
        self.clock.observe(ts)
        if self._armed is None:
            self._arm(ts)
        out: list[AlarmEvent] = []
        if s.nd.active:
            s.nd.value = r.value
            self._clear(s.nd, ts, out, texts.DATA_AGAIN)
        v = r.value
        if not s.lo <= v <= s.hi or r.quality == BAD:
            self._unusable(s, r, ts, out)  # a sign of life (above), never judged against limits
            return out
        if s.oor.active or s.bad_since is not None:
            self._usable_again(s, r, ts, out)
        self._latest[i] = v
        if s.asset_states:
            self._plant_states(s, ts, out)
        if v == s.stuck_v and v != 0 and v != s.lo and v != s.hi:  # a flat line
            if not s.stuck.active and ts - s.stuck_since >= s.stuck_ms:
                s.stuck.value = v
                self._eval(s.stuck, True, False, ts, out, texts.stuck(v, (ts - s.stuck_since) / 60000))
        else:
            s.stuck_v = v
            s.stuck_since = ts
            if s.stuck.active:
                s.stuck.value = v
                self._eval(s.stuck, False, True, ts, out, texts.unstuck(v))
        if s.hot or v > s.qhi or v < s.qlo:  # limits are skipped inside the quiet band when none is active or pending
            self._limits(s, v, ts, out)
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

    def _unusable(self, s: SensorState, r: Reading, ts: int, out: list[AlarmEvent]) -> None:
        """A reading outside the instrument range, or of quality bad: the sensor's health rules only."""
        self._latest[r.ref.index] = None
        v, unit = r.value, r.ref.sensor.unit
        if not s.lo <= v <= s.hi:
            if not s.oor.active:
                s.oor.value = v
                s.oor.limit = s.hi if v > s.hi else s.lo
                self._eval(s.oor, True, False, ts, out, texts.out_of_range(v, unit, s.lo, s.hi))
            return
        if s.oor.active:
            self._back_in_range(s, v, unit, ts, out)
        if s.bad_since is None:
            s.bad_since = ts
        elif not s.bq.active and ts - s.bad_since > s.bad_ms:
            self._bad_quality(s, ts, out)

    def _usable_again(self, s: SensorState, r: Reading, ts: int, out: list[AlarmEvent]) -> None:
        """The first reading in range and not bad after some that were not."""
        if s.oor.active:
            self._back_in_range(s, r.value, r.ref.sensor.unit, ts, out)
        if s.bad_since is not None:
            s.bad_since = None
            if s.bq.active:
                s.bq.value = r.value
                self._eval(s.bq, False, True, ts, out, texts.quality_again(r.quality))

    def _back_in_range(self, s: SensorState, v: float, unit: str, ts: int, out: list[AlarmEvent]) -> None:
        s.oor.value = v
        self._eval(s.oor, False, True, ts, out, texts.back_in_range(v, unit))

    def _bad_quality(self, s: SensorState, ts: int, out: list[AlarmEvent]) -> None:
        assert s.bad_since is not None
        s.bq.value = None
        self._eval(s.bq, True, False, ts, out, texts.bad_quality(s.bad_ms // 1000))

    def _limits(self, s: SensorState, v: float, ts: int, out: list[AlarmEvent]) -> None:
        hot = False
        for a in s.limits:
            a.value = v
            lim = a.limit
            if a.rule[0] == "h":
                self._eval(a, v > lim, v <= lim - a.deadband, ts, out)  # type: ignore[operator]  # limits are set
            else:
                self._eval(a, v < lim, v >= lim + a.deadband, ts, out)  # type: ignore[operator]  # limits are set
            hot = hot or a.active or a.pending is not None
        s.hot = hot

    def _roc(self, s: SensorState, v: float, ts: int, out: list[AlarmEvent]) -> None:
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
                   lambda: texts.rate(rate, s.ref.sensor.unit, s.roc_rate))

    def _plant_states(self, s: SensorState, ts: int, out: list[AlarmEvent]) -> None:
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
                                self._clear(a, ts, out, texts.suppressed(st.name))

    def _custom(self, a: Alarm, ts: int, out: list[AlarmEvent]) -> None:
        cr = a.custom
        assert cr is not None
        try:
            on = cr.expr.fn(self._latest)
        except (TypeError, ZeroDivisionError):
            return  # a sensor of the expression has no valid value: no judgement
        a.value = self._latest[cr.index]
        self._eval(a, on, not on, ts, out, lambda: texts.custom(cr.expr.text, cr.spec.message))

    # ------------------------------------------------------------------ time
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

    def _arm(self, ts: int) -> None:
        """The first moment the engine knows the time: sensors not heard of yet are due from then on."""
        self._armed = ts
        for s in self._sensors:
            if s is not None and s.last_seen is None:
                s.last_seen = ts

    def tick(self, now_ms: int | None = None) -> list[AlarmEvent]:
        """What happens without readings: no data, expired delays, ended averaging periods, shelving expiry."""
        now = self.clock.now_ms() if now_ms is None else now_ms
        out: list[AlarmEvent] = []
        if self._armed is None:
            if now <= 0:
                return out
            self._arm(now)
        self._due(now, out)
        for s in self._sensors:
            if s is None:
                continue
            if not s.nd.active and s.last_seen is not None and now - s.last_seen > s.nodata_ms:
                s.nd.value = None
                self._eval(s.nd, True, False, s.last_seen + s.nodata_ms, out, texts.no_data(s.nodata_ms // 1000))
            if s.bad_since is not None and not s.bq.active and now - s.bad_since > s.bad_ms:
                self._bad_quality(s, s.bad_since + s.bad_ms, out)
            self._periods_ended(s, now, out)
        self._shelving_expired(now, out)
        return out

    # ------------------------------------------------------------------ start
    def needs_history(self) -> dict[str, int]:
        """Sensor key -> how far back (ms before now) its averaging windows reach: what to rebuild at start."""
        return {s.ref.key: back for s in self._sensors if s is not None and (back := self._window_reach(s))}

    def warm(self, r: Reading) -> None:
        """Feed a historical reading into the averaging windows only: no rule is evaluated, no event made.

        At a first start the rolling 5-minute window and the clock-hour/day/month buckets are rebuilt
        from InfluxDB history this way, so that the first averages judged are complete."""
        s = self._sensors[r.ref.index]
        if (s is None or not is_valid(r.quality, r.flag) or not s.lo <= r.value <= s.hi or r.ts_ms <= s.last_ts
                or (r.ts_ms > self._now_seen and self._ahead(r.ts_ms))):
            return
        self._warm_windows(s, r.value, r.ts_ms)


__all__ = ["LIMIT_KEYS", "Alarm", "Engine"]
