"""The HJ 212 part of the contract in code (CONTRACT §2, §3, §7): dead-letter reasons, data flags, the
dead-letter topic of a data logger, and the points that a logger's data become.

Beside :mod:`smartpark.wire`, which stays the MQTT decoder: an HJ 212 reading is validated by that same
:class:`~smartpark.wire.Decoder`, and only the ``flag`` field and the ``hj212`` measurement are added here.
"""

from __future__ import annotations

from collections.abc import Mapping

from .lineproto import escape_string_field, format_float, tag_prefix
from .park import SensorRef
from .schema import (
    BAD,
    FLAG_QUALITY,
    FLAGS,
    GOOD,
    HJ212_AUTH,
    HJ212_CRC,
    HJ212_DECRYPT,
    HJ212_FRAME,
    HJ212_REASONS,
    UNKNOWN_MN,
)
from .schema import HJ212 as HJ212_MEASUREMENT
from .topics import hj212_topic as dead_letter_topic

__all__ = ["FLAGS", "HJ212_AUTH", "HJ212_CRC", "HJ212_DECRYPT", "HJ212_FRAME", "HJ212_MEASUREMENT", "HJ212_REASONS",
           "PERIOD_CNS", "PERIOD_FIELDS", "UNKNOWN_MN", "dead_letter_topic", "flag_quality",
           "period_line", "with_flag"]

# period records (CONTRACT §3: the ``cn`` tag)
PERIOD_CNS = {"2051": "minute", "2061": "hour", "2031": "day"}
PERIOD_FIELDS = ("avg", "min", "max", "cou")


def flag_quality(flag: str | None) -> str:
    """``N`` (or no flag) -> ``good``, ``S`` -> ``uncertain``, any other -> ``bad`` (CONTRACT §2)."""
    return GOOD if flag is None else FLAG_QUALITY.get(flag, BAD)


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
