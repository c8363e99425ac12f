"""hj212/_speedups.c gives what its Python reference gives, or steps aside.

``hj212._speedups.common_packet`` (the first step of the listener's fast path) must equal
:func:`hj212.frame.common_packet_py` (``frame.single``, ``packet.common_head``, ``packet.cp_items``) on every
input, except that it may return None for a data segment outside printable ASCII, which the Python path then
decides; ``hj212._speedups.state`` must equal :func:`hj212.frame._py_state`. The inputs: the generated packets
of tests/test_hj212_fastpath.py with every kind of fault, each with one byte changed anywhere, headers built at
and past every bound of the common header's fields, and arbitrary bytes.
"""

from __future__ import annotations

import random
import sys

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from test_hj212_fastpath import FAULTS, segments

from hj212.decode import realtime_values, realtime_values_py
from hj212.frame import SPEEDUPS, _py_state, common_packet, common_packet_py, crc16_bytewise, frame
from hj212.service import data_ack, data_ack_of, frame_ack, frame_ack_py

if not SPEEDUPS:  # make setup builds it (gcc and the Python headers are among its system packages)
    raise RuntimeError("hj212._speedups is not built: `pip install -e .` with a C compiler builds it")

from hj212 import _speedups  # after the check above, for its message

frame_module = sys.modules["hj212.frame"]  # the package's ``frame`` is the function of that name


def printable(data: bytes) -> bool:
    return all(0x20 <= b <= 0x7E for b in data)


def check(data: bytes) -> object:
    """The C answer equals the Python one; None is allowed only for a segment outside printable ASCII."""
    got, want = _speedups.common_packet(data), common_packet_py(data)
    if got != want:
        assert got is None and not printable(data[6:-6]), (data, got, want)
    return got


def test_the_extension_is_what_runs() -> None:
    assert common_packet is _speedups.common_packet
    assert realtime_values is _speedups.realtime_values and frame_ack is _speedups.frame_ack
    assert frame_module._state is _speedups.state


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=700), st.integers(0, 255))
@example(b"", 0xFF)
@example(b"\x00", 0)
def test_state_equals_the_python_loop(data: bytes, state: int) -> None:
    assert _speedups.state(data, state) == _py_state(data, state)
    assert _speedups.state(bytearray(data)) == _py_state(data)
    if data:
        assert frame_module.crc16(data) == crc16_bytewise(data)


def test_state_refuses_a_state_past_one_byte() -> None:
    with pytest.raises(ValueError, match="one byte"):
        _speedups.state(b"x", 256)
    with pytest.raises(TypeError):
        _speedups.state("text")  # type: ignore[arg-type]  # what is checked


@pytest.mark.parametrize("fault", FAULTS)
@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_generated_packets(fault: str, data: st.DataObject) -> None:
    """Every fault kind of the fast-path tests; the clean packets must be answered by C (not only refused)."""
    raw = frame(data.draw(segments(fault)))
    got = check(raw)
    if fault == "none":
        assert got is not None


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(FAULTS).flatmap(segments), st.integers(0, 600), st.integers(0, 255))
def test_one_byte_changed_anywhere(segment: bytes, at: int, byte: int) -> None:
    raw = bytearray(frame(segment))
    raw[at % len(raw)] = byte
    check(bytes(raw))


def _digits(n: int) -> str:
    return "".join(random.Random(n).choice("0123456789") for _ in range(n))


HEAD_FIELDS = {
    # each field at its bounds, one past them, and with characters its class excludes
    "QN": [_digits(n) for n in (0, 13, 14, 17, 20, 21)] + ["2026120214001300a", "２０２６１２０２１４００１３"],
    "ST": ["", "3", "31", "311", "3a"],
    "CN": ["201", "2011", "20111", "2o11", "9014"],
    "PW": ["", "1", "123456", "123456789", "1234567890", "12&45", "12,45", "12=45", "12 45", "!$%'+-:<>~"],
    "MN": ["", "M", "M" * 32, "M" * 33, "32058300HW01CEMS00000001", "AB-_09", "A.B", "A B"],
    "Flag": ["", "0", "5", "7", "9", "255", "256", "0255", "00005", "4x"],
}
BODIES = ["", ";", "a=1", "a=", "=1", "a=1,", "a=1;", ";a=1", "a=1;;b=2", "a=1,,b=2", "a=1;,b=2", "a=1,b=2;c=3",
          "a=1,a=2", "DataTime=20261202140013;a21026-Rtd=1.5,a21026-Flag=N", "k" * 64 + "=1", "k" * 65 + "=1",
          "a=1=2", "a=b&c", "a&=1", "a b=1", "a=b c", "a=\t1", "a=é", "a-Rtd=1;;", "x=1;y=2;z=3;w="]


CPS = ["CP=&&{}&&", "CP=&{}&&", "CP=&&{}&", "CP={}", "CP=&&{}&&&&", "PNUM=2;PNO=1;CP=&&{}&&"]
ORDERS = ["QN={QN};ST={ST};CN={CN};PW={PW};MN={MN};Flag={Flag};",  # the common header; the others are not
          "ST={ST};CN={CN};PW={PW};MN={MN};Flag={Flag};QN={QN};",
          "QN={QN};ST={ST};CN={CN};PW={PW};MN={MN};",
          "QN={QN};ST={ST};CN={CN};MN={MN};PW={PW};Flag={Flag};",
          "QN={QN};ST={ST};CN={CN};PW={PW};MN={MN};Flag={Flag};X=1;"]
GOOD = {"QN": "20261202140013000", "ST": "31", "CN": "2011", "PW": "123456", "MN": "32058300HW01CEMS00000001",
        "Flag": "5"}
GOOD_BODY = "DataTime=20261202140013;a21026-Rtd=1.5,a21026-Flag=N"


def header_case(fields: dict[str, str], body: str, cp: str, order: str) -> None:
    segment = (order.format(**fields) + cp.format(body)).encode()
    got = check(frame(segment))
    if printable(segment) and common_packet_py(frame(segment)) is not None:
        assert got is not None  # C answers wherever Python does, for printable ASCII


# one thing at a time from a good packet, every value of it: each bound is met on its own
ONE_AT_A_TIME = ([({**GOOD, k: v}, GOOD_BODY, CPS[0], ORDERS[0]) for k, vs in HEAD_FIELDS.items() for v in vs]
                 + [(GOOD, body, CPS[0], ORDERS[0]) for body in BODIES]
                 + [(GOOD, GOOD_BODY, cp, ORDERS[0]) for cp in CPS]
                 + [(GOOD, GOOD_BODY, CPS[0], order) for order in ORDERS])


@pytest.mark.parametrize(("fields", "body", "cp", "order"), ONE_AT_A_TIME)
def test_headers_at_their_bounds(fields: dict[str, str], body: str, cp: str, order: str) -> None:
    header_case(fields, body, cp, order)


def test_the_baseline_is_a_common_packet() -> None:
    """So that the cases above vary one thing of a packet both functions take."""
    raw = frame((ORDERS[0].format(**GOOD) + CPS[0].format(GOOD_BODY)).encode())
    assert _speedups.common_packet(raw) == common_packet_py(raw) == (
        "20261202140013000", "31", "2011", "123456", "32058300HW01CEMS00000001", 5,
        {"DataTime": "20261202140013", "a21026-Rtd": "1.5", "a21026-Flag": "N"})


@settings(max_examples=1000, deadline=None)
@given(st.fixed_dictionaries({k: st.sampled_from(v) for k, v in HEAD_FIELDS.items()}), st.sampled_from(BODIES),
       st.sampled_from(CPS), st.sampled_from(ORDERS))
def test_headers_in_combination(fields: dict[str, str], body: str, cp: str, order: str) -> None:
    header_case(fields, body, cp, order)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
@example(b"##0000FFFF\r\n")
@example(b"##0001A7FE\r\n")
@example(b"")
def test_arbitrary_bytes(data: bytes) -> None:
    check(data)
    check(b"##%04d" % len(data) + data + b"%04X\r\n" % crc16_bytewise(data))


def test_not_bytes_is_none() -> None:
    """The listener passes ``bytes``; anything else is left to the Python path, never an error."""
    raw = frame(b"QN=20261202140013000;ST=31;CN=2011;PW=1;MN=M;Flag=5;CP=&&a=1&&")
    assert _speedups.common_packet(raw) is not None
    assert _speedups.common_packet(bytearray(raw)) is None  # type: ignore[arg-type]  # what is checked
    assert _speedups.common_packet(memoryview(raw)) is None  # type: ignore[arg-type]  # what is checked
    assert _speedups.common_packet(None) is None  # type: ignore[arg-type]  # what is checked


# ------------------------------------------------------------------ realtime_values
SPEC = (("a21026-ZsRtd", "a21026-Flag", "so2"), ("a19001-Rtd", "a19001-Flag", "o2"))
KEYS = frozenset({"DataTime", "a21026-Rtd", "a21026-ZsRtd", "a21026-Flag", "a19001-Rtd", "a19001-Flag",
                  "a19001-SampleTime"})
NUMBERS = ["12.5", "0", "-0.0", "+7", ".5", "5.", "1e3", "1E-3", "+.5e+2", "1e999", "-1e999", "007",
           "", ".", "+", "-", "e5", "1e", "1e+", "1.2.3", "1_000", " 12", "12 ", "0x10", "nan", "inf", "-inf",
           "Infinity", "1,5", "١٢", "１２", "12\n", "+-1", "1e5.5", "..5", "5..", "1" * 400]


def check_values(items: dict[str, str], spec: tuple[tuple[str, str, str], ...] = SPEC,
                 keys: frozenset[str] = KEYS) -> dict[str, float] | None:
    got, want = _speedups.realtime_values(items, spec, keys), realtime_values_py(items, spec, keys)
    if got != want:  # None is allowed for a value outside ASCII, which the general path then reads
        assert got is None and any(not v.isascii() for v in items.values()), (items, got, want)
    elif got is not None and want is not None:  # the same floats, bit for bit (-0.0, inf)
        assert [repr(x) for x in got.values()] == [repr(x) for x in want.values()] and list(got) == list(want)
    return got


@pytest.mark.parametrize("text", NUMBERS)
def test_each_number_text(text: str) -> None:
    check_values({"a21026-ZsRtd": text, "a19001-Rtd": "10.5"})
    check_values({"a21026-ZsRtd": "1", "a19001-Rtd": text, "a19001-Flag": "N"})


@settings(max_examples=800, deadline=None)
@given(st.dictionaries(st.sampled_from([*sorted(KEYS), "a99999-Rtd", "DataTime2"]),
                       st.one_of(st.sampled_from([*NUMBERS, "N", "T", "n", "NN"]),
                                 st.text(st.sampled_from("0123456789+-.eE N"), max_size=8), st.text(max_size=4)),
                       max_size=8),
       st.sampled_from([SPEC, SPEC[:1], ()]))
def test_realtime_values_equal_the_python_loop(items: dict[str, str], spec: tuple[tuple[str, str, str], ...]) -> None:
    check_values(items, spec)


@pytest.mark.parametrize("flag", ["N", "", "T", "D", "n", "NN", "N ", "Ｎ"])
def test_each_flag(flag: str) -> None:
    """Flag N or empty: taken; any other flag: the general path (its quality and flag field)."""
    for items in ({"a21026-ZsRtd": "1.5", "a21026-Flag": flag, "a19001-Rtd": "10.5"},
                  {"a21026-ZsRtd": "1.5", "a19001-Rtd": "10.5", "a19001-Flag": flag}):
        got = check_values(items)
        assert (got is not None) == (flag in ("N", ""))


def test_a_good_packet_s_values() -> None:
    assert check_values({"DataTime": "20261202140013", "a21026-ZsRtd": "20.5", "a21026-Flag": "N",
                         "a19001-Rtd": "10.5", "a19001-Flag": ""}) == {"so2": 20.5, "o2": 10.5}


# ------------------------------------------------------------------ frame_ack
@settings(max_examples=400, deadline=None)
@given(st.text(st.sampled_from("0123456789"), min_size=0, max_size=20) | st.text(max_size=20),
       st.binary(max_size=200))
def test_frame_ack_equals_frame(qn: str, tail: bytes) -> None:
    assert _speedups.frame_ack(qn, tail) == frame_ack_py(qn, tail)


def test_frame_ack_bound_and_the_9014() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        _speedups.frame_ack("1", b"x" * 9985)
    with pytest.raises(ValueError, match="exceeds"):
        frame_ack_py("1", b"x" * 9985)
    assert _speedups.frame_ack("1", b"x" * 9984) == frame_ack_py("1", b"x" * 9984)
    from hj212.packet import parse

    p = parse(b"QN=20261202140013000;ST=31;CN=2011;PW=123456;MN=32058300HW01CEMS00000001;Flag=5;CP=&&a=1&&")
    assert data_ack_of("20261202140013000", "123456", "32058300HW01CEMS00000001", 5) == data_ack(p)
