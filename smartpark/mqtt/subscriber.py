"""A lean MQTT subscriber for the collector and the alert engine: explicit QoS 1 acks, persistent session,
reconnect.

Why not aiomqtt or paho's own loop: acking only after durability needs manual acks (aiomqtt 2.5 has
none; paho 2.x has ``manual_ack_set``), and paho reads every packet with 2-4 ``recv`` calls of 1 byte,
queues every PUBACK separately and pokes a socket pair per ack, which caps a bare paho subscriber at
about half the broker's rate on this machine (see docs/benchmarks/collector.md for the measurement).
The subscriber side of MQTT that the collector needs is small (CONNECT, SUBSCRIBE, PUBLISH in,
PUBACK out, PINGREQ, DISCONNECT, one retained status PUBLISH), so it is implemented here on the package's
:class:`~.connection.Connection` (an ``asyncio.Protocol``) and codec: packets are parsed from 64 KiB reads and
the acks of a whole batch leave in one ``write``. MQTT 5 (session expiry, receive maximum) with a fallback
to 3.1.1 when the broker refuses 5.

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
import ssl
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from ..config import MqttTarget
from ..errors import ConfigError
from ..timing import Backoff, Wakeup
from ..topics import is_shared
from .codec import (
    DISCONNECT_PACKET,
    MQTT5,
    MQTT311,
    PINGREQ_PACKET,
    SHARED_SUBSCRIPTION_AVAILABLE,
    Message,
    Will,
    connect_packet,
    protocol_name,
    puback_packets,
    publish_packet,
    subscribe_packet,
    unsubscribe_packet,
)
from .connection import Connection, retrieve
from .errors import MqttError, MqttRefused, reason

log = logging.getLogger(__name__)

CONNACK_TIMEOUT = 5.0  # seconds: a broker that is up answers a CONNECT in milliseconds


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
        self.backoff = Backoff(backoff_base, backoff_cap)  # attempt n waits U(0, min(cap, base * 2**n)), n >= 1
        self.connack_timeout = connack_timeout
        self.takeover = takeover
        self._status_extra = status_extra or {}
        self._tls = tls_context
        self._on_reconnect = on_reconnect
        self._on_session_lost = on_session_lost
        self._inbox: list[Message] = []
        self._wakeup = Wakeup()
        self._conn: Connection | None = None
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

    # the connection's Sink
    def received(self, messages: list[Message]) -> bool:
        self._inbox += messages
        self._wake()
        return len(self._inbox) >= self.inbox_limit

    def acked(self, acks: list[tuple[int, int]]) -> None:
        """PUBACKs of our retained status need no action."""

    def lost(self) -> None:
        self._wake()

    def _wake(self) -> None:
        self._wakeup.wake()

    async def take(self, max_n: int, wait: float) -> list[Message]:
        """Up to ``max_n`` messages, waiting at most ``wait`` seconds for the first one."""
        if not self._inbox and wait > 0:
            await self._wakeup.wait(wait)
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
        acks = puback_packets([m.mid for m in messages if m.qos and m.gen == gen])
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

    async def _connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        self._gen += 1
        t = self.target
        tls: ssl.SSLContext | None = None
        if t.tls:
            tls = self._tls or ssl.create_default_context()
        async with asyncio.timeout(10):
            _, conn = await loop.create_connection(
                lambda: Connection(self.version, self._gen, self),
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
                raise MqttRefused(code, fallback=self._may_switch() and code in (0x01, 0x84))
            self._version_known = True
            self.broker_properties = props
            if is_shared(self.topic) and not self.takeover:
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
        if self.takeover:  # UNSUBSCRIBE: the broker stops queueing to this session, what it holds still comes
            return unsubscribe_packet(self.topic, self.version)
        # QoS 1; with MQTT 5 also No Local (our own status is not sent back to us), which the
        # protocol forbids on shared subscriptions
        return subscribe_packet(self.topic, self.version, qos=1, no_local=not is_shared(self.topic))

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

    async def _connect_unless(self, stop: asyncio.Event) -> Connection | None:
        """:meth:`_connect`, abandoned (None) as soon as ``stop`` is set: a SIGTERM never waits for a
        CONNACK or a TCP handshake."""
        task = asyncio.ensure_future(self._connect())
        task.add_done_callback(retrieve)
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
            conn: Connection | None = None
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
            delay = self.backoff.delay(attempt)
            log.warning("MQTT: lost or no connection to %s:%d (%s); reconnect attempt %d in %.2f s",
                        self.target.host, self.target.port, reason(why), attempt, delay)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stop.wait()
        await self.close()

    async def _hold(self, conn: Connection, stop: asyncio.Event) -> None:
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
                conn.send(PINGREQ_PACKET)
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
        conn.send(DISCONNECT_PACKET)
        with contextlib.suppress(TimeoutError, Exception):  # the broker closes after DISCONNECT: no RST race
            async with asyncio.timeout(2):
                await conn.closed
        conn.transport.close()
