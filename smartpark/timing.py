"""Time as people write it and waits as services take them: one duration grammar, one backoff.

Every command that takes a duration (``--for 8h``, ``--duration 15m``, ``--history 3h``, ``--notify-expire 24h``)
reads it with :func:`parse_duration`; every service that waits before trying again (MQTT reconnects, InfluxDB
writes, the spool, notifications) draws the wait from a :class:`Backoff`.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Awaitable

from .errors import UsageError

UNITS = {"ms": 0.001, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|sec|min|s|m|h|d)")


def parse_duration(text: str) -> float:
    """``90`` (seconds), ``90s``, ``15m``, ``2h``, ``1d``, ``1h30m``, ``250ms``, ``8 h`` -> seconds.

    Raises :class:`UsageError` (exit 2) for anything else, naming what was given."""
    s = str(text).strip().lower()
    if _NUMBER.fullmatch(s):
        return float(s)
    parts = _PART.findall(s)
    if not parts or "".join(n + u for n, u in parts) != re.sub(r"\s+", "", s):
        raise UsageError(f"bad duration {str(text)[:40]!r}: use e.g. 90s, 15m, 8h, 1d or 1h30m")
    return sum(float(n) * UNITS[u] for n, u in parts)


class Wakeup:
    """One consumer waiting for producers: ``await wait(seconds)`` returns once :meth:`wake` is called or the
    time is up, whichever comes first (an inbox's ``take``: the MQTT subscriber's, the HJ 212 listener's)."""

    __slots__ = ("_future",)

    def __init__(self) -> None:
        self._future: asyncio.Future[None] | None = None

    def wake(self) -> None:
        f = self._future
        if f is not None and not f.done():
            f.set_result(None)

    async def wait(self, seconds: float) -> None:
        self._future = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(seconds):
                await self._future
        except TimeoutError:
            pass
        finally:
            self._future = None


class Backoff:
    """Full-jitter exponential backoff (the AWS architecture blog's): wait U(0, min(cap, base * 2**n)).

    ``next()`` gives the next wait and counts the attempt, ``reset()`` after a success; ``bound()`` is the most
    the next wait can be (for log lines and tests). ``delay(n)`` is the wait of attempt ``n`` without counting,
    for a caller that keeps the count itself (the notification outbox persists it, a log line names it).
    ``floor`` is the least share of the bound a wait takes: 0 is full jitter, 0.5 the blog's "equal jitter",
    for a retry that must not come back at once (a full disk). The exponent stops at ``max_exponent``, so a
    destination down for days never overflows the float. ``rng`` makes it deterministic where a test needs that."""

    def __init__(self, base: float = 0.1, cap: float = 5.0, *, rng: random.Random | None = None,
                 max_exponent: int = 16, floor: float = 0.0) -> None:
        self.base, self.cap, self.n, self.max_exponent, self.floor = base, cap, 0, max_exponent, floor
        self.rng = rng or random.Random()

    def bound(self, n: int | None = None) -> float:
        """The most the wait of attempt ``n`` (default: the next one) can be."""
        return min(self.cap, self.base * 2 ** min(self.n if n is None else n, self.max_exponent))

    def delay(self, n: int) -> float:
        """A wait for attempt ``n`` (0 is the first retry's exponent), drawn without counting an attempt."""
        b = self.bound(n)
        return self.rng.uniform(self.floor * b, b)

    def next(self) -> float:
        delay = self.delay(self.n)
        self.n = min(self.n + 1, self.max_exponent)
        return delay

    def reset(self) -> None:
        self.n = 0


async def first_of(*aws: Awaitable[object]) -> None:
    """Wait until the first of ``aws`` is done (a stop event, a closed connection …); cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
