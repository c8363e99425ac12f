"""The data segment of an HJ 212 packet: ``QN=..;ST=..;CN=..;PW=..;MN=..;Flag=..;CP=&&...&&``.

:func:`parse` checks the field syntax (the CRC alone has only 256 values, so a damaged packet often passes
it) and raises only :class:`PacketError`; :func:`encode` is its inverse (``parse(encode(p)) == p``).
Packets of HJ/T 212-2005 (no ``QN``, no ``Flag``) parse as well. The CP is kept as groups of ``key=value``
items (``;`` between groups, ``,`` between items); :meth:`Packet.data` reads the pollutant fields out of it.

``Flag`` (HJ 212-2017 §6.3.3): bit 0 asks for an acknowledgement, bit 1 marks a split packet (``PNUM``,
``PNO``), bits 2..7 the edition: 0 HJ/T 212-2005, 1 HJ 212-2017, 2 HJ 212-2025.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from smartpark.errors import DecodeError
from smartpark.schema import HJ212_FRAME

Items = tuple[tuple[str, str], ...]

VERSIONS = {0: "2005", 1: "2017", 2: "2025"}
FLAG_ACK = 0x01
FLAG_SPLIT = 0x02

_HEAD_ORDER = ("QN", "ST", "CN", "PW", "MN", "Flag", "PNUM", "PNO")
_QN = re.compile(r"\d{14,20}")
_ST = re.compile(r"\d{2}")
_CN = re.compile(r"\d{4}")
_PW = re.compile(r"[!-~]{0,9}")  # printable ASCII without space; HJ 212-2017: 6 characters
_MN = re.compile(r"[0-9A-Za-z\-_]{1,32}")  # 14 (2005), 24 (2017), 27 (2025) characters in the field
_INT = re.compile(r"\d{1,4}")
_KEY = re.compile(r"[A-Za-z0-9_\-]{1,64}")
_BAD_VALUE = re.compile(r"[;,&=]")
# The header nearly every 2017/2025 logger sends, in the standard's order and nothing else: one match gives
# what the field-by-field checks below give (each group is its field's pattern without ``;,&=``), a third of
# a packet's parse time in a burst of loggers; anything else takes the general path
_COMMON_HEAD = re.compile(r"QN=(\d{14,20});ST=(\d{2});CN=(\d{4});PW=([!-%'-+\--:<>-~]{0,9});"
                          r"MN=([0-9A-Za-z\-_]{1,32});Flag=(\d{1,4});")
_DATATIME = re.compile(r"(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\d{3})?")
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


class PacketError(DecodeError):
    """A packet that cannot be used; ``reason`` is its dead-letter reason, ``mn`` its MN when it was read."""

    def __init__(self, reason: str, detail: str, mn: str | None = None) -> None:
        super().__init__(reason, detail)
        self.mn = mn


@dataclass(frozen=True, slots=True)
class Packet:
    st: str
    cn: str
    pw: str
    mn: str
    cp: tuple[Items, ...] = ()
    qn: str | None = None
    flag: int | None = None
    pnum: int | None = None
    pno: int | None = None
    extra: Items = field(default=())  # header fields the standard does not name, kept in order
    cp_text: str | None = None  # an encrypted CP as sent (HJ 212-2025), before decryption

    @property
    def wants_ack(self) -> bool:
        return bool(self.flag is not None and self.flag & FLAG_ACK)

    @property
    def split(self) -> bool:
        return bool(self.flag is not None and self.flag & FLAG_SPLIT)

    @property
    def version(self) -> str:
        """``2005``, ``2017`` or ``2025`` (a packet without Flag is of the 2005 edition)."""
        return VERSIONS.get((self.flag or 0) >> 2, "2017")

    @property
    def version_bits(self) -> int:
        return (self.flag or 0) & ~0x03

    def items(self) -> dict[str, str]:
        """Every CP item by key (a later group's item wins)."""
        return {k: v for group in self.cp for k, v in group}

    def data(self) -> dict[str, dict[str, str]]:
        """Pollutant fields: ``a21026-Rtd=12.5,a21026-Flag=N`` -> ``{"a21026": {"Rtd": "12.5", "Flag": "N"}}``."""
        out: dict[str, dict[str, str]] = {}
        for group in self.cp:
            for key, value in group:
                code, sep, name = key.rpartition("-")
                if sep and code and name:
                    out.setdefault(code, {})[name] = value
        return out


_DATATIMES: dict[tuple[str, ZoneInfo], int] = {}  # loggers of one park send the same few DataTime at a time


def datatime_ms(text: str, tz: ZoneInfo) -> int:
    """``DataTime`` (``YYYYMMDDhhmmss``, optionally with milliseconds) in the park's time zone -> epoch ms.

    Remembered for the last few thousand texts: a burst of loggers reporting the same second (every
    logger's real-time data are on the minute's or the interval's grid) costs one conversion, not one each."""
    ms = _DATATIMES.get((text, tz))
    if ms is None:
        ms = _datatime_ms(text, tz)
        if len(_DATATIMES) >= 4096:
            _DATATIMES.clear()
        _DATATIMES[text, tz] = ms
    return ms


def _datatime_ms(text: str, tz: ZoneInfo) -> int:
    m = _DATATIME.fullmatch(text)
    if not m:
        raise PacketError(HJ212_FRAME, f"DataTime {text[:32]!r} is not YYYYMMDDhhmmss[zzz]")
    y, mo, d, h, mi, s, ms = m.groups()
    try:
        dt = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), tzinfo=tz)
    except ValueError as exc:
        raise PacketError(HJ212_FRAME, f"DataTime {text!r}: {exc}") from None
    return int(dt.timestamp()) * 1000 + int(ms or 0)


def format_datatime(ms: int, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(ms / 1000, tz).strftime("%Y%m%d%H%M%S")


def parse(segment: bytes, *, cp_plain: bool = True) -> Packet:
    """A data segment -> :class:`Packet`. With ``cp_plain=False`` a CP without ``=`` is kept as text in
    ``cp_text`` (an HJ 212-2025 encrypted CP, see :mod:`hj212.crypto`) instead of being refused."""
    try:
        text = segment.decode("utf-8")
    except UnicodeDecodeError:
        raise PacketError(HJ212_FRAME, "data segment is not UTF-8 text") from None
    cp_at = text.find("CP=&&")
    if cp_at < 0:
        raise PacketError(HJ212_FRAME, "no 'CP=&&' in the data segment", _peek_mn(text))
    if not text.endswith("&&") or len(text) < cp_at + 7:
        raise PacketError(HJ212_FRAME, "CP does not end with '&&'", _peek_mn(text))
    head_text, body = text[:cp_at], text[cp_at + 5:-2]
    common = common_head(text)
    if common is not None:
        qn, st, cn, pw, mn, flag, body = common
        if not cp_plain and body and "=" not in body:
            return Packet(st=st, cn=cn, pw=pw, mn=mn, qn=qn, flag=flag, cp_text=body)
        return Packet(st=st, cn=cn, pw=pw, mn=mn, cp=parse_cp(body, mn), qn=qn, flag=flag)
    return _parse_general(text, head_text, body, cp_plain)


def common_head(text: str) -> tuple[str, str, str, str, str, int, str] | None:
    """``(QN, ST, CN, PW, MN, Flag, CP content)`` of a data segment whose header is the common one (the
    standard's fields in its order, nothing else, one byte of Flag, not split), else None: then :func:`parse`'s
    general path decides. What :func:`parse` itself takes first, and the listener's fast path."""
    m = _COMMON_HEAD.match(text)
    if m is None:
        return None
    at = m.end()
    if not text.startswith("CP=&&", at) or not text.endswith("&&") or len(text) < at + 7:
        return None
    qn, st, cn, pw, mn, flag_text = m.groups()
    flag = int(flag_text)
    if flag > 255 or flag & FLAG_SPLIT:
        return None
    return qn, st, cn, pw, mn, flag, text[at + 5:-2]


def cp_items(body: str) -> dict[str, str] | None:
    """Every item of a CP content by key (a later item wins, as :meth:`Packet.items`) when its syntax is
    right and it holds no empty group; else None (:func:`parse_cp` decides). One split of the whole content,
    no tuple per group: the listener's fast path for real-time data."""
    if not body or ";;" in body or body[0] == ";" or body[-1] == ";" or not _CP.fullmatch(body):
        return None
    parts = body.replace(";", ",").replace("=", ",").split(",")
    return dict(zip(parts[::2], parts[1::2], strict=True))


def _parse_general(text: str, head_text: str, body: str, cp_plain: bool) -> Packet:
    """Any header: each field checked for its syntax, unknown fields kept (in ``extra``)."""
    head: dict[str, str] = {}
    extra: list[tuple[str, str]] = []
    if head_text and not head_text.endswith(";"):
        raise PacketError(HJ212_FRAME, "the field before CP does not end with ';'", _peek_mn(text))
    for part in head_text[:-1].split(";") if head_text else ():
        key, sep, value = part.partition("=")
        if not sep or not _KEY.fullmatch(key) or _BAD_VALUE.search(value):
            raise PacketError(HJ212_FRAME, f"header field {part[:40]!r} is not KEY=VALUE", _peek_mn(text))
        if key in head or any(k == key for k, _ in extra):
            raise PacketError(HJ212_FRAME, f"header field {key} appears twice", _peek_mn(text))
        if key in _HEAD_ORDER:
            head[key] = value
        else:
            extra.append((key, value))
    mn = head.get("MN")
    for key, pattern in (("ST", _ST), ("CN", _CN), ("PW", _PW), ("MN", _MN)):
        if key not in head:
            raise PacketError(HJ212_FRAME, f"no {key} field", mn)
        if not pattern.fullmatch(head[key]):
            raise PacketError(HJ212_FRAME, f"{key}={head[key][:40]!r} is malformed", mn if key != "MN" else None)
    for key, pattern in (("QN", _QN), ("Flag", _INT), ("PNUM", _INT), ("PNO", _INT)):
        if key in head and not pattern.fullmatch(head[key]):
            raise PacketError(HJ212_FRAME, f"{key}={head[key][:40]!r} is malformed", mn)
    flag = int(head["Flag"]) if "Flag" in head else None
    if flag is not None and flag > 255:
        raise PacketError(HJ212_FRAME, f"Flag={flag} is not one byte", mn)
    pnum = int(head["PNUM"]) if "PNUM" in head else None
    pno = int(head["PNO"]) if "PNO" in head else None
    if flag is not None and flag & FLAG_SPLIT:
        if pnum is None or pno is None or not 1 <= pno <= pnum:
            raise PacketError(HJ212_FRAME, "a split packet needs PNUM and PNO with 1 <= PNO <= PNUM", mn)
    cp_text: str | None = None
    groups: tuple[Items, ...] = ()
    if not cp_plain and body and "=" not in body:
        cp_text = body
    else:
        groups = parse_cp(body, mn)
    return Packet(st=head["ST"], cn=head["CN"], pw=head["PW"], mn=head["MN"], cp=groups, qn=head.get("QN"),
                  flag=flag, pnum=pnum, pno=pno, extra=tuple(extra), cp_text=cp_text)


_ITEM = r"[A-Za-z0-9_\-]{1,64}=[^;,&=]*"
_CP = re.compile(rf"(?:{_ITEM}(?:,{_ITEM})*)?(?:;(?:{_ITEM}(?:,{_ITEM})*)?)*")


def parse_cp(body: str, mn: str | None = None) -> tuple[Items, ...]:
    """CP content (between ``&&`` and ``&&``) -> groups of items; empty groups (a trailing ``;``) are skipped.

    The syntax is checked by one regular expression over the whole content, then split: a third of the time
    of checking item by item (bench/bench_hj212.py)."""
    if not _CP.fullmatch(body):
        bad = next((i for g in body.split(";") if g for i in g.split(",") if not re.fullmatch(_ITEM, i)), body)
        raise PacketError(HJ212_FRAME, f"CP item {bad[:40]!r} is not KEY=VALUE", mn)
    # every item is KEY=VALUE with neither part holding ',' or '=': a group's keys and values alternate once
    # its '=' are read as ',' (pairs made by zip, not a call per item)
    out = []
    for group in body.split(";"):
        if group:
            parts = group.replace("=", ",").split(",")
            out.append(tuple(zip(parts[::2], parts[1::2], strict=True)))
    return tuple(out)


def encode_cp(groups: tuple[Items, ...]) -> str:
    return ";".join(",".join(f"{k}={v}" for k, v in group) for group in groups)


def encode(p: Packet) -> bytes:
    """The data segment of ``p`` (frame it with :func:`hj212.frame.frame`)."""
    parts: list[str] = []
    if p.qn is not None:
        parts.append(f"QN={p.qn}")
    parts += [f"ST={p.st}", f"CN={p.cn}", f"PW={p.pw}", f"MN={p.mn}"]
    if p.flag is not None:
        parts.append(f"Flag={p.flag}")
    if p.pnum is not None:
        parts.append(f"PNUM={p.pnum}")
    if p.pno is not None:
        parts.append(f"PNO={p.pno}")
    parts += [f"{k}={v}" for k, v in p.extra]
    cp = p.cp_text if p.cp_text is not None else encode_cp(p.cp)
    return (";".join(parts) + f";CP=&&{cp}&&").encode()


def _peek_mn(text: str) -> str | None:
    """The MN of a packet refused before its fields are checked, for the dead letter's topic."""
    m = re.search(r"(?:^|;)MN=([0-9A-Za-z\-_]{1,32});", text)
    return m.group(1) if m else None
