"""The rollup journal: which five-minute periods received readings since the rollups last looked, and the
readings themselves.

The collector notes every batch of readings once InfluxDB has answered 204 (direct writes and spool replay
alike: the only place that knows when a reading became queryable), before the batch's messages are acked
or its spool record committed; a crash in between redelivers the messages, which are noted again. The
rollup runner takes what was noted: it aggregates the readings of five-minute windows it has seen from
their start itself, and recomputes every other touched period from ``raw`` (rollups/runner.py).

On disk, ``<dir>/journal`` holds blocks separated by an empty line (every write begins with two newlines,
so that a write torn by a full disk or a kill, even in the middle of a line, stays a block of its own):

- ``P,P,...``: five-minute period numbers (epoch ms // 300,000) touched by readings whose values are not
  in the journal (the runner's start, a program noting only periods, a batch InfluxDB took only in part);
- ``@N P,P,...`` and then the batch's ``N`` ``reading`` lines exactly as written to InfluxDB: a batch with
  its values. A block whose line count or last timestamp does not match its header is torn: its periods
  go to the raw recompute, its lines are not used.

Writers append under an exclusive ``flock``, one write per batch, so several collector processes sharing a
state directory can note at once; :meth:`Journal.take` renames the file to ``taking`` under the same lock,
so that nothing is noted into a file being read, and removes it only once the periods are recomputed
(:meth:`Journal.done`): a runner that crashes mid-way takes them again.

Values are noted only where they will be used and never at the spool's expense; otherwise a batch is noted
by its periods alone (the raw recompute, always right): before any runner has started on the state
directory (no ``horizon`` file), when the journal holds more than ``max_bytes`` (no runner has taken it for
long), and when the file system would be left with less than ``RESERVE_SHARE`` of its size or
``RESERVE_BYTES`` free — the spool, which keeps readings while InfluxDB is down, shares that disk.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from smartpark.averages import FIVE_MIN_MS

log = logging.getLogger(__name__)

PERIOD_MS = FIVE_MIN_MS  # the finest rollup, reading_5m
MAX_JOURNAL_BYTES = 2 * 1024 ** 3  # beyond it, batches are noted without their values
RESERVE_BYTES = 1024 ** 3  # values are noted only while the disk keeps this much free ...
RESERVE_SHARE = 0.10  # ... and this share of its size
READ_CHUNK = 8 * 1024 * 1024


def touched_periods(lines: Sequence[str]) -> set[int]:
    """Five-minute period numbers of ``reading`` lines at millisecond precision (their last field is the ts).

    The timestamps' text is deduplicated before it is read as numbers: a snapshot's readings share one, and
    reading them was most of what noting a batch cost the collector."""
    return {int(ts) // PERIOD_MS for ts in {line.rpartition(" ")[2] for line in lines}}


@dataclass(slots=True)
class Block:
    """One noted write: its periods, and when the journal holds them whole, its ``count`` reading lines
    (``body``, joined by ``\\n``, as bytes); ``body`` is None for periods noted without values."""

    periods: set[int]
    body: bytes | None = None
    count: int = 0


def parse_block(data: bytes) -> Block | None:
    """A block of the journal (without the empty lines around it); None when nothing in it can be read."""
    head, _, body = data.partition(b"\n")
    if head.startswith(b"@"):
        try:
            count_text, _, period_text = head[1:].partition(b" ")
            count = int(count_text)
            periods = {int(p) for p in period_text.split(b",") if p}
        except ValueError:
            log.warning("rollup journal: unreadable batch header %r skipped", head[:80])
            return None
        lines = body.count(b"\n") + 1 if body else 0
        if lines == count and count:
            try:
                whole = int(body[body.rindex(b" ") + 1:]) // PERIOD_MS in periods
            except ValueError:
                whole = False
            if whole:
                return Block(periods, body, count)
        log.warning("rollup journal: a torn batch (%d of %d lines); its %d periods go to the raw recompute",
                    lines, count, len(periods))
        return Block(periods)
    periods = set()
    for row in data.split(b"\n"):
        try:
            periods.update(int(p) for p in row.split(b",") if p)
        except ValueError:  # a torn line after a crash of a writer: what it held was noted again
            log.warning("rollup journal: unreadable line skipped: %r", row[:80])
    return Block(periods)


class Journal:
    """``Journal(state_dir / "rollups")``: :meth:`note_lines` / :meth:`note` (writers), :meth:`take` or
    :meth:`take_blocks`, then :meth:`done` (the runner)."""

    def __init__(self, directory: str | os.PathLike[str], *, max_bytes: int = MAX_JOURNAL_BYTES) -> None:
        self.dir = Path(directory)
        self.path = self.dir / "journal"
        self.taking = self.dir / "taking"
        self.horizon_path = self.dir / "horizon"  # written by the runner (rollups/runner.py) when it starts
        self.max_bytes = max_bytes
        self._lock_path = self.dir / "lock"
        self._made = False
        self._full_said = False
        self._low_said = False

    def _dirs(self) -> None:
        if not self._made:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._made = True

    def _values_wanted(self, size: int) -> bool:
        """Whether a batch's values go into the journal (see the module's docstring); said once each way."""
        if not self.horizon_path.exists():
            return False  # no runner has started here: nobody would read them
        if size > self.max_bytes:
            if not self._full_said:
                self._full_said = True
                log.warning("rollup journal %s holds more than %d bytes (is 'smartpark rollup run' running?): "
                            "batches are noted without their values, and the rollups recompute them from raw",
                            self.path, self.max_bytes)
            return False
        fs = os.statvfs(self.dir)
        free, total = fs.f_bavail * fs.f_frsize, fs.f_blocks * fs.f_frsize
        if free < max(RESERVE_BYTES, RESERVE_SHARE * total):
            if not self._low_said:
                self._low_said = True
                log.warning("rollup journal %s: %d MB free on its disk, which the spool needs: batches are "
                            "noted without their values, and the rollups recompute them from raw", self.path,
                            free // 2**20)
            return False
        return True

    def note_lines(self, lines: Sequence[str], *, values: bool = True) -> None:
        """Note a batch of ``reading`` lines just written (millisecond timestamps): their periods, and with
        ``values`` the lines themselves, as they are (``values=False``: InfluxDB did not take all of them)."""
        if lines:
            self.note(touched_periods(lines), lines if values else None)

    def note(self, periods: Iterable[int], lines: Sequence[str] | None = None) -> None:
        """Append the periods (and the lines of a batch); survives the process being killed (written before
        return, not fsync'd)."""
        ordered = sorted(set(periods))
        if not ordered:
            return
        head = ",".join(map(str, ordered))
        try:
            self._dirs()
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                with open(self.path, "a", encoding="utf-8") as f:
                    if lines and not self._values_wanted(os.fstat(f.fileno()).st_size):
                        lines = None
                    if lines:
                        f.write(f"\n\n@{len(lines)} {head}\n" + "\n".join(lines) + "\n")
                    else:
                        f.write("\n\n" + head + "\n")
            finally:
                os.close(fd)  # releases the lock
        except OSError as exc:  # a full or read-only disk must not stop the readings: say what to rebuild
            first = datetime.fromtimestamp(ordered[0] * PERIOD_MS / 1000, UTC).isoformat()
            last = datetime.fromtimestamp((ordered[-1] + 1) * PERIOD_MS / 1000, UTC).isoformat()
            log.error("rollup journal %s not written (%s): run 'smartpark rollup rebuild --since %s --until %s'",
                      self.path, exc, first, last)

    def _take_file(self) -> bool:
        """Move what was noted into ``taking`` (joining an unfinished take); False when there is nothing."""
        self._dirs()
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if self.path.exists():
                if self.taking.exists():  # an unfinished take: keep what it held, add the new notes
                    with open(self.taking, "ab") as out, open(self.path, "rb") as src:
                        while chunk := src.read(READ_CHUNK):
                            out.write(chunk)
                    self.path.unlink()
                else:
                    os.replace(self.path, self.taking)
        finally:
            os.close(fd)
        return self.taking.exists()

    def take_blocks(self) -> Iterator[Block]:
        """Every block noted and not yet :meth:`done` (also those of a take that did not finish), read a few
        megabytes at a time."""
        if not self._take_file():
            return
        with open(self.taking, "rb") as f:
            rest = b""
            while True:
                chunk = f.read(READ_CHUNK)
                if not chunk:
                    break
                data = rest + chunk
                cut = data.rfind(b"\n\n")
                if cut < 0:
                    rest = data
                    continue
                rest = data[cut + 2:]
                for part in data[:cut].split(b"\n\n"):
                    part = part.strip(b"\n")
                    if part and (block := parse_block(part)) is not None:
                        yield block
            rest = rest.strip(b"\n")
            if rest and (block := parse_block(rest)) is not None:
                yield block

    def take(self) -> set[int]:
        """Every period noted and not yet :meth:`done` (also those of a take that did not finish)."""
        periods: set[int] = set()
        for block in self.take_blocks():
            periods |= block.periods
        return periods

    def done(self) -> None:
        """The taken periods are recomputed: forget them."""
        self.taking.unlink(missing_ok=True)
