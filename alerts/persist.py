"""The engine's state as JSON-able data, for the snapshot and the journal of :mod:`alerts.store`: what
:class:`alerts.Engine` dumps and loads (alarm flags, per-sensor windows and averaging buckets, plant states).
The layout is that of the snapshots already on disk: a change here must still read them."""

from __future__ import annotations

from collections import deque
from typing import Any

from smartpark.park import Park

from .alarm import Alarm, PlantStateRt
from .averages import Buckets
from .clock import Clock, EventClock
from .sensor import SensorState


class Persistence:
    """``dump``/``load`` of the whole engine, ``apply`` of one alarm's flags (journal replay), ``resync``."""

    park: Park
    clock: Clock
    alarms: dict[str, Alarm]
    _sensors: list[SensorState | None]
    _latest: list[float | None]
    _states: dict[str, PlantStateRt]
    _pending: set[Alarm]
    _shelved: set[Alarm]
    _seq: int
    _armed: int | None

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
                                  s.exc_count, s.exc_day_end, s.bucket.dump() if s.bucket is not None else None, s.hot,
                                  s.bad_since, list(s.recent)]
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
            (s.last_ts, s.last_seen, s.stuck_v, s.stuck_since, roc, roll, s.exc_count, s.exc_day_end, bucket,
             s.hot) = sd[:10]
            s.bucket = Buckets.load(bucket)
            if len(sd) >= 12:  # snapshots of earlier versions have neither
                s.bad_since = sd[10]
                s.recent.extend(int(t) for t in sd[11])
            s.roc_dq = deque((int(t), float(v)) for t, v in roc)
            s.roll_dq = deque((int(t), float(v)) for t, v in roll)
            s.roll_sum = sum(v for _, v in s.roll_dq)
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
