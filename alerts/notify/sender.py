"""One sender per destination: takes the oldest pending notification of its destination from the outbox and
tries it, with a timeout, until the destination accepts it or it expires.

A destination that fails is retried with full-jitter exponential backoff, at most ``backoff_max`` (30 s) between
attempts, longer only when it answers with ``Retry-After``. The oldest pending notification is the head of its
destination's line: while it cannot be delivered, the others wait behind it, so a destination that is down for
hours costs one attempt per backoff period, however many notifications pile up for it, and the engine's
evaluation is not slowed by a growing outbox. Each sender is its own task: a hanging destination delays no other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable

from smartpark.errors import NotifyError
from smartpark.schema import DELIVERED, EXPIRED
from smartpark.timing import Backoff

from .notifiers import Notifier
from .outbox import Outbox

log = logging.getLogger(__name__)


class Sender:
    """``await Sender(notifier, outbox, now_ms).run()`` delivers ``notifier``'s notifications until cancelled."""

    def __init__(self, notifier: Notifier, outbox: Outbox, now_ms: Callable[[], int], *,
                 expire_s: float = 86_400.0, timeout: float = 10.0, backoff: float = 0.5,
                 backoff_max: float = 30.0) -> None:
        self.notifier = notifier
        self.dest = notifier.name
        self.outbox = outbox
        self.now_ms = now_ms
        self.expire_ms = int(expire_s * 1000)
        self.timeout = timeout
        self.retry = Backoff(backoff, backoff_max)  # the k-th consecutive failure waits U(0, min(max, b * 2**k))
        self.counts: Counter[str] = Counter()  # attempts, delivered, retries, expired, refused
        self.failures = 0  # consecutive failed attempts: the destination is down while > 0
        self._wake = asyncio.Event()
        outbox.on_add(lambda dest: self._wake.set() if dest == self.dest else None)

    @property
    def backoff(self) -> float:
        """The base of the retry wait (the first failure waits up to twice this)."""
        return self.retry.base

    @backoff.setter
    def backoff(self, seconds: float) -> None:
        self.retry.base = seconds

    async def run(self) -> None:
        try:
            while True:
                await self.step()
        finally:
            with contextlib.suppress(Exception):
                await self.notifier.close()

    async def _idle(self, seconds: float) -> None:
        """Wait until something new is recorded for this destination, at most ``seconds``."""
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, seconds)):
                await self._wake.wait()

    async def step(self) -> None:
        """Expire what is too old, then try the head of the line if it is due."""
        now = self.now_ms()
        n_exp = self.outbox.expire(self.dest, now - self.expire_ms, now,
                                   f"not accepted within {self.expire_ms // 1000} s")
        if n_exp:
            self.counts["expired"] += n_exp
            log.error("notifications to %s: %d expired undelivered after %d s (in the notification measurement)",
                      self.dest, n_exp, self.expire_ms // 1000)
        row = self.outbox.head(self.dest)
        if row is None:
            await self._idle(1.0)
            return
        if row.next_at > now:  # the destination's backoff; expiry is looked at again within a second
            await self._idle(min(1.0, (row.next_at - now) / 1000))
            return
        attempts = row.attempts + 1
        self.counts["attempts"] += 1
        try:
            async with asyncio.timeout(self.timeout):
                await self.notifier.notify(row.n)
        except (NotifyError, TimeoutError) as exc:
            detail = str(exc) or f"no answer within {self.timeout:g} s"
            if isinstance(exc, NotifyError) and not exc.recoverable:
                self.counts["refused"] += 1
                self.outbox.finish(row.seq, self.dest, EXPIRED, attempts, f"refused: {detail}", self.now_ms())
                log.error("notification %s refused by %s, not retried: %s", row.n.id, self.dest, detail)
                return
            self._failed(row.seq, attempts, detail, exc.retry_after if isinstance(exc, NotifyError) else None)
            return
        except Exception as exc:  # a notifier bug: logged, retried like a failure, bounded by the expiry
            log.exception("notifier %s failed on %s", self.dest, row.n.id)
            self._failed(row.seq, attempts, repr(exc)[:300], None)
            return
        self.outbox.finish(row.seq, self.dest, DELIVERED, attempts, "", self.now_ms())
        self.counts["delivered"] += 1
        if self.failures:
            log.info("notifications to %s: delivered again after %d failed attempts", self.dest, self.failures)
        self.failures = 0

    def _failed(self, seq: int, attempts: int, detail: str, retry_after: float | None) -> None:
        self.failures += 1
        self.counts["retries"] += 1
        delay = self.retry.delay(self.failures)
        if retry_after is not None:
            delay = max(delay, retry_after)
        self.outbox.retry(seq, attempts, self.now_ms() + int(delay * 1000), detail)
        if self.failures == 1 or self.failures % 100 == 0:
            log.warning("notifications to %s: attempt failed (%s); %d pending, retrying with backoff", self.dest,
                        detail, self.outbox.pending[self.dest])
