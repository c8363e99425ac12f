"""Keeps the rollups current: take the journal, aggregate what it can itself, recompute the rest from raw.

Runs as ``smartpark rollup run`` beside the collectors (same ``--state-dir``), every ``interval`` seconds
(default 60, well inside CONTRACT §10's five minutes); one runner per state directory (``runner.lock``).

**Fast path.** At start the runner sets its horizon ``t0`` (``<state dir>/rollups/horizon``): the start of the
first five-minute window after the newest reading in raw (none: every window), so that no point of a window
from ``t0`` on was written before this runner read the journal. Those windows are aggregated from the
journaled readings (:class:`rollups.windows.Windows`) once the journal's data time and the clock have passed
their end by ``lateness``; their hours and days are combined as for the raw recompute.

**Raw recompute** (InfluxQL over raw, as always): windows before ``t0``, readings for a window already
finished, periods noted without their values, torn batches. A period still open waits in the journal until it
has ended. What InfluxDB does not answer stays in the journal and is tried again at the next turn: nothing is
lost, and a late period is recomputed as soon as it is noted. At start the runner also recomputes the last
``warm_h`` hours, which covers readings that other writers put in ``raw`` while no runner was running.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import time
from dataclasses import dataclass

from smartpark.config import Settings
from smartpark.errors import UsageError, WriteError
from smartpark.influx import InfluxClient, Retention
from smartpark.park import Park

from .compute import RAW_MEASUREMENT, Agg, Key, Rollups
from .journal import PERIOD_MS, Journal
from .windows import NEG_INF, Windows

log = logging.getLogger(__name__)

FLUSH_FIVES = 50_000  # five-minute points computed from the journal before they are written mid-turn


def journal_for(settings: Settings) -> Journal:
    """The journal every writer of a state directory notes into, and its runner takes from."""
    return Journal(settings.state_path / "rollups")


@dataclass(slots=True)
class RunnerStats:
    turns: int = 0
    periods: int = 0  # five-minute periods recomputed from raw
    points: int = 0
    failures: int = 0
    from_journal: int = 0  # five-minute windows aggregated from the journal


class RollupRunner:
    """``await RollupRunner(settings, park).run(stop)`` until ``stop`` is set."""

    def __init__(self, settings: Settings, park: Park, *, interval: float = 60.0, warm_h: float = 2.0,
                 lateness: float = 120.0, max_held: int = 2_000_000) -> None:
        self.settings = settings
        self.park = park
        self.interval = interval
        self.warm_h = warm_h
        self.lateness_ms = int(lateness * 1000)
        self.max_held = max_held
        self.journal = journal_for(settings)
        self.horizon_path = self.journal.horizon_path
        self.windows: Windows | None = None  # set by start(); without it every period is read from raw
        self.stats = RunnerStats()

    def _lock(self) -> int:
        """One runner per state directory: two would each see half of the journal's readings."""
        self.journal.dir.mkdir(parents=True, exist_ok=True)
        path = self.journal.dir / "runner.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UsageError(f"another 'smartpark rollup run' holds {path}: one runner per state directory"
                             ) from None
        return fd

    async def run(self, stop: asyncio.Event) -> None:
        fd = self._lock()
        try:
            await self._run(stop)
        finally:
            os.close(fd)

    async def _run(self, stop: asyncio.Event) -> None:
        async with InfluxClient(self.settings.influx(), timeout=60.0) as db:
            rollups: Rollups | None = None
            while True:
                try:
                    if rollups is None:
                        await db.ensure_database()
                        retention = await db.ensure_retention()
                        empty = await self.start(db, retention)
                        if self.warm_h > 0 and not empty:
                            now = int(time.time() * 1000)
                            self.journal.note(range((now - int(self.warm_h * 3_600_000)) // PERIOD_MS,
                                                    now // PERIOD_MS + 1))
                        rollups = Rollups(db, retention, self.park.park.timezone)
                    await self.turn(rollups)
                except (WriteError, TimeoutError, ValueError) as exc:
                    self.stats.failures += 1
                    log.warning("rollups: InfluxDB did not answer (%s); the periods stay in the journal, "
                                "next try in %.0f s", exc, self.interval)
                except OSError as exc:  # the journal's directory (full disk, permissions): say it, keep turning
                    self.stats.failures += 1
                    log.error("rollups: journal %s unreadable (%s); next try in %.0f s", self.journal.dir, exc,
                              self.interval)
                if stop.is_set():
                    return
                try:
                    async with asyncio.timeout(self.interval):
                        await stop.wait()
                except TimeoutError:
                    pass

    async def start(self, db: InfluxClient, retention: Retention, now_ms: int | None = None) -> bool:
        """Set the horizon since which the journal is complete, before the first take, and persist it in
        ``horizon``; note for the raw recompute what a previous runner may have left open. Returns True when
        raw holds no reading (the horizon is then the beginning of time)."""
        previous = self._read_horizon()
        measurement = retention.measurement(RAW_MEASUREMENT)
        rows = await db.rows(f"SELECT last(value) FROM {measurement}")
        newest = int(rows[0]["time"]) if rows else None
        t0 = NEG_INF if newest is None else (newest // PERIOD_MS + 1) * PERIOD_MS
        now = int(time.time() * 1000) if now_ms is None else now_ms
        self.windows = Windows(t0, lateness_ms=self.lateness_ms, max_held=self.max_held)
        if newest is not None and previous is not None:
            # windows the previous runner had open (or not yet written) when it stopped: from raw
            since = previous.get("finished_ms")
            if since is not None:
                since -= int(previous.get("lateness_ms") or self.lateness_ms) + PERIOD_MS
            else:
                since = previous.get("t0_ms")
            if since is None:
                first = await db.rows(f"SELECT first(value) FROM {measurement}")
                since = int(first[0]["time"]) if first else newest
            self.journal.note(range(since // PERIOD_MS, newest // PERIOD_MS + 1))
        self._save_horizon(now)
        if newest is not None and newest > now + 3_600_000:
            log.warning("rollups: raw holds a reading at %d ms, more than an hour ahead of the clock: windows "
                        "before it are recomputed from raw", newest)
        log.info("rollups: the journal's readings are aggregated for windows from %s on",
                 "the beginning" if newest is None else f"{t0} ms")
        return newest is None

    def _read_horizon(self) -> dict[str, int | None] | None:
        try:
            data = json.loads(self.horizon_path.read_text(encoding="ascii"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("rollups: %s unreadable (%s): the last %.0f h are recomputed from raw", self.horizon_path,
                        exc, self.warm_h)
            return None
        return data if isinstance(data, dict) else None

    def _save_horizon(self, now_ms: int) -> None:
        """``t0_ms`` (null: the beginning of time) and ``finished_ms``: windows ending ``lateness`` before it
        are written; a runner that starts after this one notes the rest for the raw recompute."""
        w = self.windows
        if w is None:
            return
        text = json.dumps({"t0_ms": None if w.t0 == NEG_INF else w.t0,
                           "finished_ms": None if w.horizon == NEG_INF else w.horizon,
                           "lateness_ms": w.lateness, "saved_at_ms": now_ms}) + "\n"
        self.journal.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.horizon_path.with_suffix(".tmp")
        tmp.write_text(text, encoding="ascii")
        os.replace(tmp, self.horizon_path)

    async def turn(self, rollups: Rollups, now_ms: int | None = None) -> int:
        """One pass over the journal; returns the rollup points written.

        A period recomputed from raw that is still open at ``now_ms`` waits in the journal until it has
        ended: the current five minutes are then read from raw once rather than at every turn, and their
        point appears at most one turn after their last reading.
        """
        now = int(time.time() * 1000) if now_ms is None else now_ms
        self.stats.turns += 1
        windows = self.windows
        raw: set[int] = set()
        fives: dict[tuple[Key, int], Agg] = {}
        computed: set[int] = set()
        points = 0
        writing: asyncio.Future[int] | None = None
        try:
            for block in self.journal.take_blocks():
                if windows is None:
                    raw |= block.periods
                    continue
                if block.body is None:
                    windows.poison(block.periods, raw)
                    continue
                try:
                    windows.fold(block.body, block.count, raw)
                except ValueError as exc:
                    log.warning("rollups: a journaled batch is unreadable (%s); its periods go to the raw recompute",
                                exc)
                    windows.poison(block.periods, raw)
                    continue
                if windows.data_time - windows.horizon > PERIOD_MS:  # a catch-up: finish as it goes
                    self._finished(windows.finish(now), fives, computed)
                    if len(fives) >= FLUSH_FIVES:  # written while the next batches are read
                        if writing is not None:
                            points += await writing
                        writing = asyncio.ensure_future(self._write(rollups, set(), fives, computed))
                        fives, computed = {}, set()
                await asyncio.sleep(0)  # let a write in progress send and receive
            if writing is not None:
                points += await writing
                writing = None
            if windows is not None:
                self._finished(windows.finish(now, turn_end=True), fives, computed)
        except BaseException:  # the windows finished and not yet written go to the raw recompute
            self.journal.note(computed)
            if writing is not None:
                writing.cancel()  # its windows are noted by _write itself
            raise
        ready = {p for p in raw if (p + 1) * PERIOD_MS <= now}
        waiting = raw - ready
        if ready or fives:
            points += await self._write(rollups, ready, fives, computed)
        self.journal.note(waiting)  # before done(): a crash in between leaves them noted twice, not lost
        self.journal.done()
        self._save_horizon(now)
        self.stats.periods += len(ready)
        self.stats.points += points
        if ready or computed:
            log.info("rollups: %d five-minute periods from the journal, %d recomputed from raw, %d points",
                     len(computed), len(ready), points)
        return points

    def _finished(self, got: dict[tuple[Key, int], Agg], fives: dict[tuple[Key, int], Agg],
                  computed: set[int]) -> None:
        fives.update(got)
        computed.update(ts // PERIOD_MS for _, ts in got)

    async def _write(self, rollups: Rollups, raw: set[int], fives: dict[tuple[Key, int], Agg],
                     computed: set[int]) -> int:
        """Write the windows finished from the journal (and recompute ``raw``). Should InfluxDB fail, the
        finished windows are noted for the raw recompute: nothing of them is kept in memory any more."""
        try:
            points = await rollups.recompute(raw, fives, computed)
        except BaseException:
            self.journal.note(computed)
            raise
        self.stats.from_journal += len(computed)
        return points
