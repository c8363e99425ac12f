"""Alarm events (CONTRACT §5) and the ISA-18.2 states they carry.

One :class:`AlarmEvent` is the same object in a webhook body, on the retained MQTT alarm topic and as a
point of the ``alarm`` measurement, so that every consumer sees one truth.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from smartpark.lineproto import encode_line
from smartpark.schema import (  # the states, events and priorities, under the names the engine uses
    ACKED,
    ACKED_EV,
    ALARM,
    CLEARED,
    EVENTS,
    HEALTH_RULES,
    HH,
    HIGH,
    IN_SERVICE,
    LL,
    LOW,
    MEDIUM,
    NORM,
    OOSRV,
    OUT_OF_SERVICE,
    PRIORITIES,
    RAISED,
    RTNUN,
    SHELVED,
    SHLVD,
    STATES,
    UNACK,
    UNSHELVED,
    is_regulatory,
)

__all__ = ["ACKED", "ACKED_EV", "CLEARED", "EVENTS", "HEALTH_RULES", "IN_SERVICE", "NORM", "OOSRV", "OUT_OF_SERVICE",
           "PRIORITIES", "RAISED", "RTNUN", "SHELVED", "SHLVD", "STATES", "UNACK", "UNSHELVED", "AlarmEvent",
           "default_priority"]


def default_priority(rule: str) -> str:
    """CONTRACT §5: high for hh/ll/regulatory, medium for h/l, low for sensor health."""
    if rule in (HH, LL) or is_regulatory(rule):
        return HIGH
    if rule in HEALTH_RULES:
        return LOW
    return MEDIUM


@dataclass(slots=True)
class AlarmEvent:
    """One alarm event. ``seq`` is internal: it makes the InfluxDB timestamp unique and re-writable."""

    id: str
    site: str
    asset: str
    sensor: str
    rule: str
    priority: str
    event: str
    state: str
    value: float | None
    limit: float | None
    ts: int
    message: str
    operator: str | None = None
    seq: int = field(default=0, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "site": self.site, "asset": self.asset, "sensor": self.sensor,
                "rule": self.rule, "priority": self.priority, "event": self.event, "state": self.state,
                "value": self.value, "limit": self.limit, "ts": self.ts, "message": self.message,
                "operator": self.operator}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any], seq: int = 0) -> AlarmEvent:
        return cls(d["id"], d["site"], d["asset"], d["sensor"], d["rule"], d["priority"], d["event"],
                   d["state"], d.get("value"), d.get("limit"), int(d["ts"]), d.get("message", ""),
                   d.get("operator"), seq)

    @property
    def ts_ns(self) -> int:
        """Event time in ns, unique per engine (``seq`` modulo 10^6 fills the sub-millisecond digits), so that a
        re-write after a restart lands on the same point instead of adding a second one."""
        return self.ts * 1_000_000 + self.seq % 1_000_000

    def to_line(self) -> str:
        """The point of the ``alarm`` measurement (CONTRACT §3), nanosecond precision."""
        tags = {"site": self.site, "asset": self.asset, "sensor": self.sensor, "rule": self.rule,
                "priority": self.priority}
        fields: dict[str, Any] = {"state": self.state, "event": self.event, "message": self.message,
                                  "operator": self.operator}
        if self.value is not None:
            fields["value"] = float(self.value)
        if self.limit is not None:
            fields["limit"] = float(self.limit)
        return encode_line(ALARM, tags, fields, self.ts_ns)
