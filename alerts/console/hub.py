"""Live events for the open consoles: a numbered ring of the latest events and one bounded queue per client.

The service hands every batch of events to :meth:`EventHub.publish` from its one emit point; this never
blocks and costs, per event, one JSON encoding into a ready Server-Sent Events frame and one ``put_nowait``
per connected console (which writes whatever has queued up in one go). A console that reconnects sends the
number of the last event it saw (SSE ``Last-Event-ID``) and receives what it missed from the ring; one that
fell further behind than the ring (or whose queue overflowed) is told to reload its lists (``reset``), so it
never shows a state that misses an event.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import deque
from collections.abc import Iterable

from ..events import AlarmEvent

RESET = "reset"
Frame = tuple[int, bytes]  # (event number, the SSE frame that carries it)


def reset_frame(seq: int) -> Frame:
    return seq, f"id: {seq}\nevent: {RESET}\ndata: {{}}\n\n".encode()


class EventHub:
    """``publish(events)`` from the engine side; ``hub.subscribe(last_id)`` per console."""

    def __init__(self, keep: int = 10_000, queue_size: int = 5_000) -> None:
        self._ring: deque[Frame] = deque(maxlen=keep)
        self._seq = itertools.count(1)
        self._last = 0
        self._queues: set[asyncio.Queue[Frame | None]] = set()
        self.queue_size = queue_size

    @property
    def last_id(self) -> int:
        return self._last

    @property
    def clients(self) -> int:
        return len(self._queues)

    def publish(self, events: Iterable[AlarmEvent]) -> None:
        for ev in events:
            seq = next(self._seq)
            item = (seq, f"id: {seq}\ndata: {json.dumps(ev.to_dict(), ensure_ascii=False)}\n\n".encode())
            self._last = seq
            self._ring.append(item)
            for q in self._queues:
                n = q.qsize()
                if n < self.queue_size:
                    q.put_nowait(item)
                elif n == self.queue_size:  # this console cannot keep up: it reloads instead of missing events
                    q.put_nowait(None)

    def since(self, last_id: int) -> list[Frame] | None:
        """Events after ``last_id`` from the ring, or None when some of them have left it."""
        if last_id >= self._last:
            return []
        if not self._ring or self._ring[0][0] > last_id + 1:
            return None
        return [item for item in self._ring if item[0] > last_id]

    def subscribe(self, last_id: int | None) -> Subscription:
        """What a console must see from ``last_id`` on (None: only new events), then live events."""
        return Subscription(self, last_id)


class Subscription:
    """One console's stream: ``await sub.get(wait_s)`` -> the frames due (oldest first), [] on timeout;
    ``close()`` (or ``with``) when the console goes away."""

    def __init__(self, hub: EventHub, last_id: int | None) -> None:
        self._hub = hub
        self._q: asyncio.Queue[Frame | None] = asyncio.Queue()  # bounded in publish
        hub._queues.add(self._q)
        self._backlog: list[Frame] = []
        self._seen = hub.last_id
        if last_id is not None:
            missed = hub.since(last_id)
            if missed is None:
                self._backlog.append(reset_frame(hub.last_id))
            else:
                self._backlog.extend(missed)
                self._seen = missed[-1][0] if missed else last_id

    async def get(self, wait_s: float, limit: int = 500) -> list[Frame]:
        if self._backlog:
            backlog, self._backlog = self._backlog, []
            return backlog
        try:
            async with asyncio.timeout(wait_s):
                first = await self._q.get()
        except TimeoutError:
            return []
        out: list[Frame] = []
        item: Frame | None = first
        while True:
            if item is None:  # overflowed: the console reloads its lists, which include what it skipped
                while not self._q.empty():
                    self._q.get_nowait()
                self._seen = self._hub.last_id
                return [reset_frame(self._seen)]
            if item[0] > self._seen:  # an event published while the backlog was read was sent with it
                self._seen = item[0]
                out.append(item)
            if len(out) >= limit or self._q.empty():
                return out
            item = self._q.get_nowait()

    def close(self) -> None:
        self._hub._queues.discard(self._q)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
