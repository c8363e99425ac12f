"""The alarm model and its lifecycle (ISA-18.2): one :class:`Alarm` per (sensor, rule), its state derived from
four flags (active, acked, shelved, out of service) rather than stored; the transitions (raise, clear, the
one on/off delay mechanism, suppression by design) and the operator actions (acknowledge, shelve, unshelve,
out of service, in service) as :class:`Lifecycle`, the part of :class:`alerts.Engine` that makes events.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from smartpark.errors import UsageError
from smartpark.park import Regulatory, SensorRef
from smartpark.schema import PRIORITIES, regulatory_rule

from . import texts
from .clock import Clock
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
)
from .rules import CustomRule, PlantState, RuleSet


class UnknownAlarm(UsageError):
    """An operator action on an alarm id the engine does not know (the API answers 404)."""


REG_5MIN = regulatory_rule("5min")  # GB 18484's five-minute mean: its excursions are counted

#: a rule's detail for the message: a text, or what makes it (formatted only when an event is made)
Detail = str | Callable[[], str]


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
        self.label = (texts.label(rule, custom.spec.message, custom.spec.message_zh, custom=True) if custom
                      else texts.label(rule))
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


class Lifecycle:
    """Transitions and operator actions over :attr:`alarms`; every event is made by :meth:`_event`."""

    alarms: dict[str, Alarm]
    rules: RuleSet
    clock: Clock
    _pending: set[Alarm]   # alarms whose on or off delay runs
    _shelved: set[Alarm]
    _seq: int              # number of the last event made

    def _event(self, a: Alarm, kind: str, ts: int, message: str, operator: str | None = None) -> AlarmEvent:
        self._seq += 1
        a.last_ts = ts
        return AlarmEvent(a.id, a.site, a.asset, a.sensor, a.rule, a.priority, kind, a.state,
                          a.value, a.limit, ts, message, operator, self._seq)

    @staticmethod
    def _message(a: Alarm, kind: str, detail: Detail) -> str:
        return texts.alarm_message(a, kind, detail if isinstance(detail, str) else detail())

    def _excursion(self, a: Alarm, ts: int, out: list[AlarmEvent]) -> None:
        """A raised 5-minute mean counts toward the day's excursions (defined with the averages)."""
        raise NotImplementedError

    def _raise(self, a: Alarm, ts: int, out: list[AlarmEvent], detail: Detail = "") -> None:
        a.active = True
        a.pending = None
        self._pending.discard(a)
        if a.annunciated:
            a.acked = False
            out.append(self._event(a, RAISED, ts, self._message(a, RAISED, detail)))
        else:
            a.last_ts = ts
        if a.rule == REG_5MIN:  # a legal excursion counts whether or not an operator shelved its alarm
            self._excursion(a, ts, out)

    def _clear(self, a: Alarm, ts: int, out: list[AlarmEvent], detail: Detail = "") -> None:
        a.active = False
        a.pending = None
        self._pending.discard(a)
        if not a.annunciated:
            a.last_ts = ts
            return
        out.append(self._event(a, CLEARED, ts, self._message(a, CLEARED, detail)))

    def _eval(self, a: Alarm, on: bool, off: bool, ts: int, out: list[AlarmEvent], detail: Detail = "") -> None:
        """One step of a rule's condition, with on/off delays and suppression by design."""
        if a.suppressors:
            for st in a.suppressors:
                if st.active:
                    on, off = False, True
                    detail = texts.suppressed(st.name)
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

    def _due(self, now: int, out: list[AlarmEvent]) -> None:
        """The on and off delays that expired by ``now`` without a reading."""
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

    def _shelving_expired(self, now: int, out: list[AlarmEvent]) -> None:
        for a in sorted(self._shelved, key=lambda x: x.shelved_until or 0):
            if a.shelved_until is not None and now >= a.shelved_until:
                out.append(self._unshelve(a, a.shelved_until, "system", texts.SHELVING_EXPIRED))

    # ------------------------------------------------------------------ operators (ISA-18.2)
    def get(self, alarm_id: str) -> Alarm:
        a = self.alarms.get(alarm_id)
        if a is None:
            raise UnknownAlarm(f"unknown alarm id {alarm_id!r} (site/asset/sensor/rule)")
        return a

    def _now(self, now_ms: int | None) -> int:
        return self.clock.now_ms() if now_ms is None else now_ms

    def ack(self, alarm_id: str, operator: str, comment: str | None = None,
            now_ms: int | None = None) -> AlarmEvent:
        a = self.get(alarm_id)
        if a.state not in (UNACK, RTNUN):
            raise UsageError(f"alarm {alarm_id} is {a.state}: nothing to acknowledge")
        a.acked = True
        return self._event(a, ACKED_EV, self._now(now_ms), texts.audit("acknowledged", operator, comment), operator)

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
        return self._event(a, SHELVED, now, texts.audit(f"shelved for {duration_s / 3600:g} h", operator, comment),
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
        return self._event(a, UNSHELVED, ts, texts.audit("unshelved", operator, comment), operator)

    def out_of_service(self, alarm_id: str, operator: str, comment: str | None,
                       now_ms: int | None = None) -> AlarmEvent:
        a = self.get(alarm_id)
        if not comment:
            raise UsageError("taking an alarm out of service needs a reason (--comment)")
        a.oos = True
        a.shelved_until = None
        self._shelved.discard(a)
        return self._event(a, OUT_OF_SERVICE, self._now(now_ms), texts.audit("out of service", operator, comment),
                           operator)

    def in_service(self, alarm_id: str, operator: str, comment: str | None = None,
                   now_ms: int | None = None) -> AlarmEvent:
        a = self.get(alarm_id)
        if not a.oos:
            raise UsageError(f"alarm {alarm_id} is in service")
        a.oos = False
        a.acked = not a.active
        return self._event(a, IN_SERVICE, self._now(now_ms), texts.audit("in service", operator, comment), operator)

    # ------------------------------------------------------------------ views
    def active(self) -> list[dict[str, Any]]:
        """Alarms that are not NORM, most important first: what an operator's alarm list shows."""
        order = {p: i for i, p in enumerate(PRIORITIES)}
        rows = [a for a in self.alarms.values() if a.state != NORM]
        rows.sort(key=lambda a: (order.get(a.priority, 3), -(a.last_ts or 0)))
        return [{"id": a.id, "site": a.site, "asset": a.asset, "sensor": a.sensor, "rule": a.rule,
                 "priority": a.priority, "state": a.state, "value": a.value, "limit": a.limit, "since": a.last_ts,
                 "shelved_until": a.shelved_until,
                 "message": texts.alarm_message(a, RAISED, "") if a.active else ""}
                for a in rows]

    def unacked_events(self) -> list[AlarmEvent]:
        """A ``raised`` event for every alarm that is active and unacknowledged (to resume repeats)."""
        return [AlarmEvent(a.id, a.site, a.asset, a.sensor, a.rule, a.priority, RAISED, a.state, a.value, a.limit,
                           a.last_ts or 0, texts.alarm_message(a, RAISED, "")) for a in self.alarms.values()
                if a.state == UNACK]
