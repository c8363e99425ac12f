"""The InfluxDB schema and the fixed vocabularies of the contract (CONTRACT §3, §5, §9, §10) in code.

One name for each thing that other programs read: measurements with their tags and fields, the retention
policies, the dead-letter reasons, reading qualities and HJ 212 flags, the ISA-18.2 alarm states, the alarm
events, priorities and rule names, the notification reasons and outcomes, and the limits on a payload. Every
module that writes a point, builds an InfluxQL query or compares a state imports the name from here, so the
vocabulary cannot drift between the collector, the engine, the console, the dashboards and the reports.
:func:`vocabulary` is the same as JSON for the operator console's JavaScript. This module imports nothing.
"""

from __future__ import annotations

from typing import Any

# --------------------------------------------------------------------------- measurements (CONTRACT §3, §10)
READING = "reading"
HJ212 = "hj212"
NOTIFICATION = "notification"
ALARM = "alarm"
DEAD_LETTER = "dead_letter"
COLLECTOR = "collector"
READING_5M = "reading_5m"
READING_1H = "reading_1h"
READING_1D = "reading_1d"
ROLLUPS = {"5m": READING_5M, "1h": READING_1H, "1d": READING_1D}  # period -> measurement
MEASUREMENTS = (READING, HJ212, NOTIFICATION, ALARM, DEAD_LETTER, COLLECTOR, READING_5M, READING_1H, READING_1D)

# retention policies (CONTRACT §10)
RAW_RP = "raw"
ROLLUP_RP = "rollup"

# tags of each measurement
SENSOR_TAGS = ("site", "asset", "sensor")
TAGS = {
    READING: SENSOR_TAGS,
    HJ212: (*SENSOR_TAGS, "cn"),
    NOTIFICATION: ("route", "reason"),
    ALARM: (*SENSOR_TAGS, "rule", "priority"),
    DEAD_LETTER: ("reason",),
    COLLECTOR: ("instance",),
    **{m: SENSOR_TAGS for m in ROLLUPS.values()},
}
# fields of each measurement
COLLECTOR_COUNTERS = ("received", "written", "invalid", "spooled", "retries")
ROLLUP_FIELDS = ("mean", "min", "max", "count", "good")
FIELDS = {
    READING: ("value", "quality", "flag"),
    HJ212: ("avg", "min", "max", "cou", "flag"),
    NOTIFICATION: ("id", "alarm", "status", "detail", "attempts"),
    ALARM: ("state", "event", "message", "operator", "value", "limit"),
    DEAD_LETTER: ("topic", "payload", "detail"),
    COLLECTOR: COLLECTOR_COUNTERS,
    **{m: ROLLUP_FIELDS for m in ROLLUPS.values()},
}

# --------------------------------------------------------------------------- limits
MAX_PAYLOAD = 64 * 1024  # a larger MQTT payload is dead-lettered as too_large
DEAD_LETTER_PAYLOAD_BYTES = 1024  # what a dead letter keeps of the payload

# --------------------------------------------------------------------------- readings (CONTRACT §2)
GOOD, UNCERTAIN, BAD = "good", "uncertain", "bad"
QUALITIES = (GOOD, UNCERTAIN, BAD)
# HJ 212 data flags and what each means
FLAGS = {"N": "normal", "F": "stopped", "M": "maintenance", "S": "manual entry", "D": "fault",
         "C": "calibration", "T": "over the measuring range", "B": "communication fault"}
# the quality a reading has when it names none but gives a flag
FLAG_QUALITY = {flag: GOOD if flag == "N" else UNCERTAIN if flag == "S" else BAD for flag in FLAGS}

# --------------------------------------------------------------------------- dead-letter reasons (CONTRACT §3)
BAD_JSON = "bad_json"
BAD_VALUE = "bad_value"
BAD_TS = "bad_ts"
UNKNOWN_SENSOR = "unknown_sensor"
OUT_OF_RANGE = "out_of_range"
TOO_LARGE = "too_large"
REASONS = (BAD_JSON, BAD_VALUE, BAD_TS, UNKNOWN_SENSOR, OUT_OF_RANGE, TOO_LARGE)
# of data-logger packets (CONTRACT §7)
HJ212_FRAME = "hj212_frame"
HJ212_CRC = "hj212_crc"
HJ212_AUTH = "hj212_auth"
HJ212_DECRYPT = "hj212_decrypt"
UNKNOWN_MN = "unknown_mn"
HJ212_REASONS = (HJ212_FRAME, HJ212_CRC, HJ212_AUTH, HJ212_DECRYPT, UNKNOWN_MN)

# --------------------------------------------------------------------------- alarms (CONTRACT §5)
# ISA-18.2 states
NORM, UNACK, ACKED, RTNUN, SHLVD, OOSRV = "NORM", "UNACK", "ACKED", "RTNUN", "SHLVD", "OOSRV"
STATES = (NORM, UNACK, ACKED, RTNUN, SHLVD, OOSRV)
# what each state means, for clients that name states by their meaning (the console's JavaScript)
STATE_ROLES = {"normal": NORM, "unacked": UNACK, "acked": ACKED, "returned": RTNUN, "shelved": SHLVD,
               "out_of_service": OOSRV}
ACTIVE_STATES = (UNACK, ACKED, RTNUN)  # still need the operator: the active alarm list
STANDING_STATES = (UNACK, ACKED)  # in alarm: not yet returned to normal

# event kinds
RAISED, CLEARED, ACKED_EV, SHELVED, UNSHELVED, OUT_OF_SERVICE, IN_SERVICE = (
    "raised", "cleared", "acked", "shelved", "unshelved", "out_of_service", "in_service")
EVENTS = (RAISED, CLEARED, ACKED_EV, SHELVED, UNSHELVED, OUT_OF_SERVICE, IN_SERVICE)

HIGH, MEDIUM, LOW = "high", "medium", "low"
PRIORITIES = (HIGH, MEDIUM, LOW)

# rule names
LL, L, H, HH = "ll", "l", "h", "hh"
LIMIT_RULES = (LL, L, H, HH)
ROC = "roc"
NO_DATA = "no_data"
STUCK = "stuck"
BAD_QUALITY = "bad_quality"
HEALTH_RULES = (NO_DATA, STUCK, OUT_OF_RANGE, BAD_QUALITY)  # sensor health: low priority by default
REG_PREFIX = "reg_"  # regulatory rules: reg_<averaging>
REG_5MIN_EXCURSIONS = "reg_5min_excursions"
RESERVED_RULES = frozenset({*LIMIT_RULES, ROC, *HEALTH_RULES, REG_5MIN_EXCURSIONS})  # no custom rule takes these


def regulatory_rule(averaging: str) -> str:
    """``reg_24h`` of the averaging ``24h``."""
    return f"{REG_PREFIX}{averaging}"


def is_regulatory(rule: str) -> bool:
    return rule.startswith(REG_PREFIX)


# --------------------------------------------------------------------------- notifications (CONTRACT §9)
EVENT, REPEAT, ESCALATION = "event", "repeat", "escalation"
NOTIFICATION_REASONS = (EVENT, REPEAT, ESCALATION)
DELIVERED, EXPIRED = "delivered", "expired"


def vocabulary() -> dict[str, Any]:
    """The vocabularies as JSON, for clients that cannot import this module (the console's JavaScript)."""
    return {"states": list(STATES), "state": dict(STATE_ROLES), "active_states": list(ACTIVE_STATES),
            "events": list(EVENTS),
            "priorities": list(PRIORITIES), "qualities": list(QUALITIES), "flags": dict(FLAGS),
            "reasons": [*REASONS, *HJ212_REASONS], "measurements": list(MEASUREMENTS)}
