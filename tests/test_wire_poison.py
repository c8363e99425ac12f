"""Poison payloads: nothing a device publishes can raise out of the decoder (CONTRACT §2, §3).

Every message becomes readings and dead letters with a contract reason, whatever its nesting, size, numbers,
keys or encoding; the fast path (:meth:`Decoder.lines`) agrees with :meth:`Decoder.decode`. The HJ 212 flags
of CONTRACT v2 are decoded here too.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smartpark.decode import Decoder
from smartpark.park import load_park
from smartpark.points import PointEncoder, dead_letter_line
from smartpark.schema import REASONS

PARK = load_park()
DEC = Decoder(PARK)
ENC = PointEncoder(PARK)
NOW = 1_764_201_600_000
COD = "park/wwtp/effluent/cod"
EFFLUENT = "park/wwtp/effluent"
TOPICS = [COD, EFFLUENT, "park/wwtp/effluent/nope", "park/wwtp", "park/alarms/wwtp/effluent/cod/hh", "x"]
SLOTS = ("value", "ts", "quality", "flag", "values", "flags", "entry", "entry_ts", "entry_quality", "top")


def nested(depth: int, inner: str = "1", kind: str = "[") -> str:
    """``depth`` levels of lists (or objects) around ``inner``: 2 KB of text can hold 1,000 levels."""
    if kind == "[":
        return "[" * depth + inner + "]" * depth
    return '{"a":' * depth + inner + "}" * depth


# leaves that have broken JSON decoders: huge integers, 1e400, NaN, lone surrogates, odd strings
POISON_LEAF = st.one_of(
    st.integers(min_value=-10**400, max_value=10**400).map(str),
    st.sampled_from(["1e400", "-1e400", "NaN", "Infinity", "-Infinity", "1e-400", "-0", "9" * 5000,
                     '"\\ud800"', '"\\udfff\\ud800"', '"\\u0000"', "true", "null", '""', "{}", "[]",
                     '"2025-11-27T00:00:00+08:00"', '"2025-W48-4T00:00:00+00:00"', '"N"', '"X"', '"bad"']),
    st.floats().map(lambda f: json.dumps(f, allow_nan=True)),
    st.text(max_size=20).map(json.dumps),
    st.integers(1, 3000).map(nested),
    st.integers(1, 3000).map(lambda d: nested(d, "1", "{")),
)
JSON_VALUE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
              st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=10)),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
).map(lambda v: json.dumps(v, allow_nan=True))


def document(slot: str, leaf: str, duplicate: bool) -> str:
    """A reading or snapshot with ``leaf`` put in ``slot``; ``duplicate`` names one key twice."""
    dup = ', "value": 1.5' if duplicate else ""
    if slot in ("value", "ts", "quality", "flag"):
        fields = {"value": "41.7", "ts": str(NOW), "quality": '"good"'} | {slot: leaf}
        return "{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + dup + "}"
    if slot == "values":
        return f'{{"ts": {NOW}, "values": ' + leaf + "}"
    if slot == "flags":
        return f'{{"ts": {NOW}, "values": {{"cod": 41.7, "ph": 7.1}}, "flags": ' + leaf + dup + "}"
    if slot == "entry":
        return f'{{"ts": {NOW}, "values": {{"cod": ' + leaf + ', "ph": 7.1' + dup.replace("value", "cod") + "}}"
    if slot == "entry_ts":
        return '{"values": {"cod": {"value": 41.7, "ts": ' + leaf + '}, "ph": 7.1}}'
    if slot == "entry_quality":
        return '{"values": {"cod": 41.7, "ph": 7.1}, "quality": {"cod": ' + leaf + "}}"
    return leaf


POISON = st.one_of(
    st.builds(lambda slot, leaf, dup: document(slot, leaf, dup).encode("utf-8", "surrogatepass"),
              st.sampled_from(SLOTS), st.one_of(POISON_LEAF, JSON_VALUE), st.booleans()),
    st.binary(max_size=200),
    st.binary(max_size=50).map(lambda b: b'{"value": 1, "quality": "' + b + b'"}'),  # non-UTF-8 inside JSON
    st.integers(64 * 1024 - 2, 64 * 1024 + 2).map(lambda n: b'{"value": 1, "pad": "' + b"x" * (n - 23) + b'"}'),
)


def check(topic: str, payload: bytes) -> None:
    """The decoder's promise for one message, checked through both entry points."""
    out = DEC.decode(topic, payload, NOW)
    for rej in out.rejected:
        assert rej.reason in REASONS
        assert isinstance(rej.detail, str) and rej.detail
        dead_letter_line(rej, 1).encode("utf-8")  # storable: no lone surrogate reaches the line
    for r in out.readings:
        ENC.reading(r).encode("utf-8")
    lines, rejected = DEC.lines(topic, payload, NOW)
    assert lines == [ENC.reading(r) for r in out.readings]
    assert [(r.reason, r.detail) for r in rejected] == [(r.reason, r.detail) for r in out.rejected]


class TestNeverRaises:
    """Whatever the payload, decode returns readings and dead letters; it raises nothing."""

    @settings(max_examples=600, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(TOPICS), POISON)
    def test_generated_poison(self, topic: str, payload: bytes) -> None:
        """Hypothesis: nested values, ts, quality and flags; huge integers, 1e400, NaN, duplicate keys, lone
        surrogates, non-UTF-8, sizes around 64 KiB, wrong types in every slot."""
        check(topic, payload)

    @settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(TOPICS), st.binary(max_size=300))
    def test_arbitrary_bytes(self, topic: str, payload: bytes) -> None:
        """Hypothesis: any bytes at all."""
        check(topic, payload)


# topic, payload, expected readings (value, quality, flag), expected dead-letter reasons
CASES: list[tuple[str, str, bytes, list[tuple[float, str, str | None]], list[str]]] = [
    ("1,000 levels in a snapshot value", EFFLUENT,
     b'{"values": {"cod": ' + nested(1000).encode() + b', "ph": 7.1}}', [(7.1, "good", None)], ["bad_value"]),
    ("1,000 levels in an entry's value", EFFLUENT,
     b'{"values": {"cod": {"value": ' + nested(1000).encode() + b'}}}', [], ["bad_value"]),
    ("1,000 levels of objects in an entry", EFFLUENT,
     b'{"values": {"cod": ' + nested(1000, "1", "{").encode() + b'}}', [], ["bad_value"]),
    ("1,000 levels in quality", COD, b'{"value": 41.7, "quality": ' + nested(1000).encode() + b"}", [], ["bad_value"]),
    ("1,000 levels in ts", COD, b'{"value": 41.7, "ts": ' + nested(1000).encode() + b"}", [], ["bad_ts"]),
    ("1,000 levels in flags", EFFLUENT, b'{"values": {"cod": 41.7}, "flags": {"cod": ' + nested(1000).encode()
     + b"}}", [], ["bad_value"]),
    ("huge integer value", COD, b'{"value": ' + b"9" * 400 + b"}", [], ["bad_value"]),
    ("huge negative integer, bare", COD, b"-" + b"9" * 400, [], ["bad_value"]),
    ("huge integer in an entry", EFFLUENT, b'{"values": {"cod": ' + b"9" * 5000 + b"}}", [], ["bad_value"]),
    ("huge integer ts", COD, b'{"value": 1, "ts": ' + b"9" * 30 + b"}", [], ["bad_ts"]),
    ("1e400", COD, b'{"value": 1e400}', [], ["bad_value"]),
    ("NaN in an entry", EFFLUENT, b'{"values": {"cod": NaN, "ph": 7.0}}', [], ["bad_value"]),
    ("duplicate key", COD, b'{"value": 41.7, "value": 4000}', [], ["bad_json"]),
    ("duplicate key in values", EFFLUENT, b'{"values": {"cod": 41.7, "cod": 45.0}}', [], ["bad_json"]),
    ("duplicate key with a colon in a string", COD,
     b'{"value": 41.7, "ts": "2025-11-27T00:00:00Z", "value": 3}', [], ["bad_json"]),
    ("lone surrogate quality", COD, b'{"value": 1, "quality": "\\ud800"}', [], ["bad_value"]),
    ("lone surrogate entry name", EFFLUENT, b'{"values": {"\\ud800": 1.0, "ph": 7.0}}', [(7.0, "good", None)],
     ["unknown_sensor"]),
    ("non-UTF-8", COD, b'{"value": 1, "quality": "\xff"}', [], ["bad_json"]),
    ("64 KiB + 1", COD, b" " * (64 * 1024) + b"1", [], ["too_large"]),
    ("ts not RFC 3339 (week date)", COD, b'{"value": 1, "ts": "2025-W48-4T00:00:00+00:00"}', [], ["bad_ts"]),
    ("ts with a trailing NUL", COD, b'{"value": 1, "ts": "2025-11-27T00:00:00+00:00\\u0000"}', [], ["bad_ts"]),
    ("quality a list in a snapshot", EFFLUENT, b'{"values": {"cod": 41.7}, "quality": [1]}', [], ["bad_value"]),
    ("flags not an object", EFFLUENT, b'{"values": {"cod": 41.7}, "flags": "M"}', [], ["bad_value"]),
]


class TestPoisonTable:
    """The named members of the class: each is a dead letter with its reason; good entries beside it stay."""

    @pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
    def test_case(self, case: tuple[str, str, bytes, list[tuple[float, str, str | None]], list[str]]) -> None:
        """The payload decodes to the readings and dead-letter reasons of the table, through both paths."""
        _, topic, payload, readings, reasons = case
        out = DEC.decode(topic, payload, NOW)
        assert [(r.value, r.quality, r.flag) for r in out.readings] == readings
        assert [r.reason for r in out.rejected] == reasons
        check(topic, payload)

    def test_entry_dead_letter_is_small(self) -> None:
        """A deeply nested entry is described in its dead letter rather than copied (no recursion)."""
        out = DEC.decode(EFFLUENT, b'{"values": {"cod": ' + nested(1000).encode() + b"}}", NOW)
        [rej] = out.rejected
        assert len(rej.payload) <= 1024
        assert json.loads(rej.payload)


# payload -> expected (quality, flag) of the one reading, and the fields its point carries
FLAGS = [
    (b'{"value": 41.7, "flag": "N"}', ("good", "N"), ""),
    (b'{"value": 41.7, "flag": "S"}', ("uncertain", "S"), ',quality="uncertain",flag="S"'),
    (b'{"value": 41.7, "flag": "M"}', ("bad", "M"), ',quality="bad",flag="M"'),
    (b'{"value": 41.7, "flag": "D", "quality": "uncertain"}', ("uncertain", "D"), ',quality="uncertain",flag="D"'),
    (b'{"value": 41.7, "flag": "T", "quality": "good"}', ("good", "T"), ',flag="T"'),
]


class TestFlags:
    """HJ 212 flags (CONTRACT §2): optional; quality follows from the flag when absent; stored when not N."""

    @pytest.mark.parametrize(("payload", "want", "fields"), FLAGS, ids=[p.decode() for p, _, _ in FLAGS])
    def test_reading_flag(self, payload: bytes, want: tuple[str, str], fields: str) -> None:
        """A reading's flag gives its quality when it names none, and the point's ``flag`` field."""
        [r] = DEC.decode(COD, payload, NOW).readings
        assert (r.quality, r.flag) == want
        [line] = DEC.lines(COD, payload, NOW)[0]
        assert line.endswith(f"value=41.7{fields} {NOW}")

    @pytest.mark.parametrize("flag", [b'"X"', b'"n"', b"1", b"[]", b'""'])
    def test_unknown_flag(self, flag: bytes) -> None:
        """Anything but the eight HJ 212 letters is ``bad_value``."""
        out = DEC.decode(COD, b'{"value": 41.7, "flag": ' + flag + b"}", NOW)
        assert out.readings == [] and [r.reason for r in out.rejected] == ["bad_value"]

    def test_snapshot_flags_and_qualities(self) -> None:
        """A snapshot's ``flags`` and ``quality`` objects apply per entry; an entry with a wrong flag is
        dead-lettered alone."""
        payload = json.dumps({"ts": NOW, "values": {"cod": 41.7, "ph": 7.1, "nh3n": 1.0, "tp": 0.2},
                              "quality": {"ph": "uncertain"}, "flags": {"cod": "M", "nh3n": "Q"}}).encode()
        out = DEC.decode(EFFLUENT, payload, NOW)
        got = {r.ref.sensor.id: (r.quality, r.flag) for r in out.readings}
        assert got == {"cod": ("bad", "M"), "ph": ("uncertain", None), "tp": ("good", None)}
        [rej] = out.rejected
        assert rej.reason == "bad_value" and "nh3n" in rej.detail
        check(EFFLUENT, payload)

    def test_snapshot_entry_object_flag(self) -> None:
        """An entry written as an object may carry its own flag."""
        payload = b'{"values": {"cod": {"value": 41.7, "flag": "C"}}}'
        [r] = DEC.decode(EFFLUENT, payload, NOW).readings
        assert (r.quality, r.flag) == ("bad", "C")
