"""The listener's fast path for real-time data gives what the general path gives, or steps aside.

``hj212 serve`` takes nearly every packet by a short path (:func:`hj212.frame.common_packet`, that is
:func:`hj212.frame.single`, :func:`hj212.packet.common_head` and :func:`hj212.packet.cp_items` in C;
:meth:`PacketDecoder.realtime_fast`, :func:`hj212.service.data_ack_of`) and everything else by the general one
(:class:`FrameReader`, :func:`parse`, :meth:`PacketDecoder.decode`, :func:`data_ack`). These tests generate packets
of the bundled park's loggers, good and bad in every way the fast path looks at, and check: wherever the fast path
answers, its points, feed snapshot and 9014 equal the general path's; and that it does answer for the packets
loggers really send.
"""

from __future__ import annotations

import time
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hj212.decode import LoggerMap, PacketDecoder
from hj212.frame import Frame, FrameReader, common_packet, frame, single
from hj212.packet import PacketError, common_head, cp_items, parse
from hj212.service import data_ack, data_ack_of
from hj212.simulate import realtime_packet
from smartpark.park import load_park, parse_park

PARK = load_park()
LOGGERS = LoggerMap(PARK)
DECODER = PacketDecoder(PARK)
TZ = ZoneInfo(PARK.park.timezone)
PLAIN = [lg for lg in LOGGERS.by_mn.values() if lg.config.sm4_key is None]
NOW_MS = int(time.time() * 1000)


def fast_path(segment: bytes) -> tuple[list[str], tuple[str, bytes], bytes | None] | None:
    """What the listener's fast path makes of a segment read as one frame (lines, snapshot, 9014), or None:
    :func:`hj212.frame.common_packet` (the C extension's, as the listener runs it), then ``Listener._realtime``."""
    head = common_packet(frame(segment))
    if head is None:
        return None
    qn, _st, cn, pw, mn, flag, items = head
    logger = LOGGERS.get(mn)
    if cn != "2011" or logger is None or (logger.pw is not None and pw != logger.pw):
        return None
    fast = DECODER.realtime_fast(logger, items, NOW_MS)
    if fast is None:
        return None
    return fast[0], fast[1], data_ack_of(qn, pw, mn, flag) if flag & 1 else None


def assert_same(segment: bytes) -> bool:
    """The fast path's outcome equals the general path's; True when the fast path took the packet."""
    fast = fast_path(segment)
    if fast is None:
        return False
    p = parse(segment, cp_plain=False)  # the fast path took it: the general path must accept it too
    logger = LOGGERS.get(p.mn)
    assert logger is not None
    points = DECODER.decode(p, logger, frame(segment), NOW_MS)
    lines, (topic, snapshot), ack = fast
    assert sorted(points.lines) == sorted(lines)
    assert points.rejected == [] and points.unmapped == []
    assert [(t, orjson.loads(b)) for t, b in points.feed] == [(topic, orjson.loads(snapshot))]
    assert ack == (data_ack(p) if p.wants_ack else None)
    return True


VALUES = st.one_of(
    st.floats(-1e4, 1e5, allow_nan=False).map(lambda v: f"{v:.3f}"),
    st.sampled_from(["12.5", "0", "-0.0", "1e3", ".5", "5.", "+7", "nan", "inf", "1e999", "abc", "", "1.2.3",
                     "1_000", " 12", "0x10", "-1e400"]))
FLAGS = st.sampled_from([None, "N", "N", "", "T", "D", "M", "C", "F", "B", "n"])


FAULTS = ("none", "any", "no DataTime", "bad DataTime", "code missing", "other name", "bad value",
          "out of range", "flag", "extra field", "unmapped", "twice", "empty group", "syntax", "wrong PW",
          "flag bits", "cn")


@st.composite
def segments(draw: st.DrawFn, fault: str) -> bytes:
    """A real-time packet of a plain logger of the park: clean (``none``), with one fault, or with faults
    anywhere (``any``: every part drawn freely)."""
    logger = draw(st.sampled_from(PLAIN))
    anything = fault == "any"
    faulty = draw(st.sampled_from(sorted(logger.codes)))  # the code a one-code fault is about
    groups = []
    if fault != "no DataTime" and (not anything or draw(st.integers(0, 9))):
        stamp = "20261202140013" if fault not in ("any", "bad DataTime") else draw(st.sampled_from(
            ["20261202140013", "20261202140013123", "20261302140013", "2026120214", "19991231235959",
             "21010101000000"]))
        groups.append(f"DataTime={stamp}")
    for code, (ref, how) in logger.codes.items():
        one = fault == "any" or code == faulty
        if one and (fault == "code missing" or (anything and not draw(st.integers(0, 9)))):
            continue
        right = "ZsRtd" if how.value == "converted" else "Rtd"
        name = right if not one or fault not in ("any", "other name") else draw(
            st.sampled_from([right, "Rtd", "ZsRtd", "Avg"]))
        lo, hi = ref.sensor.range
        if one and fault in ("any", "bad value"):
            value = draw(VALUES)
        elif one and fault == "out of range":
            value = f"{hi * 2 + 1:.3f}"
        else:
            value = f"{draw(st.floats(lo, hi)):.3f}"
        items = [f"{code}-{name}={value}"]
        flag = draw(FLAGS if one and fault in ("any", "flag") else st.sampled_from([None, "N", ""]))
        if flag is not None:
            items.append(f"{code}-Flag={flag}")
        if one and fault in ("any", "extra field") and (fault != "any" or not draw(st.integers(0, 5))):
            items.append(f"{code}-{draw(st.sampled_from(['SampleTime', 'EFlag', 'Min', 'Cou']))}=1")
        groups.append(",".join(items))
    if fault == "unmapped" or (anything and not draw(st.integers(0, 7))):
        groups.append(draw(st.sampled_from(["a99999-Rtd=1.0", "PolId=a21026", "w99999-Rtd=3,w99999-Flag=N"])))
    if (fault == "twice" or (anything and not draw(st.integers(0, 9)))) and len(groups) > 1:
        groups.append(groups[-1])  # a code twice: the later one wins on both paths
    if fault == "syntax" or (anything and not draw(st.integers(0, 9))):
        groups.insert(draw(st.integers(0, len(groups))), draw(st.sampled_from(
            ["a21026-Rtd=1=2", "=5", "a&b=1", "DataTime=1=2,x", "a b=1", "k" * 65 + "=1"])))
    empty = fault == "empty group" or (anything and not draw(st.integers(0, 7)))
    inner, trailing = (draw(st.booleans()), draw(st.booleans())) if empty else (False, False)
    cp = (";;" if inner else ";").join(groups) + (";" if trailing or (empty and not inner) else "")
    pw = "654321" if fault == "wrong PW" or (anything and not draw(st.integers(0, 7))) else logger.config.pw
    bits = draw(st.sampled_from([5, 4, 1, 0, 9, 8, 7, 300])) if fault in ("any", "flag bits") else 5
    cn = draw(st.sampled_from(["2011", "2051", "2021", "9021"])) if fault in ("any", "cn") else "2011"
    return (f"QN=20261202140013000;ST=31;CN={cn};PW={pw};MN={logger.mn};Flag={bits};CP=&&{cp}&&").encode()


class TestFastPath:
    def test_the_packets_loggers_send_take_it(self) -> None:
        """Every plain logger of the bundled park, values in its normal band, flag N: the fast path takes the
        packet (so the comparison below is not vacuous) and agrees with the general path."""
        taken = 0
        for logger in PLAIN:
            values = {code: sum(ref.sensor.normal) / 2 for code, (ref, _how) in logger.codes.items()}
            data = realtime_packet(logger, NOW_MS - 60_000, values, TZ)
            segment = single(data)
            assert segment is not None
            taken += assert_same(segment)
        assert taken == len(PLAIN) >= 2

    def test_flags_out_of_range_and_unmapped_codes_step_aside(self) -> None:
        """What needs the general path's dead letters, flag fields or unmapped counts is not taken fast."""
        logger = next(lg for lg in PLAIN if len(lg.codes) >= 2)
        code, (ref, _how) = next(iter(logger.codes.items()))
        normal = {c: sum(r.sensor.normal) / 2 for c, (r, _h) in logger.codes.items()}
        for values, flags in (({**normal, code: ref.sensor.range[1] * 10 + 1}, None),
                              (normal, {code: "T"}), ({**normal, "a99999": 1.0}, None)):
            if "a99999" in values:
                data = realtime_packet(logger, NOW_MS, normal, TZ).replace(b"&&", b"&&a99999-Rtd=1.0;", 1)
                segment = data[6:-6]
            else:
                framed = realtime_packet(logger, NOW_MS, values, TZ, flags=flags)
                segment = single(framed)  # type: ignore[assignment]  # a good frame: not None
            assert segment is not None and fast_path(segment) is None

    @pytest.mark.parametrize("fault", FAULTS)
    @settings(max_examples=60, deadline=None)
    @given(data=st.data())
    def test_where_it_answers_it_agrees(self, fault: str, data: st.DataObject) -> None:
        """Each kind of fault, and none: the clean packets must take the fast path."""
        taken = assert_same(data.draw(segments(fault)))
        if fault == "none":
            assert taken

    @settings(max_examples=300, deadline=None)
    @given(st.sampled_from(FAULTS).flatmap(segments), st.integers(0, 240), st.integers(0, 255))
    def test_single_frames_as_the_reader_does(self, segment: bytes, at: int, byte: int) -> None:
        """``single`` accepts exactly the reads that are one good frame, whatever byte is changed."""
        data = bytearray(frame(segment))
        if at < len(data):
            data[at] = byte
        got = single(bytes(data))
        events = FrameReader().feed(bytes(data))
        if got is not None:
            assert events == [Frame(got, bytes(data))]
        elif events and isinstance(events[0], Frame) and len(events) == 1:
            pytest.fail(f"single refused a good frame: {bytes(data)!r}")


def test_general_parse_of_what_the_fast_path_refuses_is_unchanged() -> None:
    """A split packet and an encrypted CP leave the common header path: parse decides, as before."""
    split = b"QN=20261202140013000;ST=31;CN=2011;PW=123456;MN=X1;Flag=7;PNUM=2;PNO=1;CP=&&DataTime=1&&"
    assert common_head(split.decode()) is None and parse(split).pnum == 2
    with pytest.raises(PacketError):
        parse(b"QN=20261202140013000;ST=31;CN=2011;PW=123456;MN=X1;Flag=5;CP=&&a=b=c&&")
    assert cp_items("a=1;;b=2") is None and cp_items("a=1,b=2;c=3") == {"a": "1", "b": "2", "c": "3"}


def test_held_feed_payloads_are_their_own_size() -> None:
    """The engine feed's snapshots are held until the broker's PUBACK (a whole burst of loggers at once): each
    must take about its own size. orjson 3.12 and later return a buffer of at least 4 KiB that they do not
    shrink (hj212.decode.kept_json copies it); 2,000 fast-path outcomes held here stay under 2 KiB a packet,
    lines and snapshot together, against 4 KiB and more for the snapshot alone from ``orjson.dumps``."""
    import tracemalloc

    logger = PLAIN[0]
    values = {code: sum(ref.sensor.normal) / 2 for code, (ref, _how) in logger.codes.items()}
    data = realtime_packet(logger, NOW_MS - 60_000, values, TZ)
    items = cp_items(common_head(single(data).decode())[6])  # type: ignore[index, union-attr]  # a good packet
    assert items is not None
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        held = [DECODER.realtime_fast(logger, items, NOW_MS) for _ in range(2000)]
        per_packet = (tracemalloc.get_traced_memory()[0] - before) / len(held)
    finally:
        tracemalloc.stop()
    assert all(h is not None for h in held)
    snapshot = held[0][1][1]  # type: ignore[index]  # not None: checked
    assert orjson.loads(snapshot)["values"] and per_packet < 2048, per_packet


def _park_of_stacks(codes: list[str]) -> str:
    """A park of one site whose stacks have loggers with the given code maps (YAML flow mappings)."""
    lines = ["park: {id: p, name: P, timezone: Asia/Shanghai}", "sites:", "  - id: plant", "    name: Plant",
             "    assets:"]
    for i, code_map in enumerate(codes):
        lines += [f"      - id: s{i}", f"        name: Stack {i}",
                  f'        hj212: [{{mn: "SHARE{i:019d}", pw: "123456", codes: {code_map}}}]', "        sensors:"]
        lines += [f"          - {{id: {sid}, name: {sid}, unit: mg/m3, range: [0, 1000], normal: [1, 100], "
                  "interval_s: 30}" for sid in ("so2", "nox", "o2")]
    return "\n".join(lines) + "\n"


def test_loggers_of_one_shape_share_what_a_packet_reads() -> None:
    """A burst of thousands of loggers reads each one's spec, key set, MN, topic and bounds: loggers with the
    same codes share one object of each (docs/benchmarks/hj212.md §10), and their points stay their own."""
    same = "{a21026: so2, a21002: nox, a19001: o2}"
    park = parse_park(_park_of_stacks([same, same, same, "{a21026: so2, a21002: nox}"]))
    loggers, decoder = LoggerMap(park), PacketDecoder(park)
    a, b, c, d = loggers.by_mn.values()
    assert a.realtime is b.realtime is c.realtime and a.realtime_keys is b.realtime_keys is c.realtime_keys
    assert d.realtime is not a.realtime and d.realtime_keys != a.realtime_keys
    for key, lg in loggers.by_mn.items():
        assert key is lg.mn and lg.pw == "123456"  # the map's own key: a lookup by it matches by identity
    assets = decoder.decoder._assets  # what snapshot_lines looks the topic up in
    assert all(next(k for k in assets if k == lg.topic) is lg.topic for lg in (a, b, c, d))
    assert assets[a.topic]["so2"].hi is assets[b.topic]["so2"].hi  # one float object per bound value
    out = []
    for lg in (a, b):
        head = common_packet(realtime_packet(lg, NOW_MS - 60_000, {"a21026": 1.5, "a21002": 2.5, "a19001": 3.5}, TZ))
        assert head is not None
        fast = decoder.realtime_fast(lg, head[6], NOW_MS)
        assert fast is not None
        out.append(fast)
    (la, (ta, _)), (lb, (tb, _)) = out
    assert ta != tb and la != lb and all(",asset=s0," in x for x in la) and all(",asset=s1," in x for x in lb)
