"""The touched-periods journal: which five-minute periods received readings since the rollups last looked.

The collector notes every batch of readings once InfluxDB has answered 204 (direct writes and spool replay
alike: the only place that knows when a reading became queryable), before the batch's messages are acked
or its spool record committed; a crash in between redelivers the messages, which are noted again. The
rollup runner takes what was noted and recomputes those periods from ``raw``.

On disk: ``<dir>/journal`` holds one line per noted batch, the five-minute period numbers (epoch ms //
300,000) it touched, comma-separated. Writers append under an exclusive ``flock``, so several collector
processes sharing a state directory can note at once; :meth:`Journal.take` renames the file to
``taking`` under the same lock, so that nothing is noted into a file being read, and removes it only once
the periods are recomputed (:meth:`Journal.done`): a runner that crashes mid-way takes them again.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)

PERIOD_MS = 300_000  # the finest rollup, reading_5m


def touched_periods(lines: Sequence[str]) -> set[int]:
    """Five-minute period numbers of ``reading`` lines at millisecond precision (their last field is the ts)."""
    return {int(line[line.rindex(" ") + 1:]) // PERIOD_MS for line in lines}


class Journal:
    """``Journal(state_dir / "rollups")``: :meth:`note` (writers), :meth:`take` / :meth:`done` (the runner)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)
        self.path = self.dir / "journal"
        self.taking = self.dir / "taking"
        self._lock_path = self.dir / "lock"
        self._made = False

    def _dirs(self) -> None:
        if not self._made:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._made = True

    def note_lines(self, lines: Sequence[str]) -> None:
        """Note the periods of a batch of ``reading`` lines just written (millisecond timestamps)."""
        if lines:
            self.note(touched_periods(lines))

    def note(self, periods: Iterable[int]) -> None:
        """Append the periods; survives the process being killed (written before return, not fsync'd)."""
        ordered = sorted(set(periods))
        if not ordered:
            return
        try:
            self._dirs()
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                with open(self.path, "a", encoding="ascii") as f:
                    f.write(",".join(map(str, ordered)) + "\n")
            finally:
                os.close(fd)  # releases the lock
        except OSError as exc:  # a full or read-only disk must not stop the readings: say what to rebuild
            first = datetime.fromtimestamp(ordered[0] * PERIOD_MS / 1000, UTC).isoformat()
            last = datetime.fromtimestamp((ordered[-1] + 1) * PERIOD_MS / 1000, UTC).isoformat()
            log.error("rollup journal %s not written (%s): run 'smartpark rollup rebuild --since %s --until %s'",
                      self.path, exc, first, last)

    def take(self) -> set[int]:
        """Every period noted and not yet :meth:`done` (also those of a take that did not finish)."""
        self._dirs()
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if self.path.exists():
                if self.taking.exists():  # an unfinished take: keep its periods, add the new ones
                    with open(self.taking, "a", encoding="ascii") as out:
                        out.write(self.path.read_text(encoding="ascii"))
                    self.path.unlink()
                else:
                    os.replace(self.path, self.taking)
        finally:
            os.close(fd)
        if not self.taking.exists():
            return set()
        periods: set[int] = set()
        for n, line in enumerate(self.taking.read_text(encoding="ascii").splitlines(), 1):
            try:
                periods.update(int(p) for p in line.split(",") if p)
            except ValueError:  # a torn last line after a crash of a writer: what it held was noted again
                log.warning("rollup journal %s line %d is unreadable, skipped: %r", self.taking, n, line[:80])
        return periods

    def done(self) -> None:
        """The taken periods are recomputed: forget them."""
        self.taking.unlink(missing_ok=True)
