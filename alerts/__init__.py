"""The alarm engine (issue 5): ISA-18.2 alarms on the live MQTT stream, notifications, operator API.

A reading's path: MQTT ``park/#`` -> :class:`smartpark.wire.Decoder` -> :class:`Engine` (pure, time
injected) -> events -> journal (durable) -> retained MQTT alarm topics, the ``alarm`` measurement and the
notification pipeline (:mod:`alerts.notify`). :class:`AlertService` wires them; ``smartpark alerts`` is
its command line.
"""

from .clock import Clock, EventClock, ManualClock, WallClock
from .engine import Alarm, Engine
from .events import AlarmEvent
from .rules import RuleSet, load_rules, parse_rules

__all__ = ["Alarm", "AlarmEvent", "Clock", "Engine", "EventClock", "ManualClock", "RuleSet", "WallClock",
           "load_rules", "parse_rules"]
