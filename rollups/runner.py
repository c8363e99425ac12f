"""Keeps the rollups current: take the touched periods from the journal, recompute them, forget them.

Runs as ``smartpark rollup run`` beside the collectors (same ``--state-dir``), every ``interval`` seconds
(default 60, well inside CONTRACT §10's five minutes). What InfluxDB does not answer stays in the journal and
is tried again at the next turn: nothing is lost, and a late period is recomputed as soon as it is noted.
At start the runner also recomputes the last ``warm_h`` hours, which covers readings that other writers put
in ``raw`` while no runner was running.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from smartpark.config import Settings
from smartpark.errors import WriteError
from smartpark.influx import InfluxClient
from smartpark.park import Park

from .compute import Rollups
from .journal import PERIOD_MS, Journal

log = logging.getLogger(__name__)


def journal_for(settings: Settings) -> Journal:
    """The journal every writer of a state directory notes into, and its runner takes from."""
    return Journal(settings.state_path / "rollups")


@dataclass(slots=True)
class RunnerStats:
    turns: int = 0
    periods: int = 0
    points: int = 0
    failures: int = 0


class RollupRunner:
    """``await RollupRunner(settings, park).run(stop)`` until ``stop`` is set."""

    def __init__(self, settings: Settings, park: Park, *, interval: float = 60.0, warm_h: float = 2.0) -> None:
        self.settings = settings
        self.park = park
        self.interval = interval
        self.warm_h = warm_h
        self.journal = journal_for(settings)
        self.stats = RunnerStats()

    async def run(self, stop: asyncio.Event) -> None:
        async with InfluxClient(self.settings.influx(), timeout=60.0) as db:
            rollups: Rollups | None = None
            now = int(time.time() * 1000)
            if self.warm_h > 0:
                self.journal.note(range((now - int(self.warm_h * 3_600_000)) // PERIOD_MS, now // PERIOD_MS + 1))
            while True:
                try:
                    if rollups is None:
                        await db.ensure_database()
                        rollups = Rollups(db, await db.ensure_retention(), self.park.park.timezone)
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

    async def turn(self, rollups: Rollups, now_ms: int | None = None) -> int:
        """One pass over the journal; returns the rollup points written.

        A period still open at ``now_ms`` waits in the journal until it has ended: the current five minutes
        are then read from raw once rather than at every turn, and their point appears at most one turn after
        their last reading.
        """
        now = int(time.time() * 1000) if now_ms is None else now_ms
        taken = self.journal.take()
        self.stats.turns += 1
        periods = {p for p in taken if (p + 1) * PERIOD_MS <= now}
        waiting = taken - periods
        if not periods:
            if waiting:
                self.journal.note(waiting)
                self.journal.done()
            return 0
        points = await rollups.recompute(periods)
        self.journal.note(waiting)  # before done(): a crash in between leaves them noted twice, not lost
        self.journal.done()
        self.stats.periods += len(periods)
        self.stats.points += points
        log.info("rollups: %d five-minute periods recomputed, %d points", len(periods), points)
        return points
