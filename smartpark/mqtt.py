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

Finding the protocol (``--mqtt-protocol auto``, the default): MQTT 5 first; a broker that knows only 3.1.1
answers in one of three ways, and each of them falls back: CONNACK 0x01 / 0x84 (mosquitto < 1.6, aedes),
a close before any CONNACK (RabbitMQ 3.10: "cannot parse a frame"), or silence (amqtt 0.12 reads the
MQTT 5 properties as the client id's length and waits for bytes that never come). The version that got
a CONNACK is kept for every later reconnect of the process; until one did, attempts alternate.

What is in flight is bounded by the protocol: with MQTT 5 the broker sends at most ``receive_maximum``
unacknowledged QoS 1 messages (3.1.1: the broker's own ``max_inflight_messages``); QoS 0 floods are
bounded by pausing the socket when the inbox holds ``inbox_limit`` messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from .config import MqttTarget
from .errors import ConfigError, SmartparkError

log = logging.getLogger(__name__)

MQTT5 = 5
MQTT311 = 4


CONNACK_TIMEOUT = 5.0  # seconds: a broker that is up answers a CONNECT in milliseconds

# MQTT 5 property identifiers -> value type (for CONNACK; the rest of the packets skip their properties)
_PROP_BYTE = frozenset((0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A))
_PROP_TWO = frozenset((0x13, 0x21, 0x22, 0x23))
_PROP_FOUR = frozenset((0x02, 0x11, 0x18, 0x27))
RECEIVE_MAXIMUM = 0x21
SHARED_SUBSCRIPTION_AVAILABLE = 0x2A


def protocol_name(version: int) -> str:
    return "5" if version == MQTT5 else "3.1.1"


def reason(exc: object) -> str:
    """A log line's reason that is never empty (``str(TimeoutError())`` is)."""
    text = str(exc)
    return text if text else type(exc).__name__


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


def _varint_at(buf: bytes | bytearray, i: int) -> tuple[int, int]:
    """The variable byte integer at ``i`` and the index after it."""
    n, mult = 0, 1
    while True:
        b = buf[i]
        i += 1
        n += (b & 0x7F) * mult
        mult <<= 7
        if not b & 0x80:
            return n, i


def _props(buf: bytes | bytearray, i: int, end: int) -> dict[int, int]:
    """The numeric MQTT 5 properties of a block starting at ``i`` (strings and pairs are skipped)."""
    n, i = _varint_at(buf, i)
    stop = min(end, i + n)
    out: dict[int, int] = {}
    while i < stop:
        pid = buf[i]
        i += 1
        if pid in _PROP_BYTE:
            out[pid] = buf[i]
            i += 1
        elif pid in _PROP_TWO:
            out[pid] = (buf[i] << 8) | buf[i + 1]
            i += 2
        elif pid in _PROP_FOUR:
            out[pid] = int.from_bytes(buf[i:i + 4], "big")
            i += 4
        elif pid == 0x0B:  # subscription identifier: a varint
            while buf[i] & 0x80:
                i += 1
            i += 1
        elif pid == 0x26:  # user property: two strings
            for _ in range(2):
                i += 2 + ((buf[i] << 8) | buf[i + 1])
        else:  # strings and binary data: a 2-byte length
            i += 2 + ((buf[i] << 8) | buf[i + 1])
    return out


def _skip_props(buf: bytes | bytearray, i: int) -> int:
    """Index after an MQTT 5 property block starting at ``i``."""
    n, i = _varint_at(buf, i)
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
        self.connack: asyncio.Future[tuple[bool, int, dict[int, int]]] = loop.create_future()
        self.suback: asyncio.Future[list[int]] = loop.create_future()
        self.closed: asyncio.Future[Exception | None] = loop.create_future()
        for fut in (self.connack, self.suback):  # a handshake that never happened is not an unseen error
            fut.add_done_callback(_retrieve)
        self.last_rx = time.monotonic()
        self.paused = False
        self.unacked = 0  # QoS 1 PUBLISHes received on this connection and not yet acked

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport

    def connection_lost(self, exc: Exception | None) -> None:
        for fut in (self.connack, self.suback):
            if not fut.done():
                fut.set_exception(exc or ConnectionResetError(
                    "the broker closed the connection" + (" before its CONNACK" if fut is self.connack else "")))
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
                        self.unacked += 1
                    if v5:
                        k = _skip_props(buf, k)
                    inbox.append(Message(topic, bytes(buf[k:end]), mid, qos, self.gen, received_ms))
                    got = True
                elif kind == 0x20:  # CONNACK
                    present = bool(buf[j] & 1)
                    code = buf[j + 1]
                    props = _props(buf, j + 2, end) if v5 and length > 2 else {}
                    if not self.connack.done():
                        self.connack.set_result((present, code, props))
                elif kind == 0x90 or kind == 0xB0:  # SUBACK, UNSUBACK
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

    Reconnects with full-jitter exponential backoff and logs every attempt with its reason; a message whose
    connection has gone is never acked (the broker redelivers it on the persistent session, and a
    redelivered reading collapses onto the same point in InfluxDB).

    ``protocol``: 5, 4 (3.1.1) or None for the target's setting (``--mqtt-protocol``; None there is auto).
    ``takeover``: connect once as another client's persistent session to take what the broker holds for
    it: UNSUBSCRIBE ``topic`` instead of subscribing (the broker stops queueing to that session), no
    status and no will, no reconnect (the owner coming back takes its session over, and what we held
    unacked is redelivered to it).
    """

    def __init__(self, target: MqttTarget, client_id: str, topic: str, *, receive_maximum: int = 20_000,
                 session_expiry: int = 7 * 86_400, keepalive: int = 30, clean_start: bool = False,
                 status_topic: str | None = None, protocol: int | None = None, inbox_limit: int = 50_000,
                 backoff_base: float = 0.2, backoff_cap: float = 15.0, tls_context: ssl.SSLContext | None = None,
                 on_reconnect: Callable[[], None] | None = None,
                 on_session_lost: Callable[[], None] | None = None,
                 connack_timeout: float = CONNACK_TIMEOUT, takeover: bool = False,
                 status_extra: dict[str, str] | None = None) -> None:
        self.target = target
        self.client_id = client_id
        self.topic = topic
        self.receive_maximum = max(1, min(65_535, receive_maximum))
        self.session_expiry = session_expiry
        self.keepalive = keepalive
        self.clean_start = clean_start
        self.status_topic = None if takeover else status_topic
        chosen = protocol if protocol is not None else target.protocol
        self.version = chosen or MQTT5
        self._auto_version = chosen is None
        self._version_known = not self._auto_version  # set once a CONNACK accepted a version
        self.inbox_limit = inbox_limit
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.connack_timeout = connack_timeout
        self.takeover = takeover
        self._status_extra = status_extra or {}
        self._tls = tls_context
        self._on_reconnect = on_reconnect
        self._on_session_lost = on_session_lost
        self._inbox: list[Message] = []
        self._waiter: asyncio.Future[None] | None = None
        self._conn: _Connection | None = None
        self._gen = 0
        self._entered = False
        self._had_session = False  # the last connection had a persistent session the broker should keep
        self._warned_share = False
        self.connected = asyncio.Event()
        self.connects = 0
        self.sessions_lost = 0
        self.broker_properties: dict[int, int] = {}  # the last CONNACK's numeric MQTT 5 properties

    async def __aenter__(self) -> MqttSource:
        if self._entered:
            raise RuntimeError("MqttSource cannot be entered twice")
        self._entered = True
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    # ------------------------------------------------------------------ messages
    @property
    def gen(self) -> int:
        """The current connection's number (see :attr:`Message.gen`)."""
        return self._gen

    @property
    def in_flight(self) -> int:
        """QoS 1 messages of the current connection received and not yet acked (taken or not)."""
        conn = self._conn
        return conn.unacked if conn is not None and not conn.closed.done() else 0

    @property
    def window(self) -> int | None:
        """The in-flight window when we know it: our receive maximum with MQTT 5; None with 3.1.1, where
        the broker's own limit (``max_inflight_messages``, RabbitMQ's ``mqtt.prefetch``) is not told."""
        return self.receive_maximum if self.version == MQTT5 else None

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
        n = len(acks) // 4
        conn.unacked = max(0, conn.unacked - n)
        return n

    def publish(self, topic: str, payload: bytes, *, retain: bool = False, qos: int = 0) -> bool:
        """Fire-and-forget publish (the retained status); False when not connected."""
        conn = self._conn
        if conn is None or conn.closed.done():
            return False
        conn.send(publish_packet(topic, payload, conn.version, qos=qos, retain=retain, mid=1))
        return True

    # ------------------------------------------------------------------ connection
    def _status(self, status: str) -> bytes:
        extra = "".join(f", {json.dumps(k)}: {json.dumps(v)}" for k, v in self._status_extra.items())
        return b'{"status": "%s", "ts": %d%s}' % (status.encode(), time.time_ns() // 1_000_000, extra.encode())

    def _may_switch(self) -> bool:
        """Whether a failed handshake should be tried again with the other protocol version."""
        return self._auto_version and not self._version_known

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
        name = protocol_name(self.version)
        try:
            will = Will(self.status_topic, self._status("offline")) if self.status_topic else None
            conn.send(connect_packet(self.client_id, self.version, keepalive=self.keepalive,
                                     clean_start=self.clean_start, session_expiry=self.session_expiry,
                                     receive_maximum=self.receive_maximum, will=will,
                                     username=t.username, password=t.password))
            try:
                async with asyncio.timeout(self.connack_timeout):
                    present, code, props = await conn.connack
            except TimeoutError:
                raise MqttError(f"no CONNACK within {self.connack_timeout:g} s to an MQTT {name} CONNECT",
                                fallback=self._may_switch()) from None
            except (OSError, EOFError) as exc:
                raise MqttError(f"{reason(exc)} (MQTT {name} CONNECT)", fallback=self._may_switch()) from exc
            if code:
                raise MqttError(f"broker refused the connection, reason code 0x{code:02x}", reason_code=code,
                                fallback=self._may_switch() and code in (0x01, 0x84))
            self._version_known = True
            self.broker_properties = props
            if self.topic.startswith("$share/") and not self.takeover:
                self._check_shared(props)
            self._session(present)
            conn.send(self._subscribe_packet())
            async with asyncio.timeout(10):
                codes = await conn.suback
            if not self.takeover and (not codes or codes[0] > 0x02):
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
        log.info("MQTT: connected to %s:%d as %r (MQTT %s, session %s), %s %r", t.host, t.port,
                 self.client_id, name, "resumed" if present else "new",
                 "taking over its session, unsubscribed from" if self.takeover else "subscribed to", self.topic)
        return conn

    def _subscribe_packet(self) -> bytes:
        v5 = self.version == MQTT5
        if self.takeover:  # UNSUBSCRIBE: the broker stops queueing to this session, what it holds still comes
            return _packet(0xA2, b"\x00\x01" + (b"\x00" if v5 else b"") + _str(self.topic))
        # QoS 1; with MQTT 5 also No Local (our own status is not sent back to us), which the
        # protocol forbids on shared subscriptions
        no_local = v5 and not self.topic.startswith("$share/")
        return _packet(0x82, b"\x00\x01" + (b"\x00" if v5 else b"") + _str(self.topic)
                       + (b"\x05" if no_local else b"\x01"))

    def _check_shared(self, props: dict[int, int]) -> None:
        """A share group where the broker has none would subscribe to a plain topic that nobody publishes."""
        t = self.target
        if self.version == MQTT5:
            if props.get(SHARED_SUBSCRIPTION_AVAILABLE, 1) == 0:
                raise ConfigError(f"the MQTT broker at {t.host}:{t.port} has no shared subscriptions (CONNACK: "
                                  f"Shared Subscription Available = 0), so {self.topic!r} would receive nothing; "
                                  "run a single collector without --share-group there")
        elif not self._warned_share:
            self._warned_share = True
            log.warning("MQTT: %s over MQTT 3.1.1, where the broker at %s:%d cannot say whether it has shared "
                        "subscriptions: one without them (aedes, amqtt, RabbitMQ 3.10) takes it as a plain topic "
                        "and this client receives NOTHING; check that readings arrive, or run without a share "
                        "group", self.topic, t.host, t.port)

    def _session(self, present: bool) -> None:
        """Warn when the broker forgot a persistent session we had: what it held for us is gone."""
        if self._had_session and not present:
            self.sessions_lost += 1
            log.warning("MQTT: the broker at %s:%d no longer has the persistent session of %r (session present "
                        "0 on a reconnect: restarted without persistence, or the session expired): QoS 1 readings "
                        "it had queued for us, already acknowledged to their publishers, may have been lost",
                        self.target.host, self.target.port, self.client_id)
            if self._on_session_lost is not None:
                self._on_session_lost()
        self._had_session = not self.clean_start and (self.version != MQTT5 or self.session_expiry > 0)

    async def _connect_unless(self, stop: asyncio.Event) -> _Connection | None:
        """:meth:`_connect`, abandoned (None) as soon as ``stop`` is set: a SIGTERM never waits for a
        CONNACK or a TCP handshake."""
        task = asyncio.ensure_future(self._connect())
        task.add_done_callback(_retrieve)
        stop_wait = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait([task, stop_wait], return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            task.cancel()
            raise
        finally:
            stop_wait.cancel()
        if task.done():
            return task.result()
        task.cancel()
        await asyncio.wait([task])
        return None

    async def run(self, stop: asyncio.Event) -> None:
        """Stay connected until ``stop``; then publish the offline status and disconnect cleanly."""
        attempt = 0
        while not stop.is_set():
            conn: _Connection | None = None
            try:
                conn = await self._connect_unless(stop)
                if conn is None:
                    break
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
                    if self.version == MQTT5:
                        log.warning("MQTT: no MQTT 5 from the broker (%s); falling back to 3.1.1", exc)
                        self.version = MQTT311
                        continue
                    log.warning("MQTT: no MQTT 3.1.1 either (%s); the next attempt is MQTT 5 again", exc)
                    self.version = MQTT5
            except (OSError, TimeoutError, EOFError) as exc:
                why = exc
            finally:
                self.connected.clear()
            if self.takeover:
                log.info("MQTT: session of %r taken over and left (%s)", self.client_id, reason(why))
                break
            attempt += 1
            delay = random.uniform(0, min(self.backoff_cap, self.backoff_base * 2 ** min(attempt, 16)))
            log.warning("MQTT: lost or no connection to %s:%d (%s); reconnect attempt %d in %.2f s",
                        self.target.host, self.target.port, reason(why), attempt, delay)
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
