"""The MQTT publisher of the simulators' bulk traffic and of the retained alarm states.

Why not aiomqtt here: a simulator publishes tens of thousands of readings per second, and a coroutine plus a
paho call per message costs more than the broker spends on it (the benchmark in docs/benchmarks/simulators.md
measures both). This client writes whole batches through the package's codec and connection and keeps a
bounded window of unacknowledged QoS 1 messages; the PUBACKs of a read are taken in one call.

``async with Publisher(target, client_id) as pub``, then either
``await pub.publish(topic, payload, qos=1, retain=True)``, which returns once the broker has PUBACKed it (many
may be awaited at once, up to ``window``), or ``await pub.send(messages, qos)`` for a batch and
``await pub.flush()`` to wait for every PUBACK, or ``pub.submit(messages, deadline)`` from a callback (no
await, no task): a group of QoS 1 messages with one future for all their PUBACKs, the writes of one loop
iteration leaving in one system call (``hj212 serve`` feeds the alarm engine this way, one group per
logger packet, 5,000 at once in a burst). A lost connection raises :class:`ConnectionError`;
:meth:`Publisher.unacked` then lists the QoS 1 messages the broker has not acknowledged, for the caller to send
again after reconnecting. A refused CONNECT raises :class:`~.errors.MqttRefused`.

MQTT 3.1.1 unless MQTT 5 is asked for (``protocol`` or the target's ``--mqtt-protocol 5``): every broker
speaks 3.1.1, and publishing needs nothing of 5. With MQTT 5 the window is also kept under the broker's
Receive Maximum, and a PUBACK with a failure reason code fails that message's :meth:`publish`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Sequence
from types import TracebackType

from ..config import MqttTarget
from .codec import (
    DISCONNECT_PACKET,
    MQTT5,
    MQTT311,
    PINGREQ_PACKET,
    RECEIVE_MAXIMUM,
    Message,
    connect_packet,
    protocol_name,
    publish_packet,
    string,
    varint,
)
from .connection import Connection, retrieve
from .errors import MqttError, MqttRefused, reason

log = logging.getLogger(__name__)


class Publisher:
    """One MQTT connection that only publishes. Cannot be entered twice."""

    def __init__(self, target: MqttTarget, client_id: str, *, protocol: int | None = None, keepalive: int = 60,
                 window: int = 2000, connect_timeout: float = 10.0,
                 tls_context: ssl.SSLContext | None = None) -> None:
        self.target = target
        self.client_id = client_id
        chosen = protocol if protocol is not None else target.protocol
        self.version = MQTT5 if chosen == MQTT5 else MQTT311
        self.keepalive = keepalive
        self.window = max(1, window)
        self.connect_timeout = connect_timeout
        self._tls = tls_context
        self._topics: dict[str, bytes] = {}
        self._unacked: dict[int, tuple[str, bytes]] = {}
        self._waiting: dict[int, asyncio.Future[None]] = {}  # packet id -> the publish() awaiting its PUBACK
        self._pid = 0
        self._groups: dict[int, _Group] = {}  # packet id -> the submitted group it belongs to
        self._out: list[bytes] = []  # submitted PUBLISHes of this loop iteration, written together
        self._acked = asyncio.Event()
        self._conn: Connection | None = None
        self._ping: asyncio.Task[None] | None = None
        self._entered = False
        self.acknowledged = 0  # QoS 1 messages the broker acknowledged
        self.refused = 0  # of them, with a failure reason code (MQTT 5)
        self.groups_failed = 0  # submitted groups not acknowledged in full (lost connection, deadline, refused)

    async def __aenter__(self) -> Publisher:
        if self._entered:
            raise RuntimeError("Publisher cannot be entered twice")
        self._entered = True
        t = self.target
        tls = (self._tls or ssl.create_default_context()) if t.tls else None
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.connect_timeout):
            _, conn = await loop.create_connection(lambda: Connection(self.version, 1, self), t.host, t.port,
                                                   ssl=tls)
            try:
                conn.send(connect_packet(self.client_id, self.version, keepalive=self.keepalive,
                                         clean_start=True,  # a publisher has nothing to resume
                                         username=t.username, password=t.password))
                try:
                    _, code, props = await conn.connack
                except MqttError as exc:
                    raise ConnectionError(f"malformed CONNACK from the broker: {exc}") from exc
                if code:
                    raise MqttRefused(code)
            except BaseException:
                if conn.transport is not None:
                    conn.transport.abort()
                raise
        self._conn = conn
        if self.version == MQTT5 and RECEIVE_MAXIMUM in props:
            self.window = min(self.window, props[RECEIVE_MAXIMUM])
        self._ping = asyncio.create_task(self._pinger(conn), name="mqtt-publisher-ping")
        log.debug("MQTT: publishing to %s:%d as %r (MQTT %s)", t.host, t.port, self.client_id,
                  protocol_name(self.version))
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close(graceful=et is None)

    async def close(self, graceful: bool = True) -> None:
        """DISCONNECT (when ``graceful``) and close. Idempotent."""
        ping, self._ping = self._ping, None
        if ping is not None:
            ping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ping
        conn, self._conn = self._conn, None
        if conn is None or conn.transport is None:
            return
        if graceful and not conn.closed.done():
            conn.send(DISCONNECT_PACKET)
            with contextlib.suppress(TimeoutError, Exception):  # the broker closes after DISCONNECT: no RST race
                async with asyncio.timeout(2):
                    await conn.closed
        conn.transport.close()
        self.lost()

    # ------------------------------------------------------------------ the connection's Sink
    def received(self, messages: list[Message]) -> bool:
        """A publisher subscribes to nothing: a PUBLISH from the broker is ignored."""
        return False

    def acked(self, acks: list[tuple[int, int]]) -> None:
        groups, unacked = self._groups, self._unacked
        for pid, code in acks:
            item = unacked.pop(pid, None)
            if item is None:
                continue
            self.acknowledged += 1
            if groups:
                group = groups.pop(pid, None)
                if group is not None:
                    if code < 0x80:
                        group.left -= 1  # _Group.acked, inline: a burst's PUBACKs come thousands a read
                        if not group.left:
                            group.acked()
                    else:
                        self.refused += 1
                        group.fail(MqttError(f"broker refused the publish to {item[0]!r}: reason code "
                                             f"0x{code:02x}", reason_code=code))
                    continue
            fut = self._waiting.pop(pid, None)
            if code >= 0x80:
                self.refused += 1
                err = MqttError(f"broker refused the publish to {item[0]!r}: reason code 0x{code:02x}",
                                reason_code=code)
                if fut is None:
                    log.warning("MQTT: %s", err)
                elif not fut.done():
                    fut.set_exception(err)
            elif fut is not None and not fut.done():
                fut.set_result(None)
        self._acked.set()

    def lost(self) -> None:
        conn = self._conn
        why = conn.closed.result() if conn is not None and conn.closed.done() else None
        err = ConnectionError(f"broker connection lost: {reason(why) if why else 'closed'}")
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(err)
        self._waiting.clear()
        groups, self._groups = self._groups, {}
        for group in set(groups.values()):
            group.fail(err)
        self._acked.set()

    # ------------------------------------------------------------------ sending
    async def _pinger(self, conn: Connection) -> None:
        while not conn.closed.done():
            await asyncio.sleep(self.keepalive / 2)
            conn.send(PINGREQ_PACKET)

    def _open(self) -> Connection:
        """The connection, or the ConnectionError that ended it."""
        conn = self._conn
        if conn is None:
            raise RuntimeError("Publisher used outside 'async with'")
        if conn.closed.done():
            why = conn.closed.result()
            raise ConnectionError(f"broker connection lost: {reason(why) if why else 'closed'}")
        return conn

    async def _room(self, n: int) -> Connection:
        """Wait while ``n`` more QoS 1 messages would exceed the window (a batch larger than the window still
        goes once nothing is in flight)."""
        conn = self._open()
        while self._unacked and len(self._unacked) + n > self.window:
            self._acked.clear()
            await self._acked.wait()
            conn = self._open()
        return conn

    def _packet(self, item: tuple[str, bytes], qos: int, retain: bool = False) -> bytes:
        topic, payload = item
        t = self._topics.get(topic)
        if t is None:
            t = self._topics[topic] = string(topic)
        if qos == 0:
            return publish_packet(t, payload, self.version, retain=retain)
        self._pid = self._pid % 65535 + 1
        while self._pid in self._unacked:  # never reuse an id still in flight
            self._pid = self._pid % 65535 + 1
        self._unacked[self._pid] = item
        return publish_packet(t, payload, self.version, qos=1, retain=retain, mid=self._pid)

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Publish one message; with QoS 1 return once the broker has acknowledged it."""
        if qos not in (0, 1):
            raise ValueError("qos is 0 or 1")
        conn = await self._room(qos)
        data = self._packet((topic, payload), qos, retain)
        if not qos:
            conn.send(data)
            await conn.drain()
            self._open()
            return
        fut = asyncio.get_running_loop().create_future()
        fut.add_done_callback(retrieve)
        self._waiting[self._pid] = fut
        conn.send(data)
        await fut

    async def send(self, messages: Sequence[tuple[str, bytes]], qos: int = 1) -> None:
        """Write (topic, payload) pairs; with QoS 1, wait while more than ``window`` are unacknowledged."""
        conn = await self._room(len(messages)) if qos == 1 else self._open()
        conn.send(b"".join([self._packet(m, qos) for m in messages]))
        await conn.drain()
        self._open()

    async def flush(self) -> None:
        """Wait until the broker has acknowledged every QoS 1 message sent so far."""
        while self._unacked:
            self._open()
            self._acked.clear()
            await self._acked.wait()
        self._open()

    # ------------------------------------------------------------------ groups, from callbacks
    @property
    def connected(self) -> bool:
        """Entered and the connection not closed: :meth:`submit` may be called."""
        conn = self._conn
        return conn is not None and not conn.closed.done()

    async def wait_closed(self) -> None:
        """Return when the connection has closed (lost, or closed by us)."""
        await asyncio.shield(self._open().closed)

    def room(self, n: int) -> bool:
        """Whether ``n`` more QoS 1 messages fit in the window now (a larger group fits an empty window)."""
        return not self._unacked or len(self._unacked) + n <= self.window

    async def wait_room(self, n: int) -> None:
        """Wait until :meth:`room` (raises :class:`ConnectionError` when the connection is lost meanwhile)."""
        await self._room(n)

    def submit(self, messages: Sequence[tuple[str, bytes]],
               deadline: float | None = None) -> asyncio.Future[Exception | None]:
        """Publish a group at QoS 1 without awaiting anything. The future's result is None once the broker
        acknowledged every message, else the error that ended it, returned rather than raised (so that no
        callback is needed to retrieve it, thousands of groups at once): :class:`ConnectionError` (the
        connection was lost first), :class:`TimeoutError` (not all acknowledged by ``deadline``, loop time;
        their packet ids are then given up and a late PUBACK is ignored) or :class:`~.errors.MqttError` (a
        PUBACK with a failure reason code). Raises :class:`ConnectionError` at once when the connection is
        already closed. The caller keeps to the window (:meth:`room`); the PUBLISHes of every :meth:`submit`
        of one loop iteration go out in one write."""
        conn = self._conn
        if conn is None or conn.closed.done():
            self._open()  # raises
        assert conn is not None
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Exception | None] = loop.create_future()
        if not messages:
            fut.set_result(None)
            return fut
        group = _Group(self, fut, len(messages))
        if deadline is not None:
            group.timer = loop.call_at(deadline, group.expire)
        out, groups, unacked, topics, pids = self._out, self._groups, self._unacked, self._topics, group.pids
        if not out:
            loop.call_soon(self._write_out, conn)
        props = b"\x00" if self.version == MQTT5 else b""
        pid = self._pid
        for m in messages:  # what _packet and publish_packet do for QoS 1, inline
            topic, payload = m
            t = topics.get(topic)
            if t is None:
                t = topics[topic] = string(topic)
            pid = pid % 65535 + 1
            while pid in unacked:  # never reuse an id still in flight
                pid = pid % 65535 + 1
            unacked[pid] = m
            groups[pid] = group
            pids.append(pid)
            n = len(t) + 2 + len(props) + len(payload)
            out.append(b"\x32" + (bytes((n,)) if n < 128 else varint(n)) + t + pid.to_bytes(2, "big") + props
                       + payload)
        self._pid = pid
        return fut

    def _write_out(self, conn: Connection) -> None:
        out, self._out = self._out, []
        conn.send(b"".join(out))  # nothing when the connection closed meanwhile: lost() failed the groups

    def _give_up(self, group: _Group) -> None:
        """A group's deadline passed: its packet ids leave the window."""
        for pid in group.pids:
            if self._groups.get(pid) is group:
                del self._groups[pid]
                self._unacked.pop(pid, None)
        self._acked.set()

    def unacked(self) -> list[tuple[str, bytes]]:
        """QoS 1 messages not acknowledged yet, oldest first (to resend after a reconnect)."""
        return list(self._unacked.values())


class _Group:
    """The messages of one :meth:`Publisher.submit`: one future, settled by the last PUBACK, the first
    failure, or the deadline."""

    __slots__ = ("fut", "left", "pids", "pub", "timer")

    def __init__(self, pub: Publisher, fut: asyncio.Future[Exception | None], n: int) -> None:
        self.pub = pub
        self.fut = fut
        self.left = n
        self.pids: list[int] = []
        self.timer: asyncio.TimerHandle | None = None

    def acked(self) -> None:
        """Every message acknowledged (:meth:`Publisher.acked` counts ``left`` down)."""
        if not self.fut.done():
            if self.timer is not None:
                self.timer.cancel()
            self.fut.set_result(None)

    def fail(self, exc: Exception) -> None:
        if not self.fut.done():
            if self.timer is not None:
                self.timer.cancel()
            self.pub.groups_failed += 1
            self.fut.set_result(exc)

    def expire(self) -> None:
        self.pub._give_up(self)
        self.fail(TimeoutError(f"{self.left} of {len(self.pids)} messages not acknowledged in time"))
