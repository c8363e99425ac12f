"""Injected time. The engine never reads the wall clock itself, so delays, shelving expiry and averages
are tested by setting the time rather than by sleeping."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """What the engine asks for the current time, in epoch milliseconds."""

    #: how far a reading's timestamp may lie ahead of ``now_ms()`` before the engine treats it as a sensor
    #: clock fault and evaluates the reading at its arrival instead; None: readings define time
    max_ahead_ms: int | None

    def now_ms(self) -> int: ...

    def observe(self, ts_ms: int) -> None:
        """Told of every accepted reading's timestamp (the event clock follows them)."""


class WallClock:
    """Real time: for a live plant. A reading stamped more than ``max_ahead_s`` ahead of this machine's clock
    (a gateway with a wrong clock) is evaluated at its arrival: taken at its word, it would hold back every
    later reading of its sensor until real time caught up with it."""

    def __init__(self, max_ahead_s: float = 300.0) -> None:
        self.max_ahead_ms: int | None = int(max_ahead_s * 1000)

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def observe(self, ts_ms: int) -> None:
        pass


class EventClock:
    """Time is the newest reading timestamp seen: for replays and accelerated simulations."""

    max_ahead_ms: int | None = None

    def __init__(self, start_ms: int = 0) -> None:
        self._now = start_ms

    def now_ms(self) -> int:
        return self._now

    def observe(self, ts_ms: int) -> None:
        if ts_ms > self._now:
            self._now = ts_ms


class ManualClock(EventClock):
    """A clock the test sets (``set``/``advance``); readings do not move it."""

    def observe(self, ts_ms: int) -> None:
        pass

    def set(self, ts_ms: int) -> None:
        self._now = ts_ms

    def advance(self, seconds: float) -> int:
        self._now += int(seconds * 1000)
        return self._now


CLOCKS = {"wall": WallClock, "event": EventClock}
