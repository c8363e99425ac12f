"""A lean MQTT 3.1.1 publisher on asyncio streams, for the simulators' bulk traffic.

Why not aiomqtt here: a simulator publishes tens of thousands of readings per second, and a coroutine plus a
paho call per message costs more than the broker spends on it (the benchmark in docs/benchmarks/simulators.md
measures both). Publishing needs only CONNECT, PUBLISH, PUBACK and PINGREQ, so this client encodes packets
itself, writes whole batches, and keeps a bounded window of unacknowledged QoS 1 messages. Everything that
subscribes (record, the services) keeps using aiomqtt.

``async with WirePublisher(target, client_id) as pub: await pub.send(messages, qos)``; ``await pub.flush()``
waits for every PUBACK. A lost connection raises :class:`ConnectionError`; ``pub.unacked()`` then lists the
QoS 1 messages the broker has not acknowledged, for the caller to send again after reconnecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Sequence
from types import TracebackType

from smartpark.config import MqttTarget

CONNACK_CODES = {1: "unacceptable protocol version", 2: "identifier rejected", 3: "server unavailable",
                 4: "bad user name or password", 5: "not authorised"}


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


class MqttRefused(ConnectionError):
    """The broker answered CONNACK with a refusal; ``code`` says why (bad credentials are not retried)."""

    def __init__(self, code: int) -> None:
        self.code = code
        super().__init__(f"broker refused the connection: {CONNACK_CODES.get(code, code)}")


class WirePublisher:
    """One MQTT 3.1.1 connection that only publishes. Cannot be entered twice."""

    def __init__(self, target: MqttTarget, client_id: str, *, keepalive: int = 60, window: int = 2000,
                 connect_timeout: float = 10.0) -> None:
        self.target = target
        self.client_id = client_id
        self.keepalive = keepalive
        self.window = window
        self.connect_timeout = connect_timeout
        self._topics: dict[str, bytes] = {}
        self._unacked: dict[int, tuple[str, bytes]] = {}
        self._pid = 0
        self._acked = asyncio.Event()
        self._closed: asyncio.Future[None] | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._entered = False
        self.acked = 0

    async def __aenter__(self) -> WirePublisher:
        if self._entered:
            raise RuntimeError("WirePublisher cannot be entered twice")
        self._entered = True
        t = self.target
        ctx = ssl.create_default_context() if t.tls else None
        async with asyncio.timeout(self.connect_timeout):
            self._reader, self._writer = await asyncio.open_connection(t.host, t.port, ssl=ctx)
            flags = 0x02  # clean session: a publisher has nothing to resume
            payload = _str(self.client_id)
            if t.username is not None:
                flags |= 0x80
                payload += _str(t.username)
                if t.password is not None:
                    flags |= 0x40
                    payload += _str(t.password)
            var = _str("MQTT") + bytes([4, flags]) + self.keepalive.to_bytes(2, "big")
            self._writer.write(b"\x10" + _varint(len(var) + len(payload)) + var + payload)
            await self._writer.drain()
            head = await self._reader.readexactly(4)
            if head[0] != 0x20:
                raise ConnectionError(f"expected CONNACK, got packet type {head[0] >> 4}")
            if head[3] != 0:
                raise MqttRefused(head[3])
        self._closed = asyncio.get_running_loop().create_future()
        self._tasks = [asyncio.create_task(self._read(), name="wirepub-read"),
                       asyncio.create_task(self._ping(), name="wirepub-ping")]
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close(graceful=et is None)

    async def close(self, graceful: bool = True) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self._writer is not None:
            with contextlib.suppress(Exception):
                if graceful:
                    self._writer.write(b"\xe0\x00")  # DISCONNECT
                    await self._writer.drain()
                self._writer.close()
                await self._writer.wait_closed()
            self._writer = None

    # ------------------------------------------------------------------ receiving
    async def _read(self) -> None:
        assert self._reader is not None and self._closed is not None
        try:
            while True:
                b0 = (await self._reader.readexactly(1))[0]
                length, mult = 0, 1
                while True:
                    d = (await self._reader.readexactly(1))[0]
                    length += (d & 0x7F) * mult
                    mult *= 128
                    if not d & 0x80:
                        break
                body = await self._reader.readexactly(length) if length else b""
                if b0 >> 4 == 4:  # PUBACK
                    if self._unacked.pop(int.from_bytes(body[:2], "big"), None) is not None:
                        self.acked += 1
                    self._acked.set()
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
            if not self._closed.done():
                self._closed.set_exception(ConnectionError(f"broker connection lost: {exc!r}"))
            self._acked.set()

    async def _ping(self) -> None:
        while True:
            await asyncio.sleep(self.keepalive / 2)
            if self._writer is not None:
                self._writer.write(b"\xc0\x00")

    def _check(self) -> None:
        if self._closed is not None and self._closed.done():
            exc = self._closed.exception()
            raise exc if exc is not None else ConnectionError("connection closed")

    # ------------------------------------------------------------------ sending
    def _packet(self, item: tuple[str, bytes], qos: int) -> bytes:
        topic, payload = item
        t = self._topics.get(topic)
        if t is None:
            t = self._topics[topic] = _str(topic)
        if qos == 0:
            return b"\x30" + _varint(len(t) + len(payload)) + t + payload
        self._pid = self._pid % 65535 + 1
        while self._pid in self._unacked:  # never reuse an id still in flight
            self._pid = self._pid % 65535 + 1
        self._unacked[self._pid] = item
        return b"\x32" + _varint(len(t) + 2 + len(payload)) + t + self._pid.to_bytes(2, "big") + payload

    async def send(self, messages: Sequence[tuple[str, bytes]], qos: int = 1) -> None:
        """Write (topic, payload) pairs; with QoS 1, wait while more than ``window`` are unacknowledged."""
        if self._writer is None:
            raise RuntimeError("WirePublisher used outside 'async with'")
        self._check()
        if qos == 1:
            while len(self._unacked) + len(messages) > self.window and self._unacked:
                self._acked.clear()
                await self._acked.wait()
                self._check()
        self._writer.write(b"".join([self._packet(m, qos) for m in messages]))
        await self._writer.drain()
        self._check()

    async def flush(self) -> None:
        """Wait until the broker has acknowledged every QoS 1 message sent so far."""
        while self._unacked:
            self._acked.clear()
            await self._acked.wait()
            self._check()
        if self._writer is not None:
            await self._writer.drain()

    def unacked(self) -> list[tuple[str, bytes]]:
        """QoS 1 messages not acknowledged yet, oldest first (to resend after a reconnect)."""
        return list(self._unacked.values())
