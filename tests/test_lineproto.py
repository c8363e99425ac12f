"""Line protocol and InfluxQL quoting, proved against a real InfluxDB: what is written reads back exactly."""

from __future__ import annotations

import itertools
import math
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smartpark.lineproto import encode_line, escape_tag, format_float, quote_ident, quote_literal

# Tag values line protocol can carry: no newline, no backslash at the end or before , = or space, not empty
# (see lineproto's doc).
_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r\x00"), min_size=1, max_size=40)
tag_values = _text.filter(lambda s: re.search(r"\\$|\\[,= ]", s) is None and s.strip() == s and s != "")
awkward = st.sampled_from(["a b", "a,b", "a=b", 'a"b', "a\\b", "a\\\\b", "污水 厂", "x'y", "é,= \"\\x", "#", "a\\\"b"])
tags = st.one_of(awkward, tag_values)
strings = st.one_of(
    st.sampled_from(["", "line1\nline2", 'say "hi"', "back\\slash", "trailing\\", "\\\"", "中文\n警报", "a\r\nb"]),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=200),
)
floats = st.one_of(
    st.sampled_from([0.0, -0.0, 1e300, -1.7976931348623157e308, 5e-324, 2.2250738585072014e-308, 1.0, 41.7]),
    st.floats(allow_nan=False, allow_infinity=False),
)
_ts = itertools.count(1_700_000_000_000)


class TestRoundTrip:
    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(site=tags, asset=tags, sensor=tags, value=floats, quality=strings)
    def test_readings(self, influx_db, site: str, asset: str, sensor: str, value: float, quality: str) -> None:
        """A reading with awkward tags and string field reads back with identical tags, value and time."""
        ts = next(_ts)
        line = encode_line("reading", {"site": site, "asset": asset, "sensor": sensor},
                           {"value": value, "quality": quality}, ts)
        influx_db.write(line, precision="ms")
        rows = influx_db.query(f"SELECT * FROM reading WHERE time = {ts}ms")
        assert len(rows) == 1, line
        row = rows[0]
        assert (row["site"], row["asset"], row["sensor"]) == (site, asset, sensor)
        # InfluxDB's JSON prints large floats without an exponent (57037619341542670): read them as floats
        assert float(row["value"]) == value
        assert row["quality"] == quality
        assert row["time"] == ts

    @settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(rule=tags, message=strings, operator=strings, state=st.sampled_from(["UNACK", "NORM"]),
           value=floats, limit=floats)
    def test_alarm_events(self, influx_db, rule: str, message: str, operator: str, state: str,
                          value: float, limit: float) -> None:
        """An alarm-like event at nanosecond precision reads back exactly, strings with newlines included."""
        ts_ns = next(_ts) * 1_000_000 + 123_457
        tags_ = {"site": "wwtp", "asset": "effluent", "sensor": "cod", "rule": rule, "priority": "high"}
        fields = {"state": state, "event": "raised", "message": message, "operator": operator,
                  "value": value, "limit": limit}
        influx_db.write(encode_line("alarm", tags_, fields, ts_ns), precision="ns")
        rows = influx_db.query(f"SELECT * FROM alarm WHERE time = {ts_ns}", epoch="ns")
        assert len(rows) == 1
        row = rows[0]
        assert row["rule"] == rule and row["message"] == message and row["operator"] == operator
        assert float(row["value"]) == value and float(row["limit"]) == limit and row["state"] == state
        assert row["time"] == ts_ns


class TestRefusals:
    @pytest.mark.parametrize("bad", ["a\nb", "trailing\\", "x\r", "a\\ b", "a\\,b", "a\\=b"])
    def test_unrepresentable_tags_are_refused(self, bad: str) -> None:
        """Line protocol cannot carry these as tags; refusing beats storing something else."""
        with pytest.raises(ValueError):
            escape_tag(bad)

    @pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
    def test_non_finite_floats_are_refused(self, bad: float) -> None:
        with pytest.raises(ValueError):
            format_float(bad)

    def test_integral_float_keeps_float_type(self) -> None:
        assert format_float(42.0) == "42.0"
        assert encode_line("m", {}, {"n": 3, "ok": True, "s": "x"}) == 'm n=3i,ok=true,s="x"'


class TestInfluxQL:
    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(value=tags)
    def test_quoting_selects_exactly_that_tag(self, influx_db, value: str) -> None:
        """Quoted identifiers and literals select exactly the awkward tag value that was written."""
        ts = next(_ts)
        measurement = 'we ird,"m'
        influx_db.write([encode_line(measurement, {"t k": value}, {"v": 1.0}, ts),
                         encode_line(measurement, {"t k": value + "x"}, {"v": 2.0}, ts)])
        q = (f"SELECT {quote_ident('v')} FROM {quote_ident(measurement)} "
             f"WHERE {quote_ident('t k')} = {quote_literal(value)}")
        rows = influx_db.query(q + f" AND time = {ts}ms")
        assert [r["v"] for r in rows] == [1.0]
