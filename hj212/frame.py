"""HJ 212 framing on a TCP byte stream: ``##`` + 4-digit length + data segment + 4 hex CRC + ``\\r\\n``.

The CRC is the standard's own (HJ 212-2017 Appendix A), not CRC-16/MODBUS: start 0xFFFF, per byte
``crc = (crc >> 8) ^ byte``, then eight right shifts with 0xA001 folded in whenever a 1 is shifted out. After
the XOR the register holds at most 8 bits, so the result depends only on ``(crc >> 8) ^ last byte``: a
256-entry table gives it in one lookup per byte (:func:`crc16_bytewise`; :func:`crc16` takes two bytes a step),
and there are only 256 possible CRCs per packet. That is why the declared length, the trailing CRLF and the
field syntax (:mod:`hj212.packet`) are checked as well.

:class:`FrameReader` takes whatever TCP delivers (a packet over 100 reads, several packets in one) and
yields whole frames or :class:`FrameError` s; after a bad frame it resynchronises on the next ``##``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from smartpark.errors import DecodeError
from smartpark.schema import HJ212_CRC, HJ212_FRAME

from .packet import common_head, cp_items

MAX_PACKET = 10_000  # bytes, the whole packet (CONTRACT §7)
_OVERHEAD = 2 + 4 + 4 + 2  # '##', length, CRC, CRLF
MAX_SEGMENT = MAX_PACKET - _OVERHEAD


def _table() -> list[int]:
    out = []
    for x in range(256):
        crc = x
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        out.append(crc)
    return out


_CRC_TABLE = _table()
_HIGH = [t >> 8 for t in _CRC_TABLE]  # the state carried to the next byte: the register's high byte
# Two bytes per step. The table is linear over GF(2) (T[x ^ y] = T[x] ^ T[y]), so the state after bytes b1, b2
# is H[H[s ^ b1] ^ b2] = H[H[s]] ^ H[H[b1] ^ b2]: one lookup by state and one by the 16-bit word, in the
# machine's byte order as memoryview.cast("H") reads it.
_STEP2 = [_HIGH[_HIGH[s]] for s in range(256)]
_WORD = [0] * 65536
for _b1 in range(256):
    for _b2 in range(256):
        _WORD[int.from_bytes(bytes((_b1, _b2)), sys.byteorder)] = _HIGH[_HIGH[_b1] ^ _b2]


def _py_state(data: bytes | bytearray | memoryview, state: int = 0xFF) -> int:
    """The register's high byte after every byte of ``data`` (Appendix A up to its last step), from ``state``.
    The reference of :func:`_state`, which is ``hj212._speedups.state`` (one lookup per byte in C) when the
    extension is built."""
    n = len(data)
    first = n & 1  # the bytes go in pairs; an odd one out goes first
    if first:
        state = _HIGH[state ^ data[0]]
    step, word = _STEP2, _WORD
    for w in memoryview(data)[first:].cast("H"):
        state = step[state] ^ word[w]
    return state


def crc16(data: bytes | bytearray) -> int:
    """The HJ 212 CRC of a data segment (Appendix A)."""
    n = len(data)
    if not n:
        return 0xFFFF
    return _CRC_TABLE[_state(memoryview(data)[:n - 1]) ^ data[n - 1]]


def crc16_bytewise(data: bytes) -> int:
    """The same CRC a byte at a time, as Appendix A writes it (the reference :func:`crc16` is tested against)."""
    crc = 0xFFFF
    table = _CRC_TABLE
    for b in data:
        crc = table[(crc >> 8) ^ b]
    return crc


def frame(segment: bytes) -> bytes:
    """A data segment in its frame; the CRC is written in upper-case hex, as the standard's example."""
    if len(segment) > MAX_SEGMENT:
        raise ValueError(f"data segment of {len(segment)} bytes exceeds {MAX_SEGMENT}")
    return b"##%04d%s%04X\r\n" % (len(segment), segment, crc16(segment))


def single(data: bytes) -> bytes | None:
    """The data segment when ``data`` is exactly one packet whose length, CRC and CRLF are right, else None
    (:func:`common_packet_py` takes a read this way first; :meth:`FrameReader.feed` cuts any other)."""
    if (data[:2] == b"##" and data[-2:] == b"\r\n" and data[2:6].isdigit()
            and int(data[2:6]) + _OVERHEAD == len(data) and _HEX.issuperset(data[-6:-2])):
        segment = data[6:-6]
        if int(data[-6:-2], 16) == crc16(segment):
            return segment
    return None


class FrameError(DecodeError):
    """A frame refused before its fields are read. ``reason``: ``hj212_frame`` or ``hj212_crc``;
    ``raw``: the bytes concerned (for the dead letter); ``fatal``: the stream cannot be resynchronised."""

    def __init__(self, reason: str, detail: str, raw: bytes = b"", *, fatal: bool = False) -> None:
        super().__init__(reason, detail)
        self.raw = raw
        self.fatal = fatal


@dataclass(frozen=True, slots=True)
class Frame:
    """A packet whose length, CRC and CRLF are right: its data segment and the whole packet's bytes."""

    segment: bytes
    raw: bytes


_HEX = frozenset(b"0123456789abcdefABCDEF")
_DIGITS = frozenset(b"0123456789")
_BLANK = frozenset(b"\r\n\t \x00")


def check(packet: bytes) -> Frame:
    """One whole packet (with or without its CRLF read off) -> :class:`Frame`, else :class:`FrameError`."""
    reader = FrameReader()
    events = reader.feed(packet if packet.endswith(b"\r\n") else packet + b"\r\n")
    if not events:
        raise FrameError(HJ212_FRAME, "incomplete packet", packet[:1024])
    first = events[0]
    if isinstance(first, FrameError):
        raise first
    if len(events) > 1 or reader.pending:
        raise FrameError(HJ212_FRAME, "bytes after the packet's CRLF", packet[:1024])
    return first


class FrameReader:
    """Cuts a byte stream into frames. Holds at most one packet (10,000 bytes) plus one TCP read.

    Garbage before a ``##`` is reported once per run as ``hj212_frame`` and skipped; blank bytes between
    packets (CR, LF, space, NUL, that some loggers pad with) are skipped silently. A connection that sends
    more than :data:`MAX_PACKET` bytes without any ``##`` cannot be resynchronised: ``fatal``.
    """

    __slots__ = ("_buf", "_hunted")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._hunted = 0  # garbage bytes skipped since the last '##'

    @property
    def pending(self) -> int:
        return len(self._buf)

    def whole(self, data: bytes) -> CommonPacket | None:
        """:func:`common_packet` of a read when nothing is held from earlier reads (what a logger's read nearly
        always is); then the garbage skipped before it no longer counts towards the fatal bound. None: the
        read goes to :meth:`feed`."""
        if self._buf:
            return None
        head = common_packet(data)
        if head is not None:
            self._hunted = 0
        return head

    def feed(self, data: bytes) -> list[Frame | FrameError]:
        buf = self._buf
        buf += data
        out: list[Frame | FrameError] = []
        while buf:
            start = buf.find(b"##")
            if start != 0:
                # what precedes the next '##' (or all but a trailing '#', which may start one) is not a packet
                cut = start if start > 0 else (len(buf) - 1 if buf.endswith(b"#") else len(buf))
                skipped = bytes(buf[:cut])
                del buf[:cut]
                if skipped.strip(bytes(_BLANK)):
                    self._hunted += len(skipped)
                    if start < 0 and self._hunted > MAX_PACKET:
                        out.append(FrameError(HJ212_FRAME, f"{self._hunted} bytes without a '##' packet start",
                                              skipped[:1024], fatal=True))
                        self._hunted = 0
                        buf.clear()
                        return out
                    if start >= 0:
                        out.append(FrameError(HJ212_FRAME, f"{self._hunted} bytes of garbage before '##'",
                                              skipped[:1024]))
                        self._hunted = 0
                if start < 0:
                    return out
                continue
            self._hunted = 0
            if len(buf) < 6:
                return out
            head = bytes(buf[2:6])
            if not all(b in _DIGITS for b in head):
                out.append(FrameError(HJ212_FRAME, f"length {head!r} is not four decimal digits",
                                      bytes(buf[:1024])))
                self._resync()
                continue
            n = int(head)
            total = n + _OVERHEAD
            if total > MAX_PACKET:
                out.append(FrameError(HJ212_FRAME, f"declared packet of {total} bytes exceeds {MAX_PACKET}",
                                      bytes(buf[:1024])))
                self._resync()
                continue
            if len(buf) < total:
                # a shorter packet may follow if the declared length is wrong: look for its '##' early
                nxt = buf.find(b"##", 2)
                if nxt > 0 and buf.find(b"\r\n", 6, nxt) >= 0:
                    out.append(FrameError(HJ212_FRAME, f"declared length {n} does not match the data "
                                          "segment", bytes(buf[:min(nxt, 1024)])))
                    del buf[:nxt]
                    continue
                return out
            raw = bytes(buf[:total])
            crc_text = raw[6 + n:10 + n]
            if raw[10 + n:] != b"\r\n" or not all(b in _HEX for b in crc_text):
                out.append(FrameError(HJ212_FRAME, f"declared length {n} does not match the data segment "
                                      "(no CRC and CRLF where it ends)", raw[:1024]))
                self._resync()
                continue
            del buf[:total]
            segment = raw[6:6 + n]
            got = int(crc_text, 16)
            want = crc16(segment)
            if got != want:
                out.append(FrameError(HJ212_CRC, f"CRC {crc_text.decode()} does not match {want:04X}", raw[:1024]))
                continue
            out.append(Frame(segment, raw))
        return out

    def _resync(self) -> None:
        """Drop the bad frame's start: the next '##' (if any) is where the next packet may begin."""
        buf = self._buf
        nxt = buf.find(b"##", 2)
        if nxt < 0:
            keep = 1 if buf.endswith(b"#") else 0
            self._hunted += len(buf) - keep
            del buf[:len(buf) - keep]
        else:
            del buf[:nxt]


# ---------------------------------------------------------------------------------------------------------------
# The first step of the listener's fast path: a read that is one whole packet of the common shape, framed and
# split at once. :func:`common_packet` gives ``(QN, ST, CN, PW, MN, Flag, CP items)`` when the read is exactly
# one packet whose length, CRC and CRLF are right (:func:`single`), whose header is the standard's own
# (:func:`hj212.packet.common_head`) and whose CP is plain, without empty groups (:func:`hj212.packet.cp_items`);
# else None, and :meth:`FrameReader.feed` and the general parser take the read as before.
#
# It is ``hj212._speedups.common_packet`` (C, hj212/_speedups.c) when the extension is built, else
# :func:`common_packet_py`, the composition of the three Python functions, which stays the reference: the C
# function answers only where the Python one gives the same answer (and returns None for anything outside
# printable ASCII, which the Python path then decides). tests/test_hj212_speedups.py compares the two on
# generated, mutated and arbitrary inputs; bench/bench_hj212.py measures both.

CommonPacket = tuple[str, str, str, str, str, int, dict[str, str]]


def common_segment(segment: bytes) -> CommonPacket | None:
    """The common shape of a framed packet's data segment: ``common_head``, then ``cp_items``; else None."""
    try:
        head = common_head(segment.decode())
    except UnicodeDecodeError:
        return None
    if head is None:
        return None
    items = cp_items(head[6])
    if items is None:
        return None
    qn, st, cn, pw, mn, flag, _body = head
    return qn, st, cn, pw, mn, flag, items


def common_packet_py(data: bytes) -> CommonPacket | None:
    """:func:`common_packet` in Python: ``single``, then :func:`common_segment`."""
    segment = single(data)
    return None if segment is None else common_segment(segment)


try:
    from hj212._speedups import common_packet
    from hj212._speedups import state as _state
    SPEEDUPS = True
except ImportError:  # not built (no C compiler where smartpark was installed): the same functions in Python
    common_packet, _state = common_packet_py, _py_state
    SPEEDUPS = False
