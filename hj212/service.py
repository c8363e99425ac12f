"""``smartpark hj212 serve``: data loggers over TCP -> frame -> packet -> points -> the collector's write path
-> the 9014 acknowledgement.

The path of a packet, stage by stage:

1. :class:`Listener` (one asyncio server, one protocol object per logger connection) cuts the byte stream into
   frames (:mod:`hj212.frame`), parses each (:mod:`hj212.packet`), finds the logger by MN, checks PW,
   decrypts an SM4 CP (:mod:`hj212.crypto`) and reassembles split packets; the first failure refuses the
   packet as a dead letter (CONTRACT §7, in that order).
2. :class:`hj212.decode.PacketDecoder` turns it into points, validating each reading with the MQTT path's
   :class:`~smartpark.decode.Decoder`.
3. The points go to :class:`Hj212Collector`, which *is* the collector (:class:`collector.Collector`): its
   batcher, InfluxDB writer, fsync'd spool and replay, with the listener as its input instead of MQTT.
4. When the batch is durable (InfluxDB or spool) the collector acks it, which resolves the packet's future;
   for real-time data the readings were also published to MQTT at QoS 1 for the alarm engine. The 9014 is
   written only when both are done; a packet that did not become durable gets none, and the logger resends.

One slow or hostile logger holds only its own connection: reads are per connection and handled as they come
(a packet's path up to the inbox is synchronous), the frame reader holds at most one packet, an idle
connection is closed, and so is one that does not read its answers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from collector.service import Batch, Collector
from collector.spool import SpoolError
from smartpark.config import Settings
from smartpark.decode import Rejected
from smartpark.park import Park
from smartpark.schema import DEAD_LETTER_PAYLOAD_BYTES, HJ212_AUTH, UNKNOWN_MN
from smartpark.timing import Wakeup, first_of
from smartpark.topics import hj212_topic as dead_letter_topic

from .crypto import decrypt_cp, encrypt_cp
from .decode import REALTIME, Logger, LoggerMap, PacketDecoder
from .feed import EngineFeed, acked
from .frame import Frame, FrameError, FrameReader, common_segment, frame
from .packet import FLAG_ACK, FLAG_SPLIT, Packet, PacketError, encode, encode_cp, parse, parse_cp

log = logging.getLogger(__name__)

MAX_UNREAD_ANSWERS = 1 << 20  # bytes of answers a logger leaves unread before it is disconnected
MAX_SPLIT_SETS = 8  # split packets being reassembled per connection
MAX_SPLIT_BYTES = 1 << 20
TIME_CALIBRATION_REQUEST, SET_TIME = "1013", "1012"
DATA_ACK = "9014"


@dataclass(slots=True, eq=False)
class Item:
    """One packet on its way to durability: its lines, its dead letters, the readings for the alarm engine,
    and the 9014 to write to its connection once both are safe (None: the packet asked for none)."""

    mn: str
    lines: list[str]
    rejected: list[Rejected]
    conn: _Connection | None = None
    answer: bytes | None = None  # the 9014 (several, for the parts of a split packet)
    answers: int = 0
    feed: list[tuple[str, bytes]] | None = None
    group: _FeedGroup | None = None  # the engine publish its feed went out in
    qos: int = 0  # a packet holds no place in a broker's in-flight window (collector.service.Source)
    gen: int = 0


_UNFED = ("hj212: the alarm engine's readings of %d packets were not accepted by the broker; no 9014 for them "
          "(their loggers resend)")


class _FeedGroup:
    """The engine feed's publish of the packets of one take: one future for all their PUBACKs. A packet whose
    batch is durable before the PUBACKs are in waits here for its 9014 (no future or callback per packet)."""

    __slots__ = ("durable", "fut", "listener")

    def __init__(self, listener: Listener, fut: asyncio.Future[Any]) -> None:
        self.listener = listener
        self.fut = fut
        self.durable: list[Item] = []
        fut.add_done_callback(self._settled)

    def _settled(self, fut: asyncio.Future[Any]) -> None:
        items, self.durable = self.durable, []
        if acked(fut):
            for item in items:
                self.listener.answer(item)
        elif items:
            log.warning(_UNFED, len(items))


class Hj212Metrics:
    """Per logger (label ``mn``; ``-`` for packets of no known logger), in the collector's registry.

    The three a packet touches (packets, last packet, acks) are plain dictionaries that the registry reads
    when scraped (:class:`_PerLogger`): a labelled prometheus child takes a lock per update, three per
    packet, which was a twentieth of a burst's CPU. Refusals and unmapped codes are rare: ordinary counters."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        # per MN: [packets, acks, last packet's time], one record (one lookup, one cold line in a burst)
        self.loggers: dict[str, list[Any]] = {}
        self.refused = Counter("smartpark_hj212_refused", "packets refused (dead-lettered)", ("mn", "reason"),
                               registry=r)
        self.unmapped = Counter("smartpark_hj212_unmapped_codes", "values of pollutant codes no sensor maps",
                                ("mn", "code"), registry=r)
        self.connections = Gauge("smartpark_hj212_connections", "open logger connections", registry=r)
        r.register(_PerLogger(self))

    def packet(self, mn: str, now: float) -> None:
        rec = self.loggers.get(mn)
        if rec is None:
            rec = self.loggers[mn] = [0, 0, 0.0]
        rec[0] += 1
        rec[2] = now

    def acked(self, mn: str, n: int = 1) -> None:
        rec = self.loggers.get(mn)
        if rec is None:
            rec = self.loggers[mn] = [0, 0, 0.0]
        rec[1] += n

    def values(self, which: int) -> list[tuple[str, Any]]:
        """(MN, value) of one column of the records (0 packets, 1 acks, 2 last packet), of the loggers it
        has happened to (an MN with acks but no packet has no last packet time)."""
        col = 0 if which == 2 else which
        return [(mn, rec[which]) for mn, rec in list(self.loggers.items()) if rec[col]]


class _PerLogger:
    """The registry's view of :class:`Hj212Metrics`' dictionaries (a prometheus "custom collector")."""

    def __init__(self, m: Hj212Metrics) -> None:
        self.m = m

    def describe(self) -> list[Any]:
        return []  # not known before the first packets: collected at every scrape

    def collect(self) -> Iterator[Any]:
        m = self.m
        for name, doc, kind, which in (
                ("smartpark_hj212_packets", "packets accepted", CounterMetricFamily, 0),
                ("smartpark_hj212_acks", "9014 acknowledgements sent", CounterMetricFamily, 1),
                ("smartpark_hj212_last_packet_timestamp_seconds", "time of the last packet", GaugeMetricFamily, 2)):
            family = kind(name, doc, labels=("mn",))
            for mn, v in m.values(which):
                family.add_metric((mn,), v)
            yield family


class _Connection(asyncio.Protocol):
    """One logger's connection, a protocol (no stream reader, coroutine or timeout context per read: at
    5,000 loggers that was most of the server's CPU). Its reads are cut into frames and handled at once;
    when the collector is behind, reading pauses (backpressure) until the inbox has room again. Slots: what
    a read touches of its connection is one object, not an object and its dictionary (a burst reads thousands
    of connections, each cold; docs/benchmarks/hj212.md §10)."""

    __slots__ = ("_idle", "frames", "last", "listener", "part_bytes", "parts", "peer", "transport")

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.frames = FrameReader()
        self.parts: dict[tuple[str, str | None, str], dict[int, Packet]] = {}
        self.part_bytes = 0
        self.last = 0.0  # loop time of the last read
        self._idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's: asyncio.Transport's methods, no subclass
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.listener.opened(self)
        loop = asyncio.get_running_loop()
        self.last = loop.time()
        self._idle = loop.call_at(self.last + self.listener.service.idle_timeout, self._check_idle)

    def _check_idle(self) -> None:
        """One timer per idle period, not one per read: re-armed from the last read until it is silent long
        enough."""
        timeout = self.listener.service.idle_timeout
        loop = asyncio.get_running_loop()
        if loop.time() - self.last >= timeout:
            log.info("hj212: %s idle for %.0f s; closing", self.peer, timeout)
            self.close()
        else:
            self._idle = loop.call_at(self.last + timeout, self._check_idle)

    def data_received(self, data: bytes) -> None:
        self.last = asyncio.get_running_loop().time()
        listener = self.listener
        try:
            frames = self.frames
            if (head := frames.whole(data)) is not None:  # what a logger's read nearly always is
                if not listener._realtime(self, *head):
                    listener._packet(self, Frame(data[6:-6], data))
                return
            for event in frames.feed(data):
                if isinstance(event, FrameError):
                    listener._refuse(self, event.reason, event.detail, None, event.raw)
                    if event.fatal:
                        log.warning("hj212: %s sends no HJ 212 packets (%s); closing", self.peer, event.detail)
                        self.close()
                        return
                    continue
                listener._fast(self, event)
        except Exception:  # the last guard: one logger's packet cannot take the listener down
            log.exception("hj212: %s: unexpected error; closing the connection", self.peer)
            self.close()

    def eof_received(self) -> bool:
        return False  # close

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            log.info("hj212: %s: connection lost (%s)", self.peer, exc)
        if self._idle is not None:
            self._idle.cancel()
        self.listener.closed(self)

    def send(self, data: bytes) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        t.write(data)
        if t.get_write_buffer_size() > MAX_UNREAD_ANSWERS:
            log.warning("hj212: %s does not read its answers; closing the connection", self.peer)
            t.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class Listener:
    """The collector's input for HJ 212: a TCP server whose packets are taken in batches and acked once
    durable. ``async with``, once; :meth:`run` serves until its stop event (or the service's) is set."""

    # no broker window to fill (collector.service.Source)
    gen: int = 0
    window: int | None = None
    in_flight: int = 0

    def __init__(self, service: Hj212Collector, host: str, port: int, *, max_pending: int = 20_000) -> None:
        self.service = service
        self.host, self.port = host, port
        self.max_pending = max_pending
        self.ready = asyncio.Event()  # set once listening; ``port`` is then the bound port
        self._inbox: deque[Item] = deque()
        self._paused: set[_Connection] = set()  # reading paused while the inbox is full
        self._wakeup = Wakeup()
        self._conns: set[_Connection] = set()
        self._entered = False
        self.connects = 0

    async def __aenter__(self) -> Listener:
        if self._entered:
            raise RuntimeError("Listener cannot be entered twice")
        self._entered = True
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        for conn in list(self._conns):
            conn.close()

    @property
    def queued(self) -> int:
        """Packets (and refusals) waiting for the collector to take them."""
        return len(self._inbox)

    @property
    def paused(self) -> int:
        """Connections whose reading is paused because the inbox is full (the collector is behind)."""
        return len(self._paused)

    # ------------------------------------------------------------------ the collector's side
    async def take(self, max_n: int, wait: float) -> list[Item]:
        """Up to ``max_n`` packets, waiting at most ``wait`` seconds for the first one. Their readings for the
        alarm engine go to the broker now, as one group (:class:`_FeedGroup`)."""
        if not self._inbox and wait > 0:
            await self._wakeup.wait(wait)
        inbox = self._inbox
        out = [inbox.popleft() for _ in range(min(max_n, len(inbox)))]
        feed = self.service.feed
        if feed is not None:
            fed = [item for item in out if item.feed]
            if fed:
                group = _FeedGroup(self, feed.publish_soon([m for item in fed for m in item.feed or ()]))
                for item in fed:
                    item.group = group
        if self._paused and len(inbox) < self.max_pending:
            paused, self._paused = self._paused, set()
            for conn in paused:
                if conn.transport is not None and not conn.transport.is_closing():
                    conn.transport.resume_reading()
        return out

    def ack(self, messages: list[Any]) -> int:
        """The packets' points are durable: their 9014 may go out (once the engine's readings are PUBACKed)."""
        n = unfed = 0
        for item in messages:
            if item.answer is None:
                continue
            n += 1
            group = item.group
            if group is None:
                self.answer(item)
            elif not group.fut.done():
                group.durable.append(item)
            elif acked(group.fut):
                self.answer(item)
            else:
                unfed += 1
        if unfed:
            log.warning(_UNFED, unfed)
        return n

    def refuse(self, messages: list[Any]) -> int:
        """Not durable: no 9014, the loggers resend."""
        return sum(1 for item in messages if item.answer is not None)

    def answer(self, item: Item) -> None:
        if item.conn is not None and item.answer is not None:
            item.conn.send(item.answer)
            self.service.hj212_metrics.acked(item.mn, item.answers)

    def _put(self, conn: _Connection, item: Item) -> None:
        """Into the inbox; when it is full (InfluxDB down, spool full: the collector is behind) the
        connection stops reading until :meth:`take` makes room (a read already in holds a few more)."""
        inbox = self._inbox
        inbox.append(item)
        if len(inbox) >= self.max_pending and conn not in self._paused and conn.transport is not None \
                and not conn.transport.is_closing():
            conn.transport.pause_reading()
            self._paused.add(conn)
        self._wakeup.wake()

    # ------------------------------------------------------------------ the loggers' side
    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Connection(self), self.host, self.port, backlog=4096)
        self.port = server.sockets[0].getsockname()[1]
        log.info("hj212: listening for data loggers on %s:%d (%d loggers in the park model)", self.host,
                 self.port, len(self.service.loggers))
        self.ready.set()
        try:
            await first_of(stop.wait(), self.service.stopping.wait())
        finally:
            server.close()
            for conn in list(self._conns):
                conn.close()
            self._wakeup.wake()  # the collector's pipeline sees the stop now, not when its batch's linger ends
            await server.wait_closed()

    def opened(self, conn: _Connection) -> None:
        self._conns.add(conn)
        self.connects += 1
        self.service.hj212_metrics.connections.inc()

    def closed(self, conn: _Connection) -> None:
        if conn in self._conns:
            self._conns.discard(conn)
            self._paused.discard(conn)
            self.service.hj212_metrics.connections.dec()

    def _refuse(self, conn: _Connection, reason: str, detail: str, mn: str | None, raw: bytes) -> None:
        known = mn if mn is not None and self.service.loggers.get(mn) is not None else "-"
        self.service.hj212_metrics.refused.labels(known, reason).inc()
        log.info("hj212: refused a packet of %s: %s: %s", mn or "-", reason, detail)
        rej = Rejected(reason, detail, dead_letter_topic(mn), raw[:DEAD_LETTER_PAYLOAD_BYTES])
        self._put(conn, Item(mn or "-", [], [rej]))

    def _packet(self, conn: _Connection, fr: Frame) -> None:
        """Check in the contract's order (frame, CRC: done; MN, PW, decryption), then store and answer."""
        received_ms = time.time_ns() // 1_000_000
        try:
            p = parse(fr.segment, cp_plain=False)
        except PacketError as exc:
            self._refuse(conn, exc.reason, exc.detail, exc.mn, fr.raw)
            return
        logger = self.service.loggers.get(p.mn)
        if logger is None:
            self._refuse(conn, UNKNOWN_MN, f"MN {p.mn} is not a logger of the park model", p.mn, fr.raw)
            return
        if logger.pw is not None and p.pw != logger.pw:
            self._refuse(conn, HJ212_AUTH, f"PW of {p.mn} differs from the park model's", p.mn, fr.raw)
            return
        try:
            p = self._plain(p, logger)
        except PacketError as exc:
            self._refuse(conn, exc.reason, exc.detail, p.mn, fr.raw)
            return
        metrics = self.service.hj212_metrics
        metrics.packet(logger.mn, time.time())
        parts = [p]
        if p.split:
            whole = self._reassemble(conn, p)
            if whole is None:
                return
            p, parts = whole
        if p.cn == TIME_CALIBRATION_REQUEST:
            conn.send(self.service.set_time(p, logger))
            return
        try:
            points = self.service.packets.decode(p, logger, fr.raw, received_ms)
        except PacketError as exc:
            self._refuse(conn, exc.reason, exc.detail, p.mn, fr.raw)
            return
        for code in points.unmapped:
            metrics.unmapped.labels(p.mn, code).inc()
        acks = [a for a in parts if a.wants_ack]
        answer = b"".join(data_ack(a) for a in acks) if acks else None
        item = Item(logger.mn, points.lines, points.rejected, conn, answer, len(acks), points.feed or None)
        if not points.lines and not points.rejected:  # heartbeats, status, commands: nothing to store
            self.answer(item)
            return
        self._put(conn, item)

    def _fast(self, conn: _Connection, fr: Frame) -> None:
        """A framed packet, on the path nearly every one takes: the common header, real-time data of a known
        logger with its PW, a plain CP whose every code is mapped and every value a finite number in range
        with flag N. Whatever else it is, :meth:`_packet` takes it whole (same checks, same order, same
        outcome: tests/test_hj212_fastpath.py compares the two)."""
        head = common_segment(fr.segment)
        if head is None or not self._realtime(conn, *head):
            self._packet(conn, fr)

    def _realtime(self, conn: _Connection, qn: str, st: str, cn: str, pw: str, mn: str, flag: int,
                  items: dict[str, str]) -> bool:
        """The fast path from a packet's header fields and CP items (:func:`hj212.frame.common_packet`, or
        :meth:`_fast`): True when it took the packet, False when :meth:`_packet` must."""
        service = self.service
        logger = service.loggers.by_mn.get(mn)
        if cn != REALTIME or logger is None or (logger.pw is not None and pw != logger.pw):
            return False
        now_ns = time.time_ns()
        fast = service.packets.realtime_fast(logger, items, now_ns // 1_000_000)
        if fast is None:
            return False
        lines, snapshot = fast
        # from here the logger's own MN and PW (equal to the packet's), the keys of the per-logger dictionaries
        # below: a lookup then matches by identity and does not read a cold copy of the string
        mn = logger.mn
        if logger.pw is not None:
            pw = logger.pw
        service.hj212_metrics.packet(mn, now_ns / 1e9)
        wants = flag & FLAG_ACK
        self._put(conn, Item(mn, lines, [], conn, data_ack_of(qn, pw, mn, flag) if wants else None,
                             1 if wants else 0, [snapshot]))
        return True

    def _plain(self, p: Packet, logger: Logger) -> Packet:
        """The packet with a readable CP: decrypted with the logger's SM4 key, or refused."""
        if p.cp_text is None:
            return p
        key = logger.config.sm4_key
        if key is None:
            parse_cp(p.cp_text, p.mn)  # not KEY=VALUE and no key to decrypt it: raises hj212_frame
        else:
            return dataclasses.replace(p, cp=parse_cp(decrypt_cp(p.cp_text, key, p.mn), p.mn), cp_text=None)
        return p

    def _reassemble(self, conn: _Connection, p: Packet) -> tuple[Packet, list[Packet]] | None:
        """Hold the parts of a split packet (PNUM/PNO) until all are in; then one packet of all their CP."""
        key = (p.mn, p.qn, p.cn)
        held = conn.parts.get(key)
        if held is None:
            if len(conn.parts) >= MAX_SPLIT_SETS:
                conn.parts.clear()
                conn.part_bytes = 0
            held = conn.parts[key] = {}
        assert p.pno is not None and p.pnum is not None
        held[p.pno] = p
        conn.part_bytes += len(encode(p))
        if conn.part_bytes > MAX_SPLIT_BYTES:
            conn.parts.clear()
            conn.part_bytes = 0
            log.warning("hj212: %s: split packets over %d bytes; dropped the parts held", conn.peer, MAX_SPLIT_BYTES)
            return None
        if len(held) < p.pnum:
            return None
        del conn.parts[key]
        parts = [held[i] for i in sorted(held)]
        conn.part_bytes -= sum(len(encode(x)) for x in parts)
        cp = tuple(group for part in parts for group in part.cp)
        first = parts[0]
        whole = dataclasses.replace(first, cp=cp, flag=(first.flag or 0) & ~FLAG_SPLIT, pnum=None, pno=None)
        return whole, parts

def data_ack(p: Packet) -> bytes:
    """``QN=<its QN>;ST=91;CN=9014;PW=<its PW>;MN=<its MN>;Flag=<its version bits>;CP=&&&&`` (CONTRACT §7)."""
    return frame(encode(Packet(st="91", cn=DATA_ACK, pw=p.pw, mn=p.mn, qn=p.qn, flag=p.version_bits)))


def frame_ack_py(qn: str, tail: bytes) -> bytes:
    """The framed data segment ``QN=<qn>`` + ``tail``: :func:`frame_ack`, which is
    ``hj212._speedups.frame_ack`` (one allocation, the CRC in C) when the extension is built."""
    return frame(b"QN=" + qn.encode() + tail)


try:
    from hj212._speedups import frame_ack
except ImportError:  # not built: the same in Python
    frame_ack = frame_ack_py

_ACK_TAILS: dict[tuple[str, str, int], bytes] = {}  # by (PW, MN, version bits): what follows a 9014's QN


def data_ack_of(qn: str, pw: str, mn: str, flag: int) -> bytes:
    """:func:`data_ack` of a packet with a QN, from its fields (no :class:`Packet` built: the fast path). The
    part after the QN is the same for every packet of a logger: it is made once."""
    key = (pw, mn, flag & ~0x03)
    tail = _ACK_TAILS.get(key)
    if tail is None:
        if len(_ACK_TAILS) >= 100_000:
            _ACK_TAILS.clear()
        tail = _ACK_TAILS[key] = f";ST=91;CN={DATA_ACK};PW={pw};MN={mn};Flag={key[2]};CP=&&&&".encode()
    return frame_ack(qn, tail)


class Hj212Collector(Collector):
    """The collector with HJ 212 data loggers as its input: ``await Hj212Collector(settings, park).run(stop)``.

    Everything after the packet (batch, InfluxDB, spool, replay, the ``collector`` status points as
    instance ``hj212``) is the collector's own code; only the input (:meth:`_source`), what a taken item
    adds to a batch (:meth:`_add`) and what happens when nothing could be made durable differ.
    """

    def __init__(self, settings: Settings, park: Park, *, listen: tuple[str, int] | None = None,
                 engine_feed: bool = True, idle_timeout: float = 600.0, max_pending: int = 20_000,
                 feed_timeout: float = 10.0, instance: str = "hj212", **kw: Any) -> None:
        super().__init__(settings, park, instance=instance, **kw)
        self.listen = listen or settings.hj212_address()
        # the tail of a burst (thousands of loggers at once) is written at once, not after the idle timer behind
        # the acks of the batches before it; the steady trickle still lingers into fewer, larger writes
        # (docs/benchmarks/hj212.md §8)
        self.drained_flush = max(1, self.batch_size // 4)
        self.idle_timeout = idle_timeout
        self.max_pending = max_pending
        self.loggers = LoggerMap(park)
        self.packets = PacketDecoder(park)
        self.hj212_metrics = Hj212Metrics(self.metrics.registry)
        self.feed = (EngineFeed(settings.mqtt(), f"smartpark-hj212-{instance}", timeout=feed_timeout)
                     if engine_feed else None)
        self.stopping = asyncio.Event()
        self.listener: Listener | None = None
        self.undelivered = 0  # packets that could not be made durable (no 9014 for them)

    async def run(self, stop: asyncio.Event) -> None:
        self.stopping = stop
        if self.feed is None:
            await super().run(stop)
            return
        feed_stop = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.feed.run(feed_stop), name="engine-feed")
            try:
                await super().run(stop)
            finally:
                feed_stop.set()

    def _source(self) -> Listener:
        self.listener = Listener(self, *self.listen, max_pending=self.max_pending)
        return self.listener

    def _add(self, batch: Batch, m: Any) -> None:  # an Item of the listener, not an MQTT message
        batch.messages.append(m)
        batch.readings += m.lines
        if m.rejected:
            self._dead_letters(batch, m.rejected)

    def _refuse(self, batch: Batch, exc: SpoolError) -> bool:
        if batch.messages:
            log.error("hj212: InfluxDB unavailable and the spool cannot be written (%s): %d packets not "
                      "acknowledged, their loggers resend", exc, len(batch.messages))
        assert self.listener is not None
        self.undelivered += len(batch.messages)
        self.listener.refuse(batch.messages)
        return True

    def set_time(self, p: Packet, logger: Logger) -> bytes:
        """The answer to a time calibration request (1013): set the logger's clock (1012) to ours."""
        now = datetime.now(self.packets.tz)  # the park's zone, as DataTime is read
        cp: tuple[tuple[tuple[str, str], ...], ...] = ((("SystemTime", now.strftime("%Y%m%d%H%M%S")),),)
        key = logger.config.sm4_key if p.version_bits >= 8 else None
        reply = Packet(st=p.st, cn=SET_TIME, pw=p.pw, mn=p.mn, qn=now.strftime("%Y%m%d%H%M%S%f")[:17],
                       flag=p.version_bits | FLAG_ACK, cp=() if key else cp,
                       cp_text=encrypt_cp(encode_cp(cp), key) if key else None)
        return frame(encode(reply))

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        out["connections"] = self.listener.connects if self.listener is not None else 0
        return out


__all__ = ["EngineFeed", "Hj212Collector", "Item", "Listener", "data_ack"]
