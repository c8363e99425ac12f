"""The engine feed: accepted real-time readings to MQTT at QoS 1, one future per logger packet for all its
PUBACKs, on the project's publisher (:class:`smartpark.mqtt.Publisher`).

Why not aiomqtt: a burst of 5,000 loggers is 5,000 publishes in flight at once, and aiomqtt (paho under an
asyncio adapter) let a fifth of them time out after 10 s in bench/bench_hj212.py. The publisher's
:meth:`~smartpark.mqtt.Publisher.submit` writes a packet's PUBLISHes from the listener's callback (no task,
no await; the writes of one loop iteration in one system call) and settles one future when the last PUBACK
comes, the PUBACKs being cut out of whole reads by its connection. A lost connection fails every publish in
flight (their packets get no 9014 and their loggers resend) and the connection is made again with
full-jitter backoff. MQTT 3.1.1 whatever the target says: publishing needs nothing of 5, and a version 5
broker's Receive Maximum (Mosquitto's default: 20) would cap the window of a burst.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from smartpark.config import MqttTarget
from smartpark.mqtt import MQTT311, MqttRefused, Publisher
from smartpark.timing import Backoff, first_of

log = logging.getLogger(__name__)
_RECONNECT = Backoff(0.2, 15.0)  # the wait before reconnecting, by the attempts since the last connection


class EngineFeed:
    """``run(stop)`` in a task keeps the connection; ``await publish(messages)`` -> True once all are PUBACKed;
    :meth:`publish_soon` is the same from a callback."""

    def __init__(self, target: MqttTarget, client_id: str, *, timeout: float = 10.0, keepalive: int = 30,
                 window: int = 60_000) -> None:
        self.target = target
        self.client_id = client_id
        self.timeout = timeout
        self.keepalive = keepalive
        self.window = window  # packet ids in flight (of 65,535)
        self._pub: Publisher | None = None
        self._up = asyncio.Event()
        self._failed_before = 0  # groups that failed on earlier connections
        self._failed_waiting = 0  # publishes that timed out waiting for the connection or for room
        self._tasks: set[asyncio.Task[bool]] = set()  # publishes waiting for the connection or for room

    @property
    def failed(self) -> int:
        """Publishes (one per packet) the broker did not acknowledge in full in time."""
        pub = self._pub
        return self._failed_before + self._failed_waiting + (pub.groups_failed if pub is not None else 0)

    async def run(self, stop: asyncio.Event) -> None:
        attempt = 0
        while not stop.is_set():
            pub = Publisher(self.target, self.client_id, protocol=MQTT311, keepalive=self.keepalive,
                            window=self.window)
            try:
                async with pub:
                    attempt = 0
                    self._pub = pub
                    self._up.set()
                    try:
                        await first_of(stop.wait(), pub.wait_closed())
                    finally:
                        self._up.clear()
                if not stop.is_set():
                    log.warning("hj212: lost the MQTT broker connection of the engine feed; reconnecting")
            except (OSError, ConnectionError, TimeoutError, MqttRefused) as exc:
                attempt += 1
                delay = _RECONNECT.delay(attempt)
                log.warning("hj212: MQTT broker for the alarm engine unavailable (%s); retry in %.1f s", exc, delay)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await stop.wait()
            finally:
                if self._pub is pub:
                    self._pub = None
                    self._failed_before += pub.groups_failed

    def publish_soon(self, messages: list[tuple[str, bytes]],
                     deadline: float | None = None) -> asyncio.Future[Any]:
        """Publish at QoS 1 now if the connection is up and has room (else as :meth:`publish` does, in a task);
        :func:`acked` tells from the future whether the broker acknowledged every one by ``deadline`` (loop
        time; default: ``timeout`` from now). No task and no future per message: the packet
        path of every logger takes this, a burst of 5,000 loggers at once."""
        pub = self._pub
        if pub is None or not self._up.is_set() or not pub.connected or not pub.room(len(messages)):
            task = asyncio.ensure_future(self.publish(messages))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return task
        if deadline is None:
            deadline = asyncio.get_running_loop().time() + self.timeout
        return pub.submit(messages, deadline)

    async def publish(self, messages: list[tuple[str, bytes]]) -> bool:
        """Publish at QoS 1; True once the broker acknowledged every one, False if it could not in time."""
        if not messages:
            return True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        try:
            async with asyncio.timeout_at(deadline):
                while True:
                    await self._up.wait()
                    pub = self._pub
                    if pub is None:
                        continue
                    try:
                        await pub.wait_room(len(messages))
                    except (ConnectionError, RuntimeError):
                        await asyncio.sleep(0.05)  # the run loop notices the loss and reconnects
                        continue
                    break
                try:
                    error = await pub.submit(messages, deadline)
                except ConnectionError as exc:  # lost since wait_room
                    self._failed_waiting += 1
                    error = exc
                if error is not None:
                    log.warning("hj212: %d snapshots not accepted by the broker (%s); no 9014 for their packet",
                                len(messages), error)
                    return False
                return True
        except TimeoutError:
            self._failed_waiting += 1
            log.warning("hj212: %d snapshots not accepted by the broker (timeout); no 9014 for their packet",
                        len(messages))
            return False


def acked(fut: asyncio.Future[Any]) -> bool:
    """Whether a future of :meth:`EngineFeed.publish_soon` (or a batch's) means "every message acknowledged"
    (durable): True from :meth:`EngineFeed.publish` and the collector, None from the publisher's
    :meth:`~smartpark.mqtt.Publisher.submit` (whose failures are an exception as the result)."""
    if fut.cancelled() or fut.exception() is not None:
        return False
    result = fut.result()
    return result is True or result is None


