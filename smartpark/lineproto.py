r"""InfluxDB line protocol encoding and InfluxQL quoting (CONTRACT §3).

Escaping follows InfluxDB 1.x's parser, checked against a real influxd: measurements escape commas and
spaces; tag keys, tag values and field keys escape commas, equals signs and spaces, while a backslash
stays literal there; string field values escape double quotes and backslashes and may hold newlines.

Line protocol cannot carry a newline in a measurement, tag key or tag value, nor one that *ends* in a
backslash (the parser takes the following separator as escaped), nor a backslash right before a comma,
equals sign or space: the tag parser reads ``a\\ b`` back as ``a\ b``, but InfluxDB's line splitter sees an
escaped backslash and an unescaped space, so a newline in a string field of the same line then breaks the
write (found by the property test against influxd 1.6). :func:`escape_tag` refuses all of those with
``ValueError`` rather than store something else. Every tag smartpark writes is a park-model id, a rule
name or a dead-letter reason, none of which can contain them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import orjson

_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ "})
_TAG = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_STRING = str.maketrans({'"': r"\"", "\\": "\\\\"})

FieldValue = float | int | str | bool


_UNSAFE = re.compile(r"[\n\r]|\\$|\\[,= ]")


def _representable(text: str) -> None:
    if _UNSAFE.search(text):
        raise ValueError(f"line protocol cannot carry {text!r} as a name or tag "
                         "(newline, trailing backslash, or backslash before , = or space)")


def escape_measurement(name: str) -> str:
    _representable(name)
    return name.translate(_MEASUREMENT)


def escape_tag(text: str) -> str:
    """Escape a tag key, tag value or field key."""
    _representable(text)
    return text.translate(_TAG)


def escape_string_field(text: str) -> str:
    return '"' + text.translate(_STRING) + '"'


def format_float(value: float) -> str:
    """Shortest text that reads back as the same float; integral floats keep a '.0' so the field type stays float.

    orjson's Ryū formatting rather than ``repr``: the same shortest round trip, written 4x faster
    (bench/bench_wire.py), and InfluxDB reads both alike (tests/test_lineproto.py writes extremes and reads them
    back). Only the exponent is spelled differently: ``1e-7`` for ``1e-07``.
    """
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"line protocol cannot carry {value!r}")
    return orjson.dumps(value).decode()


def format_field(value: FieldValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return format_float(value)
    return escape_string_field(str(value))


def tag_prefix(measurement: str, tags: Mapping[str, str]) -> str:
    """``measurement,k=v,...`` with tags sorted by key (what InfluxDB prefers) and empty values left out."""
    parts = [escape_measurement(measurement)]
    for key in sorted(tags):
        value = tags[key]
        if value is None or value == "":
            continue  # InfluxDB rejects empty tag values; absent is the same to a query
        parts.append(f"{escape_tag(key)}={escape_tag(str(value))}")
    return ",".join(parts)


def encode_line(measurement: str, tags: Mapping[str, str], fields: Mapping[str, FieldValue | None],
                ts: int | None = None) -> str:
    """One point; ``ts`` in the precision the batch is written with. Fields whose value is None are left out."""
    body = ",".join(f"{escape_tag(k)}={format_field(v)}" for k, v in fields.items() if v is not None)
    if not body:
        raise ValueError("a point needs at least one field")
    line = f"{tag_prefix(measurement, tags)} {body}"
    return line if ts is None else f"{line} {int(ts)}"


# ------------------------------------------------------------------ InfluxQL

def quote_ident(name: str) -> str:
    """An InfluxQL identifier in double quotes."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_literal(text: str) -> str:
    """An InfluxQL string literal in single quotes."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"
