"""HJ 212 framing and packets: other projects' packets parse, every one-digit edit is refused for the right
reason, the CRC is the standard's, and the parser is total (it raises only its own errors)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hj212.crypto import decrypt_cp, encrypt_cp
from hj212.frame import MAX_PACKET, Frame, FrameError, FrameReader, check, crc16, crc16_bytewise, frame
from hj212.packet import Packet, PacketError, datatime_ms, encode, parse
from smartpark.schema import HJ212_CRC, HJ212_DECRYPT, HJ212_FRAME

DATA = Path(__file__).parent / "data" / "hj212_packets.txt"
EXAMPLE = (b"##0101QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;"
           b"CP=&&RtdInterval=30&&1C80\r\n")


def captured() -> list[tuple[str, bytes]]:
    out, source = [], ""
    for line in DATA.read_text(encoding="utf-8").splitlines():
        if line.startswith("# source:"):
            source = line.removeprefix("# source:").strip()
        elif line.startswith("##"):
            out.append((source, line.encode() + b"\r\n"))
    return out


PACKETS = captured()


def refusal(data: bytes) -> str | None:
    """The reason ``data`` (one packet) is refused, or None when it is accepted."""
    events = FrameReader().feed(data)
    if len(events) != 1:
        return HJ212_FRAME
    if isinstance(events[0], FrameError):
        return events[0].reason
    try:
        parse(events[0].segment)
    except PacketError as exc:
        return exc.reason
    return None


class TestCrc:
    """The CRC is HJ 212's Appendix A algorithm, not CRC-16/MODBUS."""

    def test_the_standards_example_validates(self) -> None:
        """The example packet of CONTRACT §7 frames and its CRC is 1C80."""
        f = check(EXAMPLE)
        assert crc16(f.segment) == 0x1C80
        assert parse(f.segment).cn == "1062"

    def test_modbus_crc_is_not_accepted(self) -> None:
        """The same packet with the CRC-16/MODBUS value (0759) is refused as hj212_crc."""
        assert refusal(EXAMPLE.replace(b"1C80", b"0759")) == HJ212_CRC

    def test_lower_case_hex_is_accepted(self) -> None:
        """Loggers write the CRC in either case (one capture has 47c0)."""
        assert refusal(EXAMPLE.replace(b"1C80", b"1c80")) is None

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=600))
    def test_two_bytes_a_step_equals_appendix_a(self, data: bytes) -> None:
        """The table-driven CRC (two bytes a step, any length, odd or even) is Appendix A's byte loop."""
        assert crc16(data) == crc16_bytewise(data)
        assert crc16(bytearray(data)) == crc16_bytewise(data)


class TestCapturedPackets:
    """Packets from other implementations' test data and field captures (sources in the data file)."""

    def test_there_are_many_from_several_sources(self) -> None:
        """At least 20 packets from at least 4 sources."""
        assert len(PACKETS) >= 20 and len({s for s, _ in PACKETS}) >= 4

    @pytest.mark.parametrize(("source", "raw"), PACKETS, ids=[f"{i}" for i in range(len(PACKETS))])
    def test_parses_and_round_trips(self, source: str, raw: bytes) -> None:
        """Each frames, passes its CRC, parses, and encodes back to the same data segment."""
        f = check(raw)
        p = parse(f.segment)
        assert p.mn and p.cn and p.st
        assert encode(p) == f.segment, source

    @pytest.mark.parametrize(("source", "raw"), PACKETS, ids=[f"{i}" for i in range(len(PACKETS))])
    def test_every_one_digit_edit_is_refused_for_the_right_reason(self, source: str, raw: bytes) -> None:
        """A digit changed in the length is a frame error; in the data segment or the CRC, a CRC error."""
        for i, c in enumerate(raw):
            if not chr(c).isdigit():
                continue
            for d in b"0123456789":
                if d == c:
                    continue
                edited = bytearray(raw)
                edited[i] = d
                want = HJ212_FRAME if 2 <= i < 6 else HJ212_CRC
                assert refusal(bytes(edited)) == want, (source, i, bytes(edited[max(0, i - 12):i + 4]))


class TestFraming:
    """The byte stream is cut into packets however TCP delivers it."""

    def test_split_across_100_reads(self) -> None:
        """A packet fed in 100 pieces comes out once, whole."""
        raw = PACKETS[1][1]
        reader = FrameReader()
        step = -(-len(raw) // 100)
        events = [e for i in range(0, len(raw), step) for e in reader.feed(raw[i:i + step])]
        assert events == [Frame(raw[6:-6], raw)]

    def test_two_packets_in_one_read(self) -> None:
        events = FrameReader().feed(PACKETS[1][1] + PACKETS[2][1])
        assert [type(e) for e in events] == [Frame, Frame]

    def test_garbage_then_a_valid_packet(self) -> None:
        """Garbage is one hj212_frame error; the packet after it is found on its '##'."""
        events = FrameReader().feed(b"\x00\xffGET / HTTP/1.1\r\n\r\n" + EXAMPLE)
        assert isinstance(events[0], FrameError) and events[0].reason == HJ212_FRAME and not events[0].fatal
        assert isinstance(events[1], Frame)

    def test_wrong_declared_length_resynchronises_on_the_next_packet(self) -> None:
        """A length longer than the data: the next '##' starts the next packet."""
        bad = EXAMPLE.replace(b"##0101", b"##0150")
        events = FrameReader().feed(bad + EXAMPLE)
        assert isinstance(events[0], FrameError) and events[0].reason == HJ212_FRAME
        assert isinstance(events[-1], Frame)

    def test_no_crlf_is_a_frame_error(self) -> None:
        assert refusal(EXAMPLE[:-2] + b"XX") == HJ212_FRAME

    def test_over_10000_bytes_is_refused(self) -> None:
        """A declared length beyond the 10,000-byte packet bound is refused before it is buffered."""
        events = FrameReader().feed(b"##9999QN=")
        assert isinstance(events[0], FrameError) and "exceeds" in events[0].detail
        with pytest.raises(ValueError):
            frame(b"x" * MAX_PACKET)

    def test_endless_garbage_is_fatal(self) -> None:
        """More than a packet's worth of bytes without any '##': the connection is to be closed."""
        reader = FrameReader()
        events = [e for _ in range(12) for e in reader.feed(b"x" * 1000)]
        assert events and isinstance(events[-1], FrameError) and events[-1].fatal
        assert reader.pending < 2


class TestFields:
    """Field syntax is checked: the CRC alone lets a damaged packet through more often than it should."""

    @pytest.mark.parametrize("segment", [
        b"QN=20160801085857223;ST=32;CN=2011;PW=123456;Flag=5;CP=&&DataTime=20160801085857&&",  # no MN
        b"QN=2016;ST=32;CN=2011;PW=123456;MN=X1;Flag=5;CP=&&&&",  # QN too short
        b"ST=3;CN=2011;PW=123456;MN=X1;CP=&&&&",  # ST of one digit
        b"ST=32;CN=2011;PW=123456;MN=X1;CP=&&a-Rtd&&",  # CP item without '='
        b"ST=32;CN=2011;PW=123456;MN=X1;Flag=7;CP=&&&&",  # split without PNUM/PNO
        b"ST=32;CN=2011;PW=123456;MN=X1;CP=&&DataTime=1",  # no closing &&
        b"ST=32;CN=2011;PW=123456;MN=X1;MN=X2;CP=&&&&",  # MN twice
        b"\xff\xfe;CP=&&&&",
    ])
    def test_malformed_is_a_frame_error(self, segment: bytes) -> None:
        with pytest.raises(PacketError) as err:
            parse(segment)
        assert err.value.reason == HJ212_FRAME

    def test_unknown_fields_are_kept_not_errors(self) -> None:
        p = parse(b"QN=20160801085857223;ST=32;CN=2011;PW=1;MN=X1;Flag=4;XX=9;CP=&&DataTime=20160801085857;"
                  b"w01018-Rtd=41.7,w01018-Flag=N,w01018-Foo=1&&")
        assert p.extra == (("XX", "9"),)
        assert p.data()["w01018"] == {"Rtd": "41.7", "Flag": "N", "Foo": "1"}
        assert p.version == "2017" and not p.wants_ack

    def test_datatime_with_milliseconds(self) -> None:
        from zoneinfo import ZoneInfo
        tz = ZoneInfo("Asia/Shanghai")
        assert datatime_ms("20260101080000123", tz) == datatime_ms("20260101080000", tz) + 123
        assert datatime_ms("20260101080000", tz) == 1767225600000

    def test_version_bits(self) -> None:
        assert [Packet("31", "2011", "", "X", flag=f).version for f in (None, 0, 4, 5, 8, 9)] == \
            ["2005", "2005", "2017", "2017", "2025", "2025"]


class TestSm4:
    """HJ 212-2025 CP encryption uses the cryptography package's SM4 in ECB mode."""

    KEY = "0123456789abcdef0123456789abcdef"

    def test_round_trip_and_standard_vector(self) -> None:
        """SM4's published test vector (GB/T 32907 A.1) and a CP round trip."""
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
        key = bytes.fromhex("0123456789abcdeffedcba9876543210")
        enc = Cipher(algorithms.SM4(key), modes.ECB()).encryptor()
        assert enc.update(key) + enc.finalize() == bytes.fromhex("681edf34d206965e86b3e94f536e4246")
        cp = "DataTime=20260101080000;a21026-Rtd=12.5,a21026-Flag=N"
        assert decrypt_cp(encrypt_cp(cp, self.KEY), self.KEY) == cp

    def test_wrong_key_is_a_decrypt_error(self) -> None:
        text = encrypt_cp("DataTime=20260101080000", self.KEY)
        with pytest.raises(PacketError) as err:
            decrypt_cp(text, "f" * 32)
        assert err.value.reason == HJ212_DECRYPT


# --------------------------------------------------------------------------------------------------- properties

_key = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_\-]{0,15}", fullmatch=True)
_value = st.from_regex(r"[0-9A-Za-z.+\-: ]{0,12}", fullmatch=True)
_group = st.lists(st.tuples(_key, _value), min_size=1, max_size=5).map(tuple)
_reserved = {"QN", "ST", "CN", "PW", "MN", "Flag", "PNUM", "PNO", "CP"}


@st.composite
def packets(draw: st.DrawFn) -> Packet:
    flag = draw(st.none() | st.integers(0, 255))
    split = flag is not None and bool(flag & 2)
    pnum = draw(st.integers(1, 20)) if split or draw(st.booleans()) else None
    pno = draw(st.integers(1, pnum)) if pnum is not None and (split or draw(st.booleans())) else None
    if split and pno is None:
        pno = 1
    extra = draw(st.lists(st.tuples(_key.filter(lambda k: k not in _reserved), _value), max_size=2,
                          unique_by=lambda kv: kv[0]).map(tuple))
    return Packet(st=draw(st.from_regex(r"\d{2}", fullmatch=True)), cn=draw(st.from_regex(r"\d{4}", fullmatch=True)),
                  pw=draw(st.from_regex(r"[!-~]{0,9}", fullmatch=True).filter(lambda s: not set(s) & set(";,&="))),
                  mn=draw(st.from_regex(r"[0-9A-Za-z\-_]{1,32}", fullmatch=True)),
                  cp=draw(st.lists(_group, max_size=6).map(tuple)),
                  qn=draw(st.none() | st.from_regex(r"\d{17}", fullmatch=True)), flag=flag, pnum=pnum, pno=pno,
                  extra=extra)


class TestProperties:
    """Generated packets round-trip; arbitrary bytes never raise anything but the parser's own errors."""

    @settings(max_examples=100, deadline=None)
    @given(packets())
    def test_parse_encode_round_trip(self, p: Packet) -> None:
        f = check(frame(encode(p)))
        assert parse(f.segment) == p

    @settings(max_examples=200, deadline=None)
    @given(packets().filter(lambda p: p.qn is not None and p.flag is not None))
    def test_the_common_header_and_any_order_parse_alike(self, p: Packet) -> None:
        """The standard's header order (one match) and the same fields in another order (checked field by
        field) give the same packet or the same refusal."""
        segment = encode(p).decode()
        head, cp = segment.split(";CP=", 1)
        first, rest = head.split(";", 1)
        moved = f"{rest};{first};CP={cp}"  # QN last: never the common layout

        def outcome(text: str) -> object:
            try:
                return parse(text.encode())
            except PacketError as exc:
                return exc.reason
        assert outcome(segment) == outcome(moved)

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=300))
    def test_parser_is_total_on_bytes(self, data: bytes) -> None:
        try:
            parse(data)
        except PacketError:
            pass

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.binary(max_size=200) | st.sampled_from([EXAMPLE, b"##", b"##0101", b"\r\n", b"&&"]),
                    max_size=12))
    def test_frame_reader_is_total_on_streams(self, chunks: list[bytes]) -> None:
        """Any stream: only Frames and FrameErrors come out, and the buffer stays bounded."""
        reader = FrameReader()
        for chunk in chunks:
            for event in reader.feed(chunk):
                assert isinstance(event, (Frame, FrameError))
            assert reader.pending <= MAX_PACKET + 200


class TestParkModel:
    """The park model's ``hj212`` entries (CONTRACT §4): checked at load, one clear line per mistake."""

    BASE = """\
park: {id: p, name: P}
sites:
  - id: s
    name: S
    assets:
      - id: a
        name: A
        hj212:
          - {mn: "%s", codes: {a21026: %s}}
        sensors:
          - {id: so2, name: SO2, unit: mg/m3, range: [0, 500], normal: [5, 40], interval_s: 30}
"""

    def test_bundled_park_maps_cems_and_outfall(self) -> None:
        from hj212.decode import LoggerMap
        from smartpark.park import load_park
        loggers = LoggerMap(load_park())
        by_asset = {(lg.site, lg.asset): lg for lg in loggers.by_mn.values()}
        assert {("hw_center", "stack_cems"), ("energy_hub", "aux_boiler1"), ("wwtp", "effluent")} <= set(by_asset)
        cems = by_asset[("hw_center", "stack_cems")]
        assert len(cems.mn) == 24 and cems.codes["a21026"][0].sensor.id == "so2"
        assert cems.codes["a34013"][1].value == "converted"
        outfall = by_asset[("wwtp", "effluent")]
        assert len(outfall.mn) == 14
        assert {c: r.sensor.id for c, (r, _) in outfall.codes.items()}.items() >= {
            "w01018": "cod", "w21003": "nh3n", "w21011": "tp", "w21001": "tn", "w01001": "ph", "w00000": "flow"}.items()
        assert by_asset[("energy_hub", "aux_boiler1")].config.sm4_key

    @pytest.mark.parametrize(("mn", "target", "words"), [
        ("MN1", "nox", "names sensor 'nox'"),
        ("MN 1", "so2", "mn"),
        ("MN1", "{sensor: so2, value: zs}", "value"),
    ])
    def test_mistakes(self, mn: str, target: str, words: str) -> None:
        from smartpark.errors import ConfigError
        from smartpark.park import parse_park
        with pytest.raises(ConfigError) as err:
            parse_park(self.BASE % (mn, target), "p.yaml")
        assert words in str(err.value) and "p.yaml" in str(err.value)

    def test_an_mn_appears_once(self) -> None:
        from smartpark.errors import ConfigError
        from smartpark.park import parse_park
        text = self.BASE % ("MN1", "so2")
        twice = text.replace("      - id: a\n", "      - id: b\n        name: B\n        hj212:\n"
                             "          - {mn: \"MN1\", codes: {a21026: so2}}\n        sensors:\n"
                             "          - {id: so2, name: SO2, unit: mg/m3, range: [0, 500], normal: [5, 40], "
                             "interval_s: 30}\n      - id: a\n", 1)
        with pytest.raises(ConfigError) as err:
            parse_park(twice, "p.yaml")
        assert "appears twice" in str(err.value)
