"""Points: what accepted readings, dead letters and HJ 212 records become in InfluxDB (CONTRACT §3).

The second stage of the one pipeline (after :mod:`smartpark.decode`): line protocol at millisecond precision
for ``reading`` and ``hj212``, nanosecond event points for ``dead_letter``. The collector's fused path
(:meth:`smartpark.decode.Decoder.lines`) builds the same ``reading`` lines from :func:`reading_prefix`;
tests/test_wire.py checks that both agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from .lineproto import escape_string_field, format_float, tag_prefix
from .park import Park, SensorRef
from .schema import BAD, DEAD_LETTER, DEAD_LETTER_PAYLOAD_BYTES, FLAG_QUALITY, GOOD, HJ212, READING

if TYPE_CHECKING:
    from .decode import Reading, Rejected


def reading_prefix(ref: SensorRef) -> str:
    """A sensor's ``reading`` point up to its value (tags sorted, as InfluxDB prefers)."""
    return tag_prefix(READING, {"site": ref.site, "asset": ref.asset, "sensor": ref.sensor.id}) + " value="


def reading_line(prefix: str, r: Reading) -> str:
    """One reading at millisecond precision; ``quality`` is written only when it is not ``good``, ``flag``
    only when there is one other than ``N`` (CONTRACT §3)."""
    _, v, ts, quality, flag = r
    text = format_float(v)
    fields = "" if quality == "good" else f',quality="{quality}"'
    if flag is not None and flag != "N":
        fields += f',flag="{flag}"'
    return f"{prefix}{text}{fields} {ts}"


class PointEncoder:
    """Readings -> line protocol at millisecond precision, with the tag prefix of each sensor built once."""

    def __init__(self, park: Park) -> None:
        self._prefix = [reading_prefix(r) for r in park.sensors()]

    def reading(self, r: Reading) -> str:
        return reading_line(self._prefix[r.ref.index], r)


class UniqueNs:
    """Nanosecond timestamps kept unique per series, so that event points never overwrite each other."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def next(self, series: str, ns: int) -> int:
        last = self._last.get(series)
        if last is not None and ns <= last:
            ns = last + 1
        self._last[series] = ns
        if len(self._last) > 100_000:  # bounded: old series only need uniqueness against recent events
            self._last.clear()
            self._last[series] = ns
        return ns


def dead_letter_line(rej: Rejected, ts_ns: int) -> str:
    """One ``dead_letter`` point at nanosecond precision; the payload cut to its first bytes (CONTRACT §3)."""
    payload = rej.payload[:DEAD_LETTER_PAYLOAD_BYTES].decode("utf-8", errors="replace")
    return (f"{tag_prefix(DEAD_LETTER, {'reason': rej.reason})} topic={escape_string_field(rej.topic)},"
            f"payload={escape_string_field(payload)},detail={escape_string_field(rej.detail)} {ts_ns}")


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
    return f"{tag_prefix(HJ212, tags)} {body} {ts_ms}"
