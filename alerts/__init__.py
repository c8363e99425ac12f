"""The alarm engine: ISA-18.2 alarms on the live MQTT stream, notifications, operator API.

A reading's path: MQTT ``park/#`` -> :class:`smartpark.decode.Decoder` -> :class:`Engine` (pure, time
injected) -> events -> journal (durable) -> retained MQTT alarm topics, the ``alarm`` measurement and the
notification pipeline (:mod:`alerts.notify`). :class:`AlertService` wires them; ``smartpark alerts`` is
its command line.
"""

from .alarm import Alarm
from .clock import CLOCKS, Clock, EventClock, ManualClock, WallClock
from .engine import Engine
from .events import AlarmEvent, default_priority
from .notify import NOTIFIERS, Dispatcher, Notification, Notifier, Outbox, Route, Sender
from .report import kpis
from .rules import RuleSet, compile_expression, load_rules, parse_rules
from .service import AlertService, api_token

__all__ = ["CLOCKS", "NOTIFIERS", "Alarm", "AlarmEvent", "AlertService", "Clock", "Dispatcher", "Engine",
           "EventClock", "ManualClock", "Notification", "Notifier", "Outbox", "Route", "RuleSet", "Sender", "WallClock",
           "api_token", "compile_expression", "default_priority", "kpis", "load_rules", "parse_rules"]
