"""The one backoff (smartpark.timing.Backoff): its draws, and the schedules the services take from it."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from alerts.events import AlarmEvent
from alerts.notify import Outbox, Sender, WebhookNotifier
from alerts.notify.notifiers import Notification
from devstack import free_port
from smartpark.timing import Backoff, first_of

T0 = 1_764_201_600_000


def notification() -> Notification:
    event = AlarmEvent("plant/tank/level/hh", "plant", "tank", "level", "hh", "high", "raised", "UNACK", 95.0,
                       90.0, T0, "alarm")
    return Notification("event", "plant", "high", "t", "b", event, "n1")


class TestBackoff:
    """Full jitter: attempt n waits U(floor * b, b) with b = min(cap, base * 2**min(n, max_exponent))."""

    def test_next_counts_and_reset_starts_over(self) -> None:
        """next() draws for the current attempt and counts it; reset() after a success starts from base."""
        b = Backoff(0.5, 30.0, rng=random.Random(3))
        ref = random.Random(3)
        assert [b.next() for _ in range(8)] == [ref.uniform(0, min(30.0, 0.5 * 2 ** n)) for n in range(8)]
        assert b.n == 8 and b.bound() == 30.0
        b.reset()
        assert b.n == 0 and b.bound() == 0.5

    def test_delay_of_attempt_n_draws_without_counting(self) -> None:
        """delay(n) is attempt n's wait for a caller that keeps the count (the outbox): the state stays."""
        b = Backoff(0.2, 15.0, rng=random.Random(11))
        ref = random.Random(11)
        got = [b.delay(n) for n in (1, 2, 3, 7, 20)]
        assert got == [ref.uniform(0, min(15.0, 0.2 * 2 ** n)) for n in (1, 2, 3, 7, 20)]
        assert b.n == 0
        assert [b.bound(n) for n in (0, 1, 6, 7)] == [0.2, 0.4, 12.8, 15.0]

    def test_exponent_stops_at_max_exponent(self) -> None:
        """A destination down for days (thousands of failures) gets the capped wait, not an OverflowError;
        a small cap of the exponent bounds the wait below the cap."""
        b = Backoff(0.5, 30.0, rng=random.Random(1))
        assert 0 <= b.delay(5_000) <= 30.0
        small = Backoff(1e-3, 30.0, max_exponent=4)
        assert small.bound(100) == pytest.approx(0.016)
        for _ in range(10):
            small.next()
        assert small.n == 4

    def test_floor_keeps_the_wait_off_zero(self) -> None:
        """floor 0.5 ("equal jitter"): every wait lies in [b/2, b], as the spool's retry of a full disk does."""
        b = Backoff(0.25, 5.0, floor=0.5, rng=random.Random(5))
        ref = random.Random(5)
        for n in range(1, 9):
            bound = min(5.0, 0.25 * 2 ** n)
            got = b.delay(n)
            assert got == pytest.approx(ref.uniform(0.5, 1.0) * bound)
            assert bound / 2 <= got <= bound


class TestOutboxSchedule:
    """The sender's persisted next-attempt times: now + U(0, min(30 s, 0.5 s * 2**k)) after the k-th
    consecutive failure, drawn from the one Backoff."""

    def test_next_attempt_times_follow_the_backoff(self, tmp_path: Path) -> None:
        """A destination that refuses connections: each failure stores next_at from the same formula."""
        now = [T0]

        async def main() -> list[tuple[int, int]]:
            notifier = WebhookNotifier(f"http://127.0.0.1:{free_port()}/never")
            with Outbox(tmp_path / "outbox.sqlite") as outbox:
                sender = Sender(notifier, outbox, lambda: now[0])
                sender.retry.rng = random.Random(42)
                outbox.add([(notifier.name, notification())], now[0])
                got = []
                for _ in range(9):
                    await sender.step()
                    head = outbox.head(notifier.name)
                    assert head is not None
                    got.append((head.attempts, head.next_at - now[0]))
                    now[0] = head.next_at
                await notifier.close()
                return got

        got = asyncio.run(main())
        ref = random.Random(42)
        assert got == [(k, int(ref.uniform(0, min(30.0, 0.5 * 2 ** k)) * 1000)) for k in range(1, 10)]

    def test_thousands_of_failures_keep_the_cap(self, tmp_path: Path) -> None:
        """After more consecutive failures than 2**k fits a float, the next attempt is still within 30 s."""
        now = [T0]

        async def main() -> int:
            notifier = WebhookNotifier(f"http://127.0.0.1:{free_port()}/never")
            with Outbox(tmp_path / "outbox.sqlite") as outbox:
                sender = Sender(notifier, outbox, lambda: now[0])
                outbox.add([(notifier.name, notification())], now[0])
                sender.failures = 1_100  # the destination has been down that many attempts
                await sender.step()
                head = outbox.head(notifier.name)
                await notifier.close()
                assert head is not None
                return head.next_at - now[0]

        assert 0 <= asyncio.run(main()) <= 30_000


class TestFirstOf:
    """``first_of`` returns once the first awaitable is done and cancels the others, so no waiter is left."""

    def test_the_first_done_ends_the_wait_and_the_rest_are_cancelled(self) -> None:
        async def go() -> tuple[bool, bool]:
            stop, closed = asyncio.Event(), asyncio.Event()
            slow = asyncio.ensure_future(closed.wait())
            asyncio.get_running_loop().call_later(0.01, stop.set)
            await first_of(stop.wait(), slow)
            await asyncio.sleep(0)
            return stop.is_set(), slow.cancelled()
        assert asyncio.run(go()) == (True, True)
