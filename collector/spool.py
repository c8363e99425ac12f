"""The durable spool: where batches wait, fsync'd, while InfluxDB is unreachable or slow.

Append-only segment files ``<dir>/NNNNNNNNNN.seg``; each record is ``<u32 length><u32 crc32><body>``
with body = precision (``m``/``n``) + the JSON list of its lines (a string field may hold a newline, so
lines cannot simply be joined). A record is acknowledged to MQTT only after ``fsync``. Records are
replayed oldest first; ``cursor`` remembers how far replay got (not fsync'd: after a crash a record may
be written twice, which InfluxDB collapses for readings). A torn tail after ``kill -9`` (short record or
bad CRC) is cut off at open; it was never acknowledged. The size is bounded: :meth:`append` waits while the
spool is full, so the collector stops acking and the broker holds the rest.

The disk may say no: full, read-only, gone. A write that fails or comes up short is undone (the segment is
cut back to where the batch began) and raises :class:`SpoolError`, so the batch is not acknowledged; the
spool says what is wrong in :attr:`Spool.error` until a write succeeds again. A spool directory that cannot
be opened at start is opened again at the next append, rather than stopping the collector.
"""

from __future__ import annotations

import asyncio
import errno
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


class SpoolError(Exception):
    """The spool could not make a batch durable (disk full, read-only, I/O error); nothing of it counts.

    ``errno`` is the operating system's error number (``errno.ENOSPC``, ``errno.EROFS``, ...)."""

    def __init__(self, message: str, errno_: int | None = None) -> None:
        self.errno = errno_
        super().__init__(message)
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
        self._opened = False
        self._lock = asyncio.Lock()
        self.error: str | None = None  # what the disk last said when a write failed; None once one succeeds
        self.failures = 0  # appends that failed since start

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> Spool:
        if self._entered:
            raise RuntimeError("Spool cannot be entered twice")
        self._entered = True
        self._changed = asyncio.Condition()
        try:
            await asyncio.to_thread(self._open)
        except OSError as exc:  # read-only or missing mount, no permission: the next append tries again
            self.error = _describe(exc)
            log.error("spool: cannot open %s (%s); batches that need the spool are not acknowledged until it can "
                      "be written", self.dir, self.error)
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
        """Find what a previous run left: records after the cursor, a torn tail cut off (never acknowledged)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        cur_seg, cur_off = self._read_cursor()
        found: list[_Entry] = []  # taken only once every segment is read: a retried open adds nothing twice
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
                    found.append(_Entry(seg, off, end - off))
                off = end
            if off < len(data):
                log.warning("spool: cutting a torn record at the end of %s (%d bytes kept of %d)",
                            path, off, len(data))
                try:
                    with open(path, "r+b") as f:
                        f.truncate(off)
                        os.fsync(f.fileno())
                except OSError as exc:  # read-only: the tail stays, behind the records kept; new ones go elsewhere
                    log.error("spool: cannot cut the torn record of %s (%s)", path, _describe(exc))
        self._entries.extend(found)
        self._bytes += sum(e.size for e in found)
        # new segments come after the replay position even when no segment is left (a drained spool deletes
        # its last one): a segment numbered below the position would be taken for replayed at the next start
        self._seg = max(segments[-1] if segments else 0, cur_seg)
        self._opened = True
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
            try:
                entries = await asyncio.to_thread(self._write, data)
            except SpoolError as exc:
                self.failures += 1
                if self.error is None:
                    log.error("spool: %s", exc)
                self.error = str(exc)
                raise
        if self.error is not None:
            log.warning("spool: writing again in %s (the disk had said: %s)", self.dir, self.error)
            self.error = None
        self._entries.extend(entries)
        self._bytes += size
        async with self._changed:
            self._changed.notify_all()
        return size

    def _write(self, data: list[bytes]) -> list[_Entry]:
        """Append and fsync ``data``, or raise :class:`SpoolError` with the segment as it was before."""
        try:
            if not self._opened:
                self._open()
            if self._fd is None or self._seg_size >= self.segment_bytes:
                self._new_segment()
        except OSError as exc:
            raise SpoolError(f"cannot write to {self.dir}: {_describe(exc)}", exc.errno) from None
        assert self._fd is not None
        fd, start = self._fd, self._seg_size
        buf = memoryview(b"".join(data))
        try:
            done = 0
            while done < len(buf):  # a short write is not an error yet: the next one says why it stopped
                n = os.write(fd, buf[done:])
                if n <= 0:
                    raise OSError(errno.ENOSPC, "write wrote nothing")
                done += n
            os.fsync(fd)
        except OSError as exc:
            self._undo(fd, start)
            raise SpoolError(f"cannot write {len(buf)} bytes to {self._path(self._seg)} ({start + done} of "
                             f"{start + len(buf)} bytes on disk): {_describe(exc)}", exc.errno) from None
        entries = []
        for d in data:
            entries.append(_Entry(self._seg, self._seg_size, len(d)))
            self._seg_size += len(d)
        return entries

    def _new_segment(self) -> None:
        fd = os.open(self._path(self._seg + 1), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            dfd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            os.close(fd)
            raise
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._seg, self._seg_size = fd, self._seg + 1, 0

    def _undo(self, fd: int, size: int) -> None:
        """Cut a failed append off its segment; if even that fails, leave the segment for a new one, so that the
        torn tail stays last in its file and is cut at the next open."""
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        except OSError as exc:
            log.error("spool: cannot cut a failed write off %s (%s); continuing in a new segment",
                      self._path(self._seg), _describe(exc))
            os.close(fd)
            self._fd = None

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
        """The oldest record is in InfluxDB: forget it, and delete the segments nothing refers to any more, the
        one being appended to as well once the spool is drained (the next append starts a new one): a disk the
        spool had filled gets its room back, and a position it could not record leaves nothing to send twice."""
        e = self._entries.popleft()
        self._bytes -= e.size
        if not self._entries and e.segment == self._seg:
            async with self._lock:  # not while an append writes into it (an append also ends the drain)
                if not self._entries:
                    self.close()
        # after the lock: an append it waited for may have added the next record
        nxt = self._entries[0] if self._entries else None
        cursor = (nxt.segment, nxt.offset) if nxt else (e.segment, e.offset + e.size)
        try:
            for seg in range(e.segment, cursor[0] if nxt else e.segment + 1):  # first: on a full disk this makes room
                if seg != self._seg or self._fd is None:  # a closed segment is no longer appended to
                    self._path(seg).unlink(missing_ok=True)
            (self.dir / "cursor.tmp").write_text(f"{cursor[0]} {cursor[1]}\n")
            os.replace(self.dir / "cursor.tmp", self.dir / "cursor")
        except OSError as exc:  # the record is in InfluxDB all the same; after a restart it may be sent again
            log.warning("spool: cannot record the replay position in %s (%s)", self.dir, _describe(exc))
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    async def wait_nonempty(self) -> None:
        assert self._changed is not None
        async with self._changed:
            await self._changed.wait_for(lambda: bool(self._entries))


def _describe(exc: OSError) -> str:
    """An operating-system error in words an operator acts on."""
    hint = {errno.ENOSPC: "the disk is full", errno.EROFS: "the file system is read-only",
            errno.EDQUOT: "the disk quota is exhausted", errno.EACCES: "permission denied",
            errno.EIO: "I/O error"}.get(exc.errno or 0)
    text = exc.strerror or str(exc)
    return f"{hint} ({text})" if hint and hint.lower() not in text.lower() else text
