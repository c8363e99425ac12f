"""Journaled ``reading`` lines to arrays, a batch at a time: series index, ts, value, has-quality.

The collector's lines (CONTRACT §3: ``reading,asset=..,sensor=..,site=.. value=V[,quality="q"][,flag="f"] TS``,
millisecond timestamps) are parsed with numpy over the batch's bytes: the 13 digits of each timestamp, the
value's text between ``value=`` and the next comma or space (then cast from bytes by numpy, which reads
decimal text as Python's ``float`` does: correctly rounded), each line's series by a hash of its tag bytes,
checked byte for byte.
A batch that does not fit that shape (another timestamp length, an unexpected field) is read line by line
with the same rules; what neither reads raises :class:`ValueError`.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from .compute import Key

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]

_POW10 = 10 ** np.arange(12, -1, -1, dtype=np.int64)
_VALUE = np.frombuffer(b" value=", np.uint8)
_PRIME = np.uint64(1_099_511_628_211)


class Series:
    """Series key (the line's bytes up to its first space) <-> small integer, and its tags."""

    def __init__(self) -> None:
        self.index: dict[bytes, int] = {}
        self.keys: list[Key] = []

    def id(self, key: bytes) -> int:
        got = self.index.get(key)
        if got is None:
            if not key.startswith(b"reading,"):
                raise ValueError(f"not a reading: {key[:80]!r}")
            tags = dict(t.split("=", 1) for t in key.decode().split(",")[1:])
            got = self.index[key] = len(self.keys)
            self.keys.append((tags.get("site", ""), tags.get("asset", ""), tags.get("sensor", "")))
        return got


def parse(body: bytes, count: int, series: Series) -> tuple[I64, I64, F64, B]:
    """``count`` lines (joined by ``\\n``) -> (series index, ts, value, has quality) arrays, in line order."""
    try:
        got = _fast(body, count, series)
    except (IndexError, ValueError):
        got = None
    return got if got is not None else _slow(body, count, series)


PAD = 128  # zero bytes after a batch, so that a row of up to PAD bytes can start at any of its bytes


def _rows(pad: npt.NDArray[np.uint8], starts: I64, width: int) -> npt.NDArray[np.uint8]:
    """The ``width`` bytes from each start, one row each (a copy through a strided view: no index matrix)."""
    return sliding_window_view(pad, width)[starts]


def _fast(body: bytes, count: int, series: Series) -> tuple[I64, I64, F64, B] | None:
    pad = np.frombuffer(body + b"\n" + bytes(PAD), np.uint8)
    buf = pad[:len(body) + 1]
    nl = np.flatnonzero(buf == 10)
    if len(nl) != count:
        return None
    starts = np.empty(count, np.int64)
    starts[0] = 0
    starts[1:] = nl[:-1] + 1
    tsp = nl - 13  # first digit of the timestamp
    if (tsp - 1 <= starts).any() or (buf[tsp - 1] != 32).any():
        return None
    digits = _rows(pad, tsp, 13) - np.uint8(48)
    if (digits > 9).any():
        return None
    ts = digits.astype(np.int64) @ _POW10
    spaces = np.flatnonzero(buf == 32)
    first = spaces[np.searchsorted(spaces, starts)]  # the space after the tags
    if (first >= tsp - 1).any() or (_rows(pad, first, 7) != _VALUE).any():
        return None
    vstart = first + 7
    vend = tsp - 1
    quality = np.zeros(count, np.bool_)
    if body.find(b'"') >= 0:  # string fields (quality, flag) after the value
        commas = np.flatnonzero(buf == 44)
        line = np.searchsorted(nl, commas)
        in_fields = commas > first[line]
        if in_fields.any():
            commas, line = commas[in_fields], line[in_fields]
            np.minimum.at(vend, line, commas)
            for i in np.unique(line).tolist():
                quality[i] = b",quality=" in body[int(first[i]):int(tsp[i])]
    size = vend - vstart
    if (size <= 0).any() or int(size.max()) > PAD:
        return None
    width = int(size.max())
    text = _rows(pad, vstart, width)
    text[np.arange(width) >= size[:, None]] = 0
    values = text.view(f"S{width}").reshape(-1).astype(np.float64)  # as float() reads
    if len(values) != count or not np.isfinite(values).all():
        return None
    ids = _series_ids(pad, starts, first, series)
    return ids, ts, values, quality


def _series_ids(pad: npt.NDArray[np.uint8], starts: I64, first: I64, series: Series) -> I64:
    """Each line's series index: a hash of its tag bytes, every line then compared with its series' first."""
    length = first - starts
    width = -(-int(length.max()) // 8) * 8
    if width > PAD:
        raise ValueError("tags longer than the fast path reads")
    mat = _rows(pad, starts, width)
    mat[np.arange(width) >= length[:, None]] = 0
    words = mat.view(np.uint64)
    h = length.astype(np.uint64)
    with np.errstate(over="ignore"):
        for j in range(words.shape[1]):
            h = h * _PRIME + words[:, j]
    _, rep, inverse = np.unique(h, return_index=True, return_inverse=True)
    if not (words == words[rep[inverse]]).all():
        raise ValueError("two series with one hash")
    ids = np.array([series.id(bytes(pad[int(starts[r]):int(first[r])])) for r in rep.tolist()], np.int64)
    return ids[inverse.reshape(-1)]


def _slow(body: bytes, count: int, series: Series) -> tuple[I64, I64, F64, B]:
    lines = body.decode().split("\n")
    if len(lines) != count:
        raise ValueError(f"{len(lines)} lines, not {count}")
    ids = np.empty(count, np.int64)
    ts = np.empty(count, np.int64)
    values = np.empty(count, np.float64)
    quality = np.zeros(count, np.bool_)
    for i, line in enumerate(lines):
        sp = line.index(" ")
        last = line.rindex(" ")
        fields = line[sp + 1:last]
        if not fields.startswith("value="):
            raise ValueError(f"no value first: {line[:80]!r}")
        comma = fields.find(",")
        values[i] = float(fields[6:] if comma < 0 else fields[6:comma])
        quality[i] = comma >= 0 and ",quality=" in fields
        ts[i] = int(line[last + 1:])
        ids[i] = series.id(line[:sp].encode())
    if not np.isfinite(values).all():
        raise ValueError("a value that is not finite")
    return ids, ts, values, quality
