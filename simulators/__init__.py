"""Simulators: realistic park feeds, incident scenarios with golden alarms, record and replay.

The public API other parts rely on (alerts: golden scenario tests; dashboards: backfill; the demo):

* :class:`Scenario` (with :class:`Expectation`, :class:`Forbid`, :class:`Check`), :func:`load_scenario`,
  :func:`list_scenarios` — the shipped incidents in ``simulators/scenarios/*.yaml``;
* :class:`Simulator` -> :meth:`Simulator.messages` (:class:`Message`: ts_ms, topic, payload);
* :func:`publish` (MQTT, paced or as fast as possible), :func:`backfill` (InfluxDB history),
  :func:`record` and :func:`replay` (capture and replay ``park/#`` traffic).
"""

from .io import backfill, publish, read_recording, record, replay
from .scenario import Check, Event, Expectation, Forbid, Scenario, list_scenarios, load_scenario, parse_scenario
from .shapes import SHAPES
from .simulator import Message, Simulator

__all__ = [
    "SHAPES",
    "Check",
    "Event",
    "Expectation",
    "Forbid",
    "Message",
    "Scenario",
    "Simulator",
    "backfill",
    "list_scenarios",
    "load_scenario",
    "parse_scenario",
    "publish",
    "read_recording",
    "record",
    "replay",
]
