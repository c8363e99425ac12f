"""The durable spool: where batches wait, fsync'd, while InfluxDB is unreachable or slow.

Append-only segment files ``<dir>/NNNNNNNNNN.seg``; each record is ``<u32 length><u32 crc32><body>``
with body = precision (``m``/``n``) + the JSON list of its lines (a string field may hold a newline, so
lines cannot simply be joined). A record is acknowledged to MQTT only after ``fsync``. Records are
replayed oldest first; ``cursor`` remembers how far replay got (not fsync'd: after a crash a record may
be written twice, which InfluxDB collapses for readings). A torn tail after ``kill -9`` (short record or
bad CRC) is cut off at open. The size is bounded: :meth:`append` waits while the spool is full, so the
collector stops acking and the broker holds the rest.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import struct
import zlib
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<II")
_PRECISION = {"ms": b"m", "ns": b"n"}
_FROM_CODE = {b"m": "ms", b"n": "ns"}


@dataclass(frozen=True, slots=True)
class Record:
    """One write waiting for InfluxDB: its lines and their timestamp precision."""

    precision: str
    lines: list[str]


@dataclass(slots=True)
class _Entry:
    segment: int
    offset: int  # of the header
    size: int  # header + body


def encode_record(record: Record) -> bytes:
    body = _PRECISION[record.precision] + json.dumps(record.lines, ensure_ascii=False).encode()
    return _HEADER.pack(len(body), zlib.crc32(body)) + body


class Spool:
    """``async with Spool(dir, max_bytes) as spool``; ``append`` (durable), ``peek``/``commit`` (replay)."""

    def __init__(self, directory: str | os.PathLike[str], max_bytes: int, *,
                 segment_bytes: int = 16 * 1024 * 1024) -> None:
        self.dir = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._entries: deque[_Entry] = deque()
        self._bytes = 0
        self._fd: int | None = None
        self._seg = 0  # segment being appended to (0: none yet)
        self._seg_size = 0
        self._changed: asyncio.Condition | None = None
        self._entered = False
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> Spool:
        if self._entered:
            raise RuntimeError("Spool cannot be entered twice")
        self._entered = True
        self._changed = asyncio.Condition()
        await asyncio.to_thread(self._open)
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _path(self, seg: int) -> Path:
        return self.dir / f"{seg:010d}.seg"

    def _open(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        cur_seg, cur_off = self._read_cursor()
        segments = sorted(int(p.stem) for p in self.dir.glob("*.seg") if p.stem.isdigit())
        for seg in segments:
            path = self._path(seg)
            if seg < cur_seg:
                path.unlink(missing_ok=True)
                continue
            data = path.read_bytes()
            off = 0
            while off + _HEADER.size <= len(data):
                length, crc = _HEADER.unpack_from(data, off)
                end = off + _HEADER.size + length
                if end > len(data) or zlib.crc32(data[off + _HEADER.size:end]) != crc:
                    break
                if not (seg == cur_seg and off < cur_off):
                    self._entries.append(_Entry(seg, off, end - off))
                    self._bytes += end - off
                off = end
            if off < len(data):
                log.warning("spool: cutting a torn record at the end of %s (%d bytes kept of %d)",
                            path, off, len(data))
                with open(path, "r+b") as f:
                    f.truncate(off)
                    os.fsync(f.fileno())
        self._seg = (segments[-1] if segments else 0)
        if self._entries:
            log.warning("spool: %d records (%d bytes) from a previous run to replay", len(self._entries),
                        self._bytes)

    def _read_cursor(self) -> tuple[int, int]:
        try:
            seg, off = (self.dir / "cursor").read_text().split()
            return int(seg), int(off)
        except (OSError, ValueError):
            return 0, 0

    # ------------------------------------------------------------------ state
    @property
    def pending_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def empty(self) -> bool:
        return not self._entries

    # ------------------------------------------------------------------ append
    async def append(self, records: list[Record]) -> int:
        """Write and fsync ``records``; waits while the spool is full. Returns the bytes written."""
        data = [encode_record(r) for r in records if r.lines]
        size = sum(len(d) for d in data)
        if not size:
            return 0
        assert self._changed is not None
        async with self._changed:
            # an oversize batch is still taken into an empty spool, or nothing could ever move
            await self._changed.wait_for(lambda: not self._entries or self._bytes + size <= self.max_bytes)
        async with self._lock:
            entries = await asyncio.to_thread(self._write, data)
        self._entries.extend(entries)
        self._bytes += size
        async with self._changed:
            self._changed.notify_all()
        return size

    def _write(self, data: list[bytes]) -> list[_Entry]:
        if self._fd is None or self._seg_size >= self.segment_bytes:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            # the state moves on only once the new segment is open: a failed open (disk full, a path that
            # cannot be created) leaves the spool as it was, and the next append tries the same segment again
            fd = os.open(self._path(self._seg + 1), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._seg, self._fd, self._seg_size = self._seg + 1, fd, 0
            dfd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        entries = []
        for d in data:
            entries.append(_Entry(self._seg, self._seg_size, len(d)))
            self._seg_size += len(d)
        os.write(self._fd, b"".join(data))
        os.fsync(self._fd)
        return entries

    # ------------------------------------------------------------------ replay
    def peek(self) -> Record | None:
        """The oldest record not yet replayed."""
        if not self._entries:
            return None
        e = self._entries[0]
        with open(self._path(e.segment), "rb") as f:
            f.seek(e.offset)
            raw = f.read(e.size)
        body = raw[_HEADER.size:]
        return Record(_FROM_CODE[body[:1]], json.loads(body[1:]))

    async def commit(self) -> None:
        """The oldest record is in InfluxDB: forget it, and delete segments nothing refers to any more."""
        e = self._entries.popleft()
        self._bytes -= e.size
        nxt = self._entries[0] if self._entries else None
        cursor = (nxt.segment, nxt.offset) if nxt else (e.segment, e.offset + e.size)
        (self.dir / "cursor.tmp").write_text(f"{cursor[0]} {cursor[1]}\n")
        os.replace(self.dir / "cursor.tmp", self.dir / "cursor")
        done_upto = cursor[0] if nxt else (e.segment + 1 if e.segment != self._seg else e.segment)
        for seg in range(e.segment, done_upto):
            if seg != self._seg:
                self._path(seg).unlink(missing_ok=True)
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    async def wait_nonempty(self) -> None:
        assert self._changed is not None
        async with self._changed:
            await self._changed.wait_for(lambda: bool(self._entries))
