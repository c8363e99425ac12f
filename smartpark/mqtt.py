"""A lean MQTT subscriber for the collector and the alert engine: explicit QoS 1 acks, persistent session,
reconnect.

Why not aiomqtt or paho's own loop: acking only after durability needs manual acks (aiomqtt 2.5 has
none; paho 2.x has ``manual_ack_set``), and paho reads every packet with 2-4 ``recv`` calls of 1 byte,
queues every PUBACK separately and pokes a socket pair per ack, which caps a bare paho subscriber at
about half the broker's rate on this machine (see docs/benchmarks/collector.md for the measurement).
The subscriber side of MQTT that the collector needs is small (CONNECT, SUBSCRIBE, PUBLISH in,
PUBACK out, PINGREQ, DISCONNECT, one retained status PUBLISH), so it is implemented here on an
``asyncio.Protocol``: packets are parsed from 64 KiB reads and the acks of a whole batch leave in one
``write``. MQTT 5 (session expiry, receive maximum) with a fallback to 3.1.1 when the broker refuses 5.

What is in flight is bounded by the protocol: with MQTT 5 the broker sends at most ``receive_maximum``
unacknowledged QoS 1 messages (3.1.1: the broker's own ``max_inflight_messages``); QoS 0 floods are
bounded by pausing the socket when the inbox holds ``inbox_limit`` messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from .config import MqttTarget
from .errors import SmartparkError

log = logging.getLogger(__name__)

MQTT5 = 5
MQTT311 = 4


class MqttError(SmartparkError):
    """The broker refused us (``reason_code``) or broke the protocol; ``fallback`` asks for MQTT 3.1.1."""

    def __init__(self, message: str, *, reason_code: int = 0, fallback: bool = False) -> None:
        self.reason_code = reason_code
        self.fallback = fallback
        super().__init__(message)


@dataclass(slots=True)
class Message:
    """One PUBLISH received. ``gen`` is the connection it came on: an ack only means something there."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    gen: int
    received_ms: int


# ---------------------------------------------------------------------------------------------- encoding

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def _str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return len(b).to_bytes(2, "big") + b


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + _varint(len(body)) + body


def _skip_props(buf: bytes | bytearray, i: int) -> int:
    """Index after an MQTT 5 property block starting at ``i``."""
    n, mult = 0, 1
    while True:
        b = buf[i]
        i += 1
        n += (b & 0x7F) * mult
        mult <<= 7
        if not b & 0x80:
            return i + n


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    retain: bool = True
    qos: int = 1


def connect_packet(client_id: str, version: int, *, keepalive: int, clean_start: bool,
                   session_expiry: int, receive_maximum: int, will: Will | None,
                   username: str | None, password: str | None) -> bytes:
    flags = 0x02 if clean_start else 0
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
    if username is not None:
        flags |= 0x80
    if password is not None:
        flags |= 0x40
    var = _str("MQTT") + bytes((version, flags)) + keepalive.to_bytes(2, "big")
    if version == MQTT5:
        props = b"\x11" + session_expiry.to_bytes(4, "big") + b"\x21" + receive_maximum.to_bytes(2, "big")
        var += _varint(len(props)) + props
    payload = _str(client_id)
    if will is not None:
        payload += (b"\x00" if version == MQTT5 else b"") + _str(will.topic) + _str(will.payload)
    if username is not None:
        payload += _str(username)
    if password is not None:
        payload += _str(password)
    return _packet(0x10, var + payload)


def publish_packet(topic: str, payload: bytes, version: int, *, qos: int = 0, retain: bool = False,
                   mid: int = 1) -> bytes:
    body = _str(topic) + (mid.to_bytes(2, "big") if qos else b"") + (b"\x00" if version == MQTT5 else b"")
    return _packet(0x30 | (qos << 1) | (1 if retain else 0), body + payload)


# ---------------------------------------------------------------------------------------------- protocol

def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection: parses packets from the byte stream, collects PUBLISHes in an inbox."""

    def __init__(self, version: int, gen: int, source: MqttSource, inbox_limit: int) -> None:
        self.version = version
        self.gen = gen
        self.source = source  # messages go to ``source._inbox``, whichever list it holds right now
        self._wake = source._wake
        self._inbox_limit = inbox_limit
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        loop = asyncio.get_running_loop()
        self.connack: asyncio.Future[tuple[bool, int]] = loop.create_future()
        self.suback: asyncio.Future[list[int]] = loop.create_future()
        self.closed: asyncio.Future[Exception | None] = loop.create_future()
        for fut in (self.connack, self.suback):  # a handshake that never happened is not an unseen error
            fut.add_done_callback(_retrieve)
        self.last_rx = time.monotonic()
        self.paused = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport

    def connection_lost(self, exc: Exception | None) -> None:
        for fut in (self.connack, self.suback):
            if not fut.done():
                fut.set_exception(exc or ConnectionResetError("connection closed by the broker"))
        if not self.closed.done():
            self.closed.set_result(exc)
        self._wake()

    def data_received(self, data: bytes) -> None:
        self.last_rx = time.monotonic()
        buf = self._buf
        buf += data
        n = len(buf)
        i = 0
        received_ms = time.time_ns() // 1_000_000
        inbox = self.source._inbox
        v5 = self.version == MQTT5
        got = False
        try:
            while i + 2 <= n:
                first = buf[i]
                # remaining length (varint, at most 4 bytes)
                j = i + 1
                length = shift = 0
                complete = False
                while j < n:
                    b = buf[j]
                    j += 1
                    length |= (b & 0x7F) << shift
                    if not b & 0x80:
                        complete = True
                        break
                    shift += 7
                    if shift > 21:
                        raise MqttError("malformed remaining length")
                if not complete or j + length > n:
                    break  # incomplete packet: wait for more bytes
                end = j + length
                kind = first & 0xF0
                if kind == 0x30:  # PUBLISH
                    qos = (first >> 1) & 3
                    tlen = (buf[j] << 8) | buf[j + 1]
                    k = j + 2 + tlen
                    topic = buf[j + 2:k].decode("utf-8", "replace")
                    mid = 0
                    if qos:
                        mid = (buf[k] << 8) | buf[k + 1]
                        k += 2
                    if v5:
                        k = _skip_props(buf, k)
                    inbox.append(Message(topic, bytes(buf[k:end]), mid, qos, self.gen, received_ms))
                    got = True
                elif kind == 0x20:  # CONNACK
                    present = bool(buf[j] & 1)
                    code = buf[j + 1]
                    if not self.connack.done():
                        self.connack.set_result((present, code))
                elif kind == 0x90:  # SUBACK
                    k = j + 2
                    if v5:
                        k = _skip_props(buf, k)
                    if not self.suback.done():
                        self.suback.set_result(list(buf[k:end]))
                elif kind == 0xE0:  # DISCONNECT from the server (MQTT 5)
                    code = buf[j] if length else 0
                    log.warning("MQTT: the broker disconnected us, reason code 0x%02x", code)
                # PUBACK (of our status), PINGRESP and others need no action
                i = end
        except (IndexError, MqttError) as exc:
            log.error("MQTT: malformed packet from the broker (%s); reconnecting", exc)
            self.drop(exc)
            return
        finally:
            del buf[:i]
        if got:
            if len(inbox) >= self._inbox_limit and self.transport is not None and not self.paused:
                self.paused = True
                self.transport.pause_reading()
            self._wake()

    def drop(self, why: Exception) -> None:
        """Close the connection from our side: ``closed`` holds ``why`` at once (``connection_lost`` follows
        only on a later loop iteration and keeps it)."""
        if not self.closed.done():
            self.closed.set_result(why)
        if self.transport is not None:
            self.transport.abort()

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def resume(self) -> None:
        if self.paused and self.transport is not None and not self.transport.is_closing():
            self.paused = False
            self.transport.resume_reading()


# ---------------------------------------------------------------------------------------------- client

class MqttSource:
    """``async with MqttSource(...) as src``: run :meth:`run` in a task, take messages with :meth:`take`,
    and :meth:`ack` them once they are durable.

    Reconnects with full-jitter exponential backoff and logs every attempt; a message whose connection
    has gone is never acked (the broker redelivers it on the persistent session, and a redelivered
    reading collapses onto the same point in InfluxDB).
    """

    def __init__(self, target: MqttTarget, client_id: str, topic: str, *, receive_maximum: int = 20_000,
                 session_expiry: int = 7 * 86_400, keepalive: int = 30, clean_start: bool = False,
                 status_topic: str | None = None, protocol: int | None = None, inbox_limit: int = 50_000,
                 backoff_base: float = 0.2, backoff_cap: float = 15.0, tls_context: ssl.SSLContext | None = None,
                 on_reconnect: Callable[[], None] | None = None) -> None:
        self.target = target
        self.client_id = client_id
        self.topic = topic
        self.receive_maximum = max(1, min(65_535, receive_maximum))
        self.session_expiry = session_expiry
        self.keepalive = keepalive
        self.clean_start = clean_start
        self.status_topic = status_topic
        self.version = protocol or MQTT5
        self._auto_version = protocol is None
        self.inbox_limit = inbox_limit
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._tls = tls_context
        self._on_reconnect = on_reconnect
        self._inbox: list[Message] = []
        self._waiter: asyncio.Future[None] | None = None
        self._conn: _Connection | None = None
        self._gen = 0
        self._entered = False
        self.connected = asyncio.Event()
        self.connects = 0

    async def __aenter__(self) -> MqttSource:
        if self._entered:
            raise RuntimeError("MqttSource cannot be entered twice")
        self._entered = True
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    # ------------------------------------------------------------------ messages
    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def take(self, max_n: int, wait: float) -> list[Message]:
        """Up to ``max_n`` messages, waiting at most ``wait`` seconds for the first one."""
        if not self._inbox and wait > 0:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(wait):
                    await self._waiter
            except TimeoutError:
                pass
            finally:
                self._waiter = None
        inbox = self._inbox
        if len(inbox) <= max_n:
            out, self._inbox = inbox, []
        else:
            out, self._inbox = inbox[:max_n], inbox[max_n:]
        conn = self._conn
        if conn is not None and conn.paused and len(self._inbox) < self.inbox_limit // 2:
            conn.resume()
        return out

    def ack(self, messages: list[Message]) -> int:
        """Send PUBACKs (one write) for the QoS 1 messages of the current connection; returns how many."""
        conn = self._conn
        if conn is None or conn.closed.done():
            return 0
        gen = conn.gen
        acks = b"".join(b"\x40\x02" + m.mid.to_bytes(2, "big") for m in messages if m.qos and m.gen == gen)
        if acks:
            conn.send(acks)
        return len(acks) // 4

    def publish(self, topic: str, payload: bytes, *, retain: bool = False, qos: int = 0) -> bool:
        """Fire-and-forget publish (the retained status); False when not connected."""
        conn = self._conn
        if conn is None or conn.closed.done():
            return False
        conn.send(publish_packet(topic, payload, conn.version, qos=qos, retain=retain, mid=1))
        return True

    # ------------------------------------------------------------------ connection
    def _status(self, status: str) -> bytes:
        return b'{"status": "%s", "ts": %d}' % (status.encode(), time.time_ns() // 1_000_000)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        self._gen += 1
        t = self.target
        tls: ssl.SSLContext | None = None
        if t.tls:
            tls = self._tls or ssl.create_default_context()
        async with asyncio.timeout(10):
            _, conn = await loop.create_connection(
                lambda: _Connection(self.version, self._gen, self, self.inbox_limit),
                t.host, t.port, ssl=tls)
        try:
            will = Will(self.status_topic, self._status("offline")) if self.status_topic else None
            conn.send(connect_packet(self.client_id, self.version, keepalive=self.keepalive,
                                     clean_start=self.clean_start, session_expiry=self.session_expiry,
                                     receive_maximum=self.receive_maximum, will=will,
                                     username=t.username, password=t.password))
            async with asyncio.timeout(10):
                present, code = await conn.connack
            if code:
                fallback = self._auto_version and self.version == MQTT5 and code in (0x01, 0x84)
                raise MqttError(f"broker refused the connection, reason code 0x{code:02x}", reason_code=code,
                                fallback=fallback)
            # QoS 1; with MQTT 5 also No Local (our own status is not sent back to us), which the
            # protocol forbids on shared subscriptions
            no_local = self.version == MQTT5 and not self.topic.startswith("$share/")
            sub = (b"\x00\x01" + (b"\x00" if self.version == MQTT5 else b"") + _str(self.topic)
                   + (b"\x05" if no_local else b"\x01"))
            conn.send(_packet(0x82, sub))
            async with asyncio.timeout(10):
                codes = await conn.suback
            if not codes or codes[0] > 0x02:
                raise MqttError(f"broker refused the subscription to {self.topic!r}: "
                                f"reason code 0x{codes[0] if codes else 0:02x}",
                                reason_code=codes[0] if codes else 0)
            if self.status_topic:
                conn.send(publish_packet(self.status_topic, self._status("online"), conn.version,
                                         qos=1, retain=True, mid=2))
        except BaseException:
            if conn.transport is not None:
                conn.transport.abort()
            raise
        log.info("MQTT: connected to %s:%d as %r (MQTT %s, session %s), subscribed to %r", t.host, t.port,
                 self.client_id, "5" if self.version == MQTT5 else "3.1.1",
                 "resumed" if present else "new", self.topic)
        return conn

    async def run(self, stop: asyncio.Event) -> None:
        """Stay connected until ``stop``; then publish the offline status and disconnect cleanly."""
        attempt = 0
        while not stop.is_set():
            conn: _Connection | None = None
            try:
                conn = await self._connect()
                self._conn = conn
                self.connects += 1
                if self.connects > 1 and self._on_reconnect is not None:
                    self._on_reconnect()
                self.connected.set()
                attempt = 0
                await self._hold(conn, stop)
                if stop.is_set():
                    break
                why: object = conn.closed.result() or "connection closed"
            except MqttError as exc:
                why = exc
                if exc.fallback:
                    log.warning("MQTT: broker refused MQTT 5 (%s); falling back to 3.1.1", exc)
                    self.version = MQTT311
                    continue
            except (OSError, TimeoutError, EOFError) as exc:
                why = exc
            finally:
                self.connected.clear()
            attempt += 1
            delay = random.uniform(0, min(self.backoff_cap, self.backoff_base * 2 ** min(attempt, 16)))
            log.warning("MQTT: lost or no connection to %s:%d (%s); reconnect attempt %d in %.2f s",
                        self.target.host, self.target.port, why, attempt, delay)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stop.wait()
        await self.close()

    async def _hold(self, conn: _Connection, stop: asyncio.Event) -> None:
        """Keep the connection alive with PINGREQs until it closes or ``stop`` is set."""
        stop_wait = asyncio.ensure_future(stop.wait())
        try:
            interval = max(1.0, self.keepalive / 2)
            while not conn.closed.done() and not stop.is_set():
                waits: list[asyncio.Future[Any]] = [stop_wait, conn.closed]
                await asyncio.wait(waits, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
                if conn.closed.done() or stop.is_set():
                    break
                if not conn.paused and time.monotonic() - conn.last_rx > self.keepalive * 1.5:
                    silent = time.monotonic() - conn.last_rx
                    log.warning("MQTT: no answer from the broker for %.0f s; dropping the connection", silent)
                    conn.drop(TimeoutError(f"no answer from the broker for {silent:.0f} s"))
                    break
                conn.send(b"\xc0\x00")  # PINGREQ
        finally:
            stop_wait.cancel()

    async def close(self) -> None:
        """Offline status, then DISCONNECT (normal: the broker discards the will). Idempotent."""
        conn, self._conn = self._conn, None
        if conn is None or conn.transport is None or conn.closed.done():
            return
        if self.status_topic:
            conn.send(publish_packet(self.status_topic, self._status("offline"), conn.version, qos=1,
                                     retain=True, mid=3))
        conn.send(b"\xe0\x00")
        with contextlib.suppress(TimeoutError, Exception):  # the broker closes after DISCONNECT: no RST race
            async with asyncio.timeout(2):
                await conn.closed
        conn.transport.close()
