"""The HJ 212 part of the contract in code (CONTRACT §2, §3, §7): dead-letter reasons, data flags, the
dead-letter topic of a data logger, and the points that a logger's data become.

Beside :mod:`smartpark.wire`, which stays the MQTT decoder: an HJ 212 reading is validated by that same
:class:`~smartpark.wire.Decoder`, and only the ``flag`` field and the ``hj212`` measurement are added here.
"""

from __future__ import annotations

from collections.abc import Mapping

from .lineproto import escape_string_field, format_float, tag_prefix
from .park import SensorRef

# Dead-letter reasons of data-logger packets (CONTRACT §3, §7)
HJ212_FRAME = "hj212_frame"
HJ212_CRC = "hj212_crc"
HJ212_AUTH = "hj212_auth"
HJ212_DECRYPT = "hj212_decrypt"
UNKNOWN_MN = "unknown_mn"
HJ212_REASONS = (HJ212_FRAME, HJ212_CRC, HJ212_AUTH, HJ212_DECRYPT, UNKNOWN_MN)

HJ212_MEASUREMENT = "hj212"
TOPIC_ROOT = "hj212"

# HJ 212 data flags (CONTRACT §2) and the quality each implies when the message gives none
FLAGS = {"N": "normal", "F": "stopped", "M": "maintenance", "S": "manual entry", "D": "fault",
         "C": "calibration", "T": "over the measuring range", "B": "communication fault"}

# period records (CONTRACT §3: the ``cn`` tag)
PERIOD_CNS = {"2051": "minute", "2061": "hour", "2031": "day"}
PERIOD_FIELDS = ("avg", "min", "max", "cou")


def dead_letter_topic(mn: str | None) -> str:
    """``hj212/<MN>``, or ``hj212/-`` when the packet has no readable MN."""
    return f"{TOPIC_ROOT}/{mn or '-'}"


def flag_quality(flag: str | None) -> str:
    """``N`` (or no flag) -> ``good``, ``S`` -> ``uncertain``, any other -> ``bad`` (CONTRACT §2)."""
    if flag is None or flag == "N":
        return "good"
    return "uncertain" if flag == "S" else "bad"


def with_flag(line: str, flag: str | None) -> str:
    """A ``reading`` line with its ``flag`` field added (written only when present and not ``N``)."""
    if flag is None or flag == "N":
        return line
    head, ts = line.rsplit(" ", 1)
    return f"{head},flag={escape_string_field(flag)} {ts}"


def period_line(ref: SensorRef, cn: str, values: Mapping[str, float], flag: str | None, ts_ms: int) -> str:
    """One ``hj212`` point (CONTRACT §3) at the record's ``DataTime``, millisecond precision."""
    tags = {"site": ref.site, "asset": ref.asset, "sensor": ref.sensor.id, "cn": cn}
    body = ",".join(f"{k}={format_float(values[k])}" for k in PERIOD_FIELDS if k in values)
    if flag is not None and flag != "N":
        body += f",flag={escape_string_field(flag)}"
    return f"{tag_prefix(HJ212_MEASUREMENT, tags)} {body} {ts_ms}"
