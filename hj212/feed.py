"""The engine feed: accepted real-time readings to MQTT at QoS 1, each publish answered by its own PUBACK.

Why not aiomqtt: a burst of 5,000 loggers is 5,000 publishes in flight at once, and aiomqtt (paho under an
asyncio adapter) let a fifth of them time out after 10 s in bench/bench_hj212.py. Publishing needs only
CONNECT, PUBLISH, PUBACK and PINGREQ (as the simulators found, ``smartpark.mqtt.Publisher``), so this client
writes each PUBLISH into the stream and resolves a future per packet id when its PUBACK comes. A lost
connection fails every publish in flight (their packets get no 9014 and their loggers resend) and the
connection is made again with full-jitter backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl

from smartpark.config import MqttTarget

log = logging.getLogger(__name__)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: str) -> bytes:
    b = s.encode()
    return len(b).to_bytes(2, "big") + b


class EngineFeed:
    """``run(stop)`` in a task keeps the connection; ``await publish(messages)`` -> True once all are PUBACKed."""

    def __init__(self, target: MqttTarget, client_id: str, *, timeout: float = 10.0, keepalive: int = 30,
                 window: int = 60_000) -> None:
        self.target = target
        self.client_id = client_id
        self.timeout = timeout
        self.keepalive = keepalive
        self.window = window  # packet ids in flight (of 65,535)
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, _Group] = {}  # packet id -> the publish it belongs to
        self._pid = 0
        self._up = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._topics: dict[str, bytes] = {}
        self.failed = 0  # publishes the broker did not acknowledge in time
        self._out: list[bytes] = []
        self._tasks: set[asyncio.Task[bool]] = set()  # publishes waiting for the connection or for room

    async def run(self, stop: asyncio.Event) -> None:
        attempt = 0
        while not stop.is_set():
            try:
                reader, writer = await self._connect()
            except (OSError, ConnectionError, TimeoutError, asyncio.IncompleteReadError) as exc:
                attempt += 1
                delay = random.uniform(0, min(15.0, 0.2 * 2 ** min(attempt, 8)))
                log.warning("hj212: MQTT broker for the alarm engine unavailable (%s); retry in %.1f s", exc, delay)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await stop.wait()
                continue
            attempt = 0
            self._writer = writer
            self._up.set()
            tasks = [asyncio.create_task(self._read(reader)), asyncio.create_task(self._ping(writer)),
                     asyncio.create_task(stop.wait())]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                self._up.clear()
                self._writer = None
                for task in tasks:
                    task.cancel()
                self._fail_all(ConnectionError("broker connection lost"))
                with contextlib.suppress(Exception):
                    if stop.is_set():
                        writer.write(b"\xe0\x00")  # DISCONNECT
                    writer.close()
                if not stop.is_set():
                    log.warning("hj212: lost the MQTT broker connection of the engine feed; reconnecting")

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        t = self.target
        async with asyncio.timeout(10):
            reader, writer = await asyncio.open_connection(
                t.host, t.port, ssl=ssl.create_default_context() if t.tls else None)
            flags, payload = 0x02, _str(self.client_id)
            if t.username is not None:
                flags |= 0x80
                payload += _str(t.username)
                if t.password is not None:
                    flags |= 0x40
                    payload += _str(t.password)
            var = _str("MQTT") + bytes([4, flags]) + self.keepalive.to_bytes(2, "big")
            writer.write(b"\x10" + _varint(len(var) + len(payload)) + var + payload)
            head = await reader.readexactly(4)
        if head[0] != 0x20 or head[3] != 0:
            writer.close()
            raise ConnectionError(f"broker refused the connection (CONNACK {head.hex()})")
        return reader, writer

    async def _read(self, reader: asyncio.StreamReader) -> None:
        """PUBACKs (and whatever else the broker sends) cut out of whole reads, not one await per byte."""
        buf = b""
        with contextlib.suppress(ConnectionError, OSError):
            while chunk := await reader.read(65_536):
                buf = self._packets(buf + chunk)

    def _packets(self, buf: bytes) -> bytes:
        """Handle every whole MQTT packet in ``buf``; return the incomplete rest."""
        i, n = 0, len(buf)
        pending = self._pending
        while i + 2 <= n:
            b0 = buf[i]
            j, length, mult = i + 1, 0, 1
            while j < n:
                d = buf[j]
                j += 1
                length += (d & 0x7F) * mult
                mult *= 128
                if not d & 0x80:
                    break
            else:
                break  # the length itself is not complete
            if j + length > n:
                break
            if b0 >> 4 == 4 and length >= 2:  # PUBACK
                group = pending.pop((buf[j] << 8) | buf[j + 1], None)
                if group is not None:
                    group.acked()
            i = j + length
        if len(pending) < self.window:
            self._room.set()
        return buf[i:]

    async def _ping(self, writer: asyncio.StreamWriter) -> None:
        while True:
            await asyncio.sleep(self.keepalive / 2)
            writer.write(b"\xc0\x00")

    def _fail_all(self, exc: BaseException) -> None:
        pending, self._pending = self._pending, {}
        for group in set(pending.values()):
            group.fail(exc)
        self._room.set()

    def publish_soon(self, messages: list[tuple[str, bytes]], deadline: float | None = None) -> asyncio.Future[bool]:
        """Publish at QoS 1 now if the connection is up and has room (else as :meth:`publish` does, in a task);
        the future is True once the broker acknowledged every one, False if it could not by ``deadline``
        (loop time; default: ``timeout`` from now). No task and no future per message: the packet path of
        every logger takes this, a burst of 5,000 loggers at once."""
        loop = asyncio.get_running_loop()
        writer = self._writer
        if writer is None or not self._up.is_set() or len(self._pending) + len(messages) > self.window:
            task = asyncio.ensure_future(self.publish(messages))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return task
        fut: asyncio.Future[bool] = loop.create_future()
        if not messages:
            fut.set_result(True)
            return fut
        group = _Group(self, fut, len(messages))
        group.timer = loop.call_at(loop.time() + self.timeout if deadline is None else deadline, group.expire)
        for topic, payload in messages:
            self._send(writer, topic, payload, group)
        return fut

    async def publish(self, messages: list[tuple[str, bytes]]) -> bool:
        """Publish at QoS 1; True once the broker acknowledged every one, False if it could not in time."""
        if not messages:
            return True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        try:
            async with asyncio.timeout_at(deadline):
                while len(self._pending) + len(messages) > self.window:
                    self._room.clear()
                    await self._room.wait()
                await self._up.wait()
        except TimeoutError:
            self._failed(len(messages), "timeout")
            return False
        if self._writer is None:
            return False
        return await self.publish_soon(messages, deadline)

    def _failed(self, n: int, why: object) -> None:
        self.failed += 1
        log.warning("hj212: %d snapshots not accepted by the broker (%s); no 9014 for their packet", n, why)

    def _send(self, writer: asyncio.StreamWriter, topic: str, payload: bytes, group: _Group) -> None:
        t = self._topics.get(topic)
        if t is None:
            t = self._topics[topic] = _str(topic)
        pid = self._pid % 65535 + 1
        while pid in self._pending:
            pid = pid % 65535 + 1
        self._pid = pid
        self._pending[pid] = group
        group.pids.append(pid)
        # PUBLISHes of one loop iteration (a burst of loggers) leave in one write, not one system call each
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush, writer)
        self._out.append(b"\x32" + _varint(len(t) + 2 + len(payload)) + t + pid.to_bytes(2, "big") + payload)

    def _flush(self, writer: asyncio.StreamWriter) -> None:
        out, self._out = self._out, []
        if not writer.is_closing():
            writer.write(b"".join(out))


class _Group:
    """The PUBLISHes of one packet: its future is True when the last PUBACK comes, False on a lost
    connection or at the deadline (its packet ids are then given up)."""

    __slots__ = ("feed", "fut", "left", "pids", "timer")

    def __init__(self, feed: EngineFeed, fut: asyncio.Future[bool], n: int) -> None:
        self.feed = feed
        self.fut = fut
        self.left = n
        self.pids: list[int] = []
        self.timer: asyncio.TimerHandle | None = None

    def acked(self) -> None:
        self.left -= 1
        if self.left == 0 and not self.fut.done():
            if self.timer is not None:
                self.timer.cancel()
            self.fut.set_result(True)

    def fail(self, exc: BaseException) -> None:
        if not self.fut.done():
            if self.timer is not None:
                self.timer.cancel()
            self.feed._failed(self.left, exc)
            self.fut.set_result(False)

    def expire(self) -> None:
        pending = self.feed._pending
        for pid in self.pids:
            if pending.get(pid) is self:
                del pending[pid]
        if len(pending) < self.feed.window:
            self.feed._room.set()
        if not self.fut.done():
            self.feed._failed(self.left, "timeout")
            self.fut.set_result(False)
