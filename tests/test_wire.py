"""The contract in code: topics, payload decoding (CONTRACT §2) and configuration (CONTRACT §6)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from smartpark.config import Settings, parse_influx_url, parse_mqtt_url
from smartpark.decode import Decoder
from smartpark.errors import ConfigError
from smartpark.park import load_park
from smartpark.points import PointEncoder
from smartpark.topics import alarm_topic, is_service_topic, share_subscription, status_topic

PARK = load_park()
DEC = Decoder(PARK)
ENC = PointEncoder(PARK)
NOW = 1_764_201_600_000
COD = "park/wwtp/effluent/cod"

# topic, payload, expected (value, ts, quality) or None, expected dead-letter reason or None
CASES = [
    ("reading", COD, b'{"value": 41.7, "ts": 1764201600123, "quality": "good"}', (41.7, 1764201600123, "good"), None),
    ("bare number", COD, b"41.7", (41.7, NOW, "good"), None),
    ("bare integer", COD, b"42", (42.0, NOW, "good"), None),
    ("no ts", COD, b'{"value": 41.7}', (41.7, NOW, "good"), None),
    ("rfc3339 offset", COD, b'{"value": 1, "ts": "2025-11-27T08:00:00.123+08:00"}', (1.0, 1764201600123, "good"), None),
    ("rfc3339 Z", COD, b'{"value": 1, "ts": "2025-11-27T00:00:00Z"}', (1.0, 1764201600000, "good"), None),
    ("uncertain", COD, b'{"value": 1, "quality": "uncertain"}', (1.0, NOW, "uncertain"), None),
    ("bad quality", COD, b'{"value": 1, "quality": "meh"}', None, "bad_value"),
    ("boolean", COD, b'{"value": true}', None, "bad_value"),
    ("bare boolean", COD, b"true", None, "bad_value"),
    ("string value", COD, b'{"value": "41.7"}', None, "bad_value"),
    ("no value", COD, b'{"ts": 1764201600123}', None, "bad_value"),
    ("NaN", COD, b'{"value": NaN}', None, "bad_value"),
    ("Infinity", COD, b"Infinity", None, "bad_value"),
    ("huge number", COD, b'{"value": 1e400}', None, "bad_value"),
    ("not json", COD, b"{value: 1", None, "bad_json"),
    ("binary junk", COD, b"\xff\xfe\x00\x01", None, "bad_json"),
    ("empty", COD, b"", None, "bad_json"),
    ("deep nesting", COD, b"[" * 100_000 + b"]" * 100_000, None, "too_large"),
    ("deep nesting small", COD, b"[" * 30_000 + b"]" * 30_000, None, "bad_json"),
    ("ts in seconds", COD, b'{"value": 1, "ts": 1764201600}', None, "bad_ts"),
    ("ts naive", COD, b'{"value": 1, "ts": "2025-11-27T08:00:00"}', None, "bad_ts"),
    ("ts garbage", COD, b'{"value": 1, "ts": "yesterday"}', None, "bad_ts"),
    ("ts fractional ms", COD, b'{"value": 1, "ts": 1764201600123.5}', None, "bad_ts"),
    ("ts bool", COD, b'{"value": 1, "ts": true}', None, "bad_ts"),
    ("too large", COD, b'{"value": 1, "pad": "' + b"x" * 70_000 + b'"}', None, "too_large"),
    ("unknown sensor", "park/wwtp/effluent/nope", b"1", None, "unknown_sensor"),
    ("unknown site", "park/mars/effluent/cod", b"1", None, "unknown_sensor"),
    ("too deep topic", "park/wwtp/effluent/cod/x", b"1", None, "unknown_sensor"),
    ("not park", "other/wwtp/effluent/cod", b"1", None, "unknown_sensor"),
]


class TestDecodeReading:
    @pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
    def test_table(self, case: tuple[Any, ...]) -> None:
        """Each payload becomes exactly one reading or one dead letter with the contract's reason."""
        _, topic, payload, want, reason = case
        out = DEC.decode(topic, payload, NOW)
        if want is None:
            assert out.readings == []
            assert [r.reason for r in out.rejected] == [reason]
            assert out.rejected[0].detail
            assert out.rejected[0].topic == topic
        else:
            assert out.rejected == []
            [r] = out.readings
            assert (r.value, r.ts_ms, r.quality) == want
            assert r.key == "wwtp/effluent/cod"

    def test_out_of_range_is_stored_bad_and_dead_lettered(self) -> None:
        """Outside the instrument range: stored with quality bad *and* dead-lettered (CONTRACT §3)."""
        out = DEC.decode(COD, b'{"value": 900, "ts": 1764201600123}', NOW)
        assert [(r.value, r.quality) for r in out.readings] == [(900.0, "bad")]
        assert [r.reason for r in out.rejected] == ["out_of_range"]
        line = PointEncoder(PARK).reading(out.readings[0])
        assert line == 'reading,asset=effluent,sensor=cod,site=wwtp value=900.0,quality="bad" 1764201600123'


class TestSnapshot:
    def test_one_bad_entry_alone_is_dead_lettered(self) -> None:
        """A snapshot keeps its valid entries; each invalid entry is dead-lettered alone."""
        payload = json.dumps({"ts": 1764201600123, "values": {"cod": 41.7, "nh3n": 1.2, "ph": "x",
                                                                "ghost": 3, "tp": 0.2}}).encode()
        out = DEC.decode("park/wwtp/effluent", payload, NOW)
        assert sorted((r.ref.sensor.id, r.value, r.ts_ms) for r in out.readings) == [
            ("cod", 41.7, 1764201600123), ("nh3n", 1.2, 1764201600123), ("tp", 0.2, 1764201600123)]
        assert sorted(r.reason for r in out.rejected) == ["bad_value", "unknown_sensor"]
        assert all(b"ph" in r.payload or b"ghost" in r.payload for r in out.rejected)

    def test_snapshot_without_values(self) -> None:
        """A snapshot that is not {ts, values} is one dead letter."""
        out = DEC.decode("park/wwtp/effluent", b'{"cod": 1}', NOW)
        assert [r.reason for r in out.rejected] == ["bad_value"]

    @pytest.mark.parametrize("topic", ["park/alarms/wwtp/effluent/cod/hh", "park/_sys/collector/a"])
    def test_service_topics_are_neither_readings_nor_dead_letters(self, topic: str) -> None:
        """The services' own topics under park/ (CONTRACT §2) decode to nothing."""
        out = DEC.decode(topic, b'{"status": "online"}', NOW)
        assert out.readings == [] and out.rejected == []

    def test_unknown_asset(self) -> None:
        out = DEC.decode("park/wwtp/nowhere", b'{"values": {"cod": 1}}', NOW)
        assert [r.reason for r in out.rejected] == ["unknown_sensor"]


ENTRY_VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.floats(min_value=-1, max_value=600),
    st.integers(-10**20, 10**20), st.booleans(), st.none(), st.text(max_size=5),
    st.fixed_dictionaries({"value": st.floats(0, 100)}, optional={"ts": st.integers(0, 5 * 10**12),
                                                                  "quality": st.sampled_from(["bad", "x"])}))
TS_VALUES = st.one_of(st.none(), st.integers(0, 5 * 10**12), st.just(1764201600123), st.booleans(),
                      st.floats(1.7e12, 1.8e12), st.just("2025-11-27T00:00:00Z"), st.text(max_size=4))
QUALITY_VALUES = st.one_of(st.none(), st.sampled_from(["good", "uncertain", "bad", "meh"]), st.integers())


@st.composite
def wire_messages(draw: st.DrawFn) -> tuple[str, bytes]:
    """Messages on reading and snapshot topics, mostly valid, with every kind of fault mixed in."""
    kind = draw(st.sampled_from(["valid snapshot", "valid single", "snapshot", "single", "bytes"]))
    optional = {"ts": TS_VALUES, "quality": QUALITY_VALUES}
    valid_ts = st.integers(946_684_800_000, 4_102_444_800_000 - 1)
    valid_quality = st.sampled_from([None, "good", "uncertain", "bad"])
    if kind == "valid snapshot":  # the fast path, with at most one entry that leaves it
        values = draw(st.dictionaries(st.sampled_from(["cod", "nh3n", "tp", "ph", "ss"]), st.floats(0, 5), max_size=5))
        if values and draw(st.booleans()):
            values[draw(st.sampled_from(sorted(values)))] = draw(ENTRY_VALUES)
        doc = {"ts": draw(valid_ts), "values": values}
        if (quality := draw(valid_quality)) is not None:
            doc["quality"] = quality
        return "park/wwtp/effluent", json.dumps(doc, allow_nan=True).encode()
    if kind == "valid single":
        doc = {"value": draw(st.floats(0, 200)), "ts": draw(valid_ts)}
        if (quality := draw(valid_quality)) is not None:
            doc["quality"] = quality
        return COD, json.dumps(doc).encode()
    if kind == "snapshot":
        names = st.sampled_from(["cod", "nh3n", "tp", "ph", "ghost"])
        doc = draw(st.fixed_dictionaries({"values": st.dictionaries(names, st.one_of(
            st.floats(0, 100), ENTRY_VALUES), max_size=5)}, optional=optional))
        return "park/wwtp/effluent", json.dumps(doc, allow_nan=True).encode()
    if kind == "single":
        doc = draw(st.one_of(
            st.fixed_dictionaries({"value": st.one_of(st.floats(0, 100), ENTRY_VALUES)}, optional=optional),
            ENTRY_VALUES))
        return COD, json.dumps(doc, allow_nan=True).encode()
    topic = draw(st.sampled_from([COD, "park/wwtp/effluent", "park/wwtp/nowhere", "park/_sys/collector/a"]))
    return topic, draw(st.binary(max_size=40))


class TestLines:
    @settings(max_examples=700, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(wire_messages())
    @example(("park/wwtp/effluent", b'{"ts": 946684800000, "values": {}}'))  # found by hypothesis: empty snapshot
    def test_lines_equal_decode_then_encode(self, msg: tuple[str, bytes]) -> None:
        """The collector's fused path gives exactly the lines and dead letters of decode + PointEncoder."""
        topic, payload = msg
        decoded = DEC.decode(topic, payload, NOW)
        assert DEC.lines(topic, payload, NOW) == ([ENC.reading(r) for r in decoded.readings], decoded.rejected)

    def test_fast_path_lines(self) -> None:
        """The common shapes, written out: a snapshot of floats, a single reading, an uncertain snapshot."""
        snap = b'{"ts": 1764201600123, "values": {"cod": 41.7, "nh3n": 1.25}}'
        assert DEC.lines("park/wwtp/effluent", snap, NOW) == ([
            "reading,asset=effluent,sensor=cod,site=wwtp value=41.7 1764201600123",
            "reading,asset=effluent,sensor=nh3n,site=wwtp value=1.25 1764201600123"], [])
        assert DEC.lines(COD, b'{"value": 0.5, "ts": 1764201600123, "quality": "uncertain"}', NOW) == ([
            'reading,asset=effluent,sensor=cod,site=wwtp value=0.5,quality="uncertain" 1764201600123'], [])
        lines, rejected = DEC.lines("park/wwtp/effluent", b'{"ts": 1764201600123, "values": {"cod": 1.5, '
                                    b'"ph": 99.0}}', NOW)
        assert lines == ["reading,asset=effluent,sensor=cod,site=wwtp value=1.5 1764201600123",
                         'reading,asset=effluent,sensor=ph,site=wwtp value=99.0,quality="bad" 1764201600123']
        assert [r.reason for r in rejected] == ["out_of_range"]


class TestTopics:
    def test_topic_builders(self) -> None:
        """The alarm and status trees of CONTRACT §2, and shared subscriptions."""
        assert alarm_topic("wwtp", "effluent", "cod", "hh") == "park/alarms/wwtp/effluent/cod/hh"
        assert status_topic("collector", "a") == "park/_sys/collector/a"
        assert share_subscription("g") == "$share/g/park/#"
        assert share_subscription(None) == "park/#"
        assert is_service_topic("park/alarms/wwtp/effluent/cod/hh")
        assert is_service_topic("park/_sys/collector/a")
        assert not is_service_topic("park/wwtp/effluent/cod")


class TestConfig:
    def test_precedence(self) -> None:
        """Flags win over variables, variables over defaults."""
        import argparse

        env = {"SMARTPARK_INFLUX_DB": "fromenv", "SMARTPARK_MQTT_URL": "mqtt://10.0.0.9:1884"}
        s = Settings.resolve(argparse.Namespace(influx_db="fromflag"), env)
        assert s.influx_db == "fromflag"
        assert s.mqtt_url == "mqtt://10.0.0.9:1884"
        assert s.influx_url == "http://127.0.0.1:8086"
        assert Settings.resolve(None, {}).state_dir == "./.smartpark"

    def test_urls_with_credentials(self) -> None:
        """User and password come from the URLs; TLS from mqtts://."""
        m = parse_mqtt_url("mqtts://dev%40site:p%3Ass@broker.example:8884")
        assert (m.host, m.port, m.tls, m.username, m.password) == ("broker.example", 8884, True, "dev@site", "p:ss")
        assert parse_mqtt_url("mqtt://h").port == 1883
        i = parse_influx_url("https://u:pw@influx:8443/prefix/", "db", "tok")
        assert (i.base_url, i.username, i.password, i.token) == ("https://influx:8443/prefix", "u", "pw", "tok")

    @pytest.mark.parametrize("url", ["http://x:1883", "mqtt://", "mqtt://h:notaport"])
    def test_bad_mqtt_url(self, url: str) -> None:
        with pytest.raises(ConfigError):
            parse_mqtt_url(url)
