"""The collector service: MQTT -> decode -> points -> batch -> InfluxDB or the spool -> ack.

A QoS 1 message is acked only once its points (or its dead letters) are in InfluxDB or fsync'd in the
spool, so ``kill -9`` loses nothing; what is in flight is bounded by the MQTT receive maximum. Invalid
messages ride in the same batches as good ones and are acked when their dead letters are durable: they
never hold the in-flight window longer than a good message does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from types import TracebackType
from typing import Any, Protocol

from rollups.journal import touched_periods
from rollups.runner import journal_for
from smartpark.config import Settings
from smartpark.decode import Decoder, Rejected, unexpected
from smartpark.errors import PartialWriteError, WriteError
from smartpark.influx import InfluxClient
from smartpark.lineproto import encode_line
from smartpark.mqtt import Message, MqttSource
from smartpark.park import Park
from smartpark.points import UniqueNs, dead_letter_line
from smartpark.schema import BAD_VALUE, COLLECTOR
from smartpark.timing import Backoff, first_of
from smartpark.topics import SUBSCRIPTION, share_subscription, status_topic

from .metrics import Counters, Metrics
from .spool import Record, Spool, SpoolError

log = logging.getLogger(__name__)
PEER_IDLE_S = 2.0  # a taken-over session that sent nothing for this long (and holds nothing unacked) is left


class Source(Protocol):
    """An input of the collector: messages are taken in batches and acked once their points are durable.

    ``gen`` (the connection a message came on), ``window`` (the broker's in-flight window, when it said) and
    ``in_flight`` (unacked messages of the current connection) drive the window flush; an input without a
    broker window has ``window = None``, ``in_flight = 0`` and hands out items with ``qos = 0``."""

    @property
    def gen(self) -> int: ...
    @property
    def window(self) -> int | None: ...
    @property
    def in_flight(self) -> int: ...

    async def __aenter__(self) -> Any: ...
    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None: ...
    async def run(self, stop: asyncio.Event) -> None: ...
    async def take(self, max_n: int, wait: float) -> list[Any]: ...
    def ack(self, messages: list[Any]) -> int: ...


@dataclass(slots=True)
class Batch:
    """Lines of one flush: readings (ms precision), events (dead letters + status, ns) and what to ack."""

    readings: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    messages: list[Any] = field(default_factory=list)  # what the source hands out: MQTT messages, or packets
    held: int = 0  # QoS 1 messages of the current connection: the part of the broker's window it holds

    def records(self) -> list[Record]:
        return [r for r in (Record("ms", self.readings), Record("ns", self.events)) if r.lines]


class Collector:
    """``await Collector(settings, park).run(stop)`` until ``stop`` is set; then flush, ack, exit."""

    def __init__(self, settings: Settings, park: Park, *, instance: str = "default",
                 share_group: str | None = None, batch_size: int = 5000, flush_interval: float = 1.0,
                 spool_max_mb: float = 256, metrics_port: int = 0, write_timeout: float = 10.0,
                 receive_maximum: int | None = None, protocol: int | None = None,
                 write_concurrency: int = 2, window_flush: bool = True) -> None:
        self.settings = settings
        self.park = park
        self.instance = instance
        self.share_group = share_group
        self.batch_size = max(1, batch_size)
        self.flush_interval = flush_interval
        self.idle_flush = min(0.05, flush_interval)
        # the broker's window looks full (every unacked message is in this batch): flush after this gap
        self.window_idle = min(0.003, self.idle_flush)
        self.window_flush = window_flush
        self.spool_max_bytes = int(spool_max_mb * 1024 * 1024)
        self.metrics_port = metrics_port
        self.write_timeout = write_timeout
        self.receive_maximum = receive_maximum or min(65_535, 4 * self.batch_size)
        self.protocol = protocol
        self.write_concurrency = max(1, write_concurrency)
        self.metrics = Metrics(instance)
        self.decoder = Decoder(park, max_age_ms=settings.raw_retention_ms)
        self.rollup_journal = journal_for(settings)  # each written batch, its periods and readings (rollups/)
        self._unique = UniqueNs()
        self._influx_ok = True
        self._retry_at = 0.0  # loop time of the next write attempt after a failure (backoff, Retry-After)
        # a batch the spool cannot take waits U(0.5, 1) * min(5, 0.25 * 2**n) s after its n-th failure
        self._spool_retry = Backoff(0.25, 5.0, floor=0.5)
        self._db_checked = False
        self._next_status = 0.0
        self.source: Any = None  # while running, for observation (tests, status): the MqttSource, or a subclass's input
        self.spool: Spool | None = None
        # a batch of this many reading lines or more is handed on as soon as a take finds the input drained,
        # without the idle timer (0: never; the MQTT input, whose takes often drain, keeps its batches whole)
        self.drained_flush = 0

    @property
    def counters(self) -> Counters:
        """What the Prometheus counters say now (read-only: the registry is the one store of the counts)."""
        return self.metrics.counters()

    @property
    def client_id(self) -> str:
        """Stable across restarts, so that the broker keeps the persistent session for us."""
        return f"smartpark-collector-{self.instance}"

    # ------------------------------------------------------------------ service
    async def run(self, stop: asyncio.Event) -> None:
        """Collect until ``stop`` is set; then make the last batch durable, ack it, go offline and return.

        Tasks: the MQTT connection (reconnects on its own), the spool replayer, the sink (InfluxDB or
        spool, then ack) and, in this coroutine, the pipeline that feeds the sink.
        """
        spool_dir = self.settings.state_path / "spool" / self.instance
        source = self._source()
        async with (InfluxClient(self.settings.influx(), timeout=self.write_timeout) as db,
                    Spool(spool_dir, self.spool_max_bytes) as spool, source,
                    self.metrics.serve(self.metrics_port)):
            self.metrics.bind_spool(spool)
            self.source, self.spool = source, spool
            mqtt_stop = asyncio.Event()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(source.run(mqtt_stop), name="mqtt")
                replay = tg.create_task(self._replay(db, spool), name="replay")
                queue: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=2)
                sink = tg.create_task(self._sink(db, spool, source, queue), name="sink")
                peers = tg.create_task(self._watch_peers(db, spool, mqtt_stop), name="peers") \
                    if self.share_group else None
                await self._pipeline(source, queue, stop)
                try:
                    async with asyncio.timeout(max(30.0, 3 * self.write_timeout)):
                        await asyncio.shield(sink)
                except TimeoutError:  # spool full and InfluxDB down: what is not acked stays with the broker
                    log.error("collector: could not make the last batch durable in time; the broker keeps it")
                    sink.cancel()
                replay.cancel()
                mqtt_stop.set()
                if peers is not None:
                    peers.cancel()
        log.info("collector %s stopped: %s", self.instance, asdict(self.counters))

    def _source(self) -> Source:
        """Where messages come from: the MQTT subscription (another input, such as HJ 212, gives its own)."""
        return MqttSource(self.settings.mqtt(), self.client_id, share_subscription(self.share_group, SUBSCRIPTION),
                          receive_maximum=self.receive_maximum, protocol=self.protocol,
                          status_topic=status_topic("collector", self.instance),
                          status_extra={"share_group": self.share_group} if self.share_group else None,
                          on_reconnect=self.metrics.reconnects.inc, on_session_lost=self.metrics.sessions_lost.inc)

    async def _pipeline(self, source: Source, queue: asyncio.Queue[Batch | None], stop: asyncio.Event) -> None:
        """The one pipeline: take messages, decode each into points or dead letters, hand full batches on."""
        loop = asyncio.get_running_loop()
        batch, opened = Batch(), loop.time()
        while True:
            stopping = stop.is_set()
            gap = self._gap(source, batch)
            wait = 0.0 if stopping else min(gap, opened + self.flush_interval - loop.time())
            # small takes: a snapshot message carries many readings, and a batch should not overshoot much
            asked = max(1, min(256, self.batch_size - len(batch.readings)))
            messages = await source.take(asked, max(0.0, wait))
            if messages:
                self.metrics.received.inc(len(messages))
            gen = source.gen
            for m in messages:
                self._add(batch, m)
                if m.qos and m.gen == gen:
                    batch.held += 1
            now = loop.time()
            window = source.window
            # the batch holds the broker's whole window: known (MQTT 5), or inferred from a pause
            window_full = self.window_flush and bool(batch.held) and (
                (window is not None and batch.held >= window) or (not messages and gap == self.window_idle))
            # a large batch and an input with nothing more to give at once (a burst's tail): written now
            drained = 0 < self.drained_flush <= len(batch.readings) and len(messages) < asked
            if (stopping or len(batch.readings) >= self.batch_size or now >= opened + self.flush_interval
                    or (not messages and batch.messages) or window_full or drained):
                if window_full and not stopping:
                    self.metrics.window_flushes.inc()
                if batch.readings:  # idle flushes carry only the status line: not a batch size
                    self.metrics.batch_size.observe(len(batch.readings))
                if now >= self._next_status or stopping:
                    batch.events.append(self._status_line())
                    self._next_status = now + self.flush_interval
                if batch.messages or batch.events:
                    await queue.put(batch)
                batch, opened = Batch(), now
            if stopping:
                break
        await queue.put(None)

    def _gap(self, source: Source, batch: Batch) -> float:
        """How long to wait for more before flushing what the batch holds.

        The idle timer (50 ms) lets a batch grow while messages keep coming. But when every message the
        broker has given us unacked is in this batch, a pause most likely means its in-flight window is full
        (RabbitMQ's ``mqtt.prefetch`` of 10, mosquitto's ``max_inflight_messages`` with 3.1.1): nothing more
        comes until we ack, so waiting the idle timer would only starve ingest. Flush after a short gap.
        """
        if self.window_flush and batch.held and source.in_flight <= batch.held:
            return self.window_idle
        return self.idle_flush

    def _add(self, batch: Batch, m: Message) -> None:
        """One message into the batch: its reading lines and its dead letters.

        Whatever goes wrong with one message (the decoder never raises, but this is the last guard) makes it
        one ``bad_value`` dead letter naming the exception; it is acked with the batch like any other, so a
        redelivered message cannot stop the collector again and again."""
        batch.messages.append(m)
        try:
            lines, rejected = self.decoder.lines(m.topic, m.payload, m.received_ms)
            events = [self._dead_letter_line(rej) for rej in rejected]
        except Exception as exc:
            log.exception("collector: unexpected error handling a message on %r; dead-lettered", m.topic[:200])
            lines, rejected = [], [Rejected(BAD_VALUE, unexpected(exc), m.topic, m.payload)]
            events = [self._dead_letter_line(rejected[0])]
        batch.readings += lines
        batch.events += events
        self._count_dead_letters(rejected)

    def _dead_letters(self, batch: Batch, rejected: list[Rejected]) -> None:
        """Dead letters that an input found before the decoder (HJ 212 frames): into the batch, counted."""
        batch.events += [self._dead_letter_line(rej) for rej in rejected]
        self._count_dead_letters(rejected)

    def _dead_letter_line(self, rej: Rejected) -> str:
        """A dead letter's point, at a nanosecond time no other dead letter of its reason has."""
        return dead_letter_line(rej, self._unique.next(rej.reason, time.time_ns()))

    def _count_dead_letters(self, rejected: list[Rejected]) -> None:
        for rej in rejected:
            self.metrics.dead_letters.labels(rej.reason).inc()

    # ------------------------------------------------------------------ share group: a member that is gone
    async def _watch_peers(self, db: InfluxClient, spool: Spool, stop: asyncio.Event) -> None:
        """Take over the session of every member of our share group that goes offline.

        Mosquitto (like the MQTT 5 text allows) goes on giving an offline member with a persistent session
        its share, and keeps what it had sent it unacked: half the readings would wait until that member is
        back, and all of them would be lost with it if it never came back. So each member watches the
        group's status topics (the retained ``offline`` of a clean exit or the broker's last will after a
        ``kill -9``) and takes the gone member's session over (:meth:`_take_over`): it unsubscribes the
        share there, so the broker stops queueing to it, and stores and acks what the session held.
        """
        watch = MqttSource(self.settings.mqtt(), f"{self.client_id}-peers", status_topic("collector", "+"),
                           clean_start=True, session_expiry=0, protocol=self._known_protocol())
        running: dict[str, asyncio.Task[None]] = {}
        async with watch, asyncio.TaskGroup() as tg:
            tg.create_task(watch.run(stop), name="peers-mqtt")
            try:
                while True:
                    messages = await watch.take(100, 1.0)
                    watch.ack(messages)
                    for m in messages:
                        peer = m.topic.rsplit("/", 1)[-1]
                        try:
                            status = json.loads(m.payload)
                        except ValueError:
                            continue
                        if (peer == self.instance or not isinstance(status, dict)
                                or status.get("share_group") != self.share_group or status.get("status") != "offline"
                                or (peer in running and not running[peer].done())):
                            continue
                        log.warning("collector %s: share-group member %r of %r is offline; taking over its session "
                                    "so that the broker's share for it is stored now", self.instance, peer,
                                    self.share_group)
                        running[peer] = tg.create_task(self._take_over(db, spool, peer, stop), name=f"peer:{peer}")
            finally:
                for task in running.values():
                    task.cancel()

    def _known_protocol(self) -> int | None:
        """The protocol of further connections to the broker: as given, else what the subscription found."""
        src = self.source
        return self.protocol or (src.version if src is not None and src.connects else None)

    async def _take_over(self, db: InfluxClient, spool: Spool, peer: str, stop: asyncio.Event) -> None:
        """Connect as ``peer``'s session, unsubscribe its share, store and ack what the broker held for it,
        leave once it is empty. The peer coming back takes its session over from us; what we held unacked is
        redelivered to it, and duplicates collapse onto the same points."""
        done = asyncio.Event()
        src = MqttSource(self.settings.mqtt(), f"smartpark-collector-{peer}",
                         share_subscription(self.share_group, SUBSCRIPTION), receive_maximum=self.receive_maximum,
                         protocol=self._known_protocol(), takeover=True)
        loop = asyncio.get_running_loop()
        async with src:
            run = asyncio.create_task(self._until(src, stop, done), name=f"peer-mqtt:{peer}")
            try:
                last, taken = loop.time(), 0
                while not run.done():
                    messages = await src.take(max(1, self.batch_size), 0.2)
                    if not messages:
                        if src.connected.is_set() and not src.in_flight and loop.time() - last > PEER_IDLE_S:
                            done.set()
                        continue
                    last = loop.time()
                    taken += len(messages)
                    self.metrics.received.inc(len(messages))
                    batch = Batch()
                    for m in messages:
                        self._add(batch, m)
                    slot = asyncio.Semaphore(1)
                    await slot.acquire()
                    await self._deliver(db, spool, src, batch, slot)
                log.warning("collector %s: left the session of %r after storing %d messages it held", self.instance,
                            peer, taken)
            finally:
                done.set()
                with contextlib.suppress(Exception):
                    await run

    @staticmethod
    async def _until(src: MqttSource, stop: asyncio.Event, done: asyncio.Event) -> None:
        """Run ``src`` until the collector stops or the takeover is done."""
        either = asyncio.Event()
        relay = asyncio.ensure_future(first_of(stop.wait(), done.wait()))
        relay.add_done_callback(lambda _: either.set())
        try:
            await src.run(either)
        finally:
            relay.cancel()  # first_of cancels its waits in turn

    def _status_line(self) -> str:
        return encode_line(COLLECTOR, {"instance": self.instance}, asdict(self.counters),
                           self._unique.next(COLLECTOR, time.time_ns()))

    # ------------------------------------------------------------------ durability
    async def _sink(self, db: InfluxClient, spool: Spool, source: Source,
                    queue: asyncio.Queue[Batch | None]) -> None:
        """Make batches durable, ``write_concurrency`` at a time (InfluxDB ingests on several cores)."""
        slots = asyncio.Semaphore(self.write_concurrency)
        async with asyncio.TaskGroup() as tg:
            while (batch := await queue.get()) is not None:
                await slots.acquire()
                tg.create_task(self._deliver(db, spool, source, batch, slots), name="deliver")

    async def _deliver(self, db: InfluxClient, spool: Spool, source: Source, batch: Batch,
                       slots: asyncio.Semaphore) -> None:
        """One batch into InfluxDB, else the spool; then its messages are acked in one write.

        When the spool cannot take it either (disk full, read-only), the batch is held and tried again, first
        InfluxDB directly while the spool is empty: nothing is acked meanwhile, so the pipeline stops taking
        messages and the broker holds the rest."""
        try:
            records = batch.records()
            failures = 0
            while records:
                pending: list[Record] = []
                for rec in records:
                    if not pending and spool.empty and (self._influx_ok or failures):
                        try:
                            await self._write(db, rec)
                            self._influx_ok = True
                            continue
                        except (WriteError, TimeoutError) as exc:
                            if self._influx_ok:
                                log.warning("collector: InfluxDB write failed (%s); spooling until it answers", exc)
                            self._influx_ok = False
                            self._defer(exc)
                    pending.append(rec)
                records = pending
                if not pending:
                    break
                try:
                    await spool.append(pending)
                except SpoolError as exc:
                    failures += 1
                    self.metrics.spool_errors.inc()
                    if self._refuse(batch, exc):
                        return
                    delay = self._spool_retry.delay(failures)
                    if failures == 1:
                        log.error("collector: the spool cannot take a batch of %d messages (%s); not acking them "
                                  "(the broker keeps them), trying again every few seconds", len(batch.messages), exc)
                    await asyncio.sleep(delay)
                    continue
                n = sum(len(r.lines) for r in pending)
                self.metrics.spooled.inc(n)
                break
            source.ack(batch.messages)
        finally:
            slots.release()

    def _refuse(self, batch: Batch, exc: SpoolError) -> bool:
        """The spool cannot be written and InfluxDB did not take the batch: may the input take it back?

        MQTT messages cannot be handed back, so the batch is held and tried again (False); an input that can
        refuse (HJ 212: no 9014, the logger resends) overrides this, refuses the batch and returns True."""
        return False

    def _defer(self, exc: BaseException, backoff: float = 0.0) -> float:
        """Hold the next write attempt ``backoff`` seconds, or longer if InfluxDB's ``Retry-After`` says so
        (whichever write was answered with it); returns how long it is held from now."""
        now = asyncio.get_running_loop().time()
        after = getattr(exc, "retry_after", None)
        self._retry_at = max(self._retry_at, now + max(backoff, after or 0.0))
        return self._retry_at - now

    async def _replay(self, db: InfluxClient, spool: Spool) -> None:
        """Drain the spool oldest first; a failed write is tried again after full-jitter backoff, never sooner
        than a Retry-After."""
        loop = asyncio.get_running_loop()
        backoff, attempt = Backoff(0.25, 10.0), 0  # attempt n >= 1 waits U(0, min(10, 0.25 * 2**n)) s
        while True:
            await spool.wait_nonempty()
            try:
                record = spool.peek()
            except OSError as exc:  # the disk cannot give the record back now; it stays in the spool
                attempt += 1
                log.error("collector: cannot read the spool (%s); retry %d", exc, attempt)
                await asyncio.sleep(backoff.delay(attempt))
                continue
            if record is None:
                continue
            if (hold := self._retry_at - loop.time()) > 0:
                await asyncio.sleep(hold)
            try:
                await self._write(db, record)
            except (WriteError, TimeoutError) as exc:
                attempt += 1
                self.metrics.retries.inc()
                delay = self._defer(exc, backoff.delay(attempt))
                log.warning("collector: spool replay failed (%s); retry %d in %.2f s (%d records, %d bytes "
                            "spooled)", exc, attempt, delay, len(spool), spool.pending_bytes)
                continue
            await spool.commit()
            attempt = 0
            if spool.empty and not self._influx_ok:
                self._influx_ok = True
                log.warning("collector: spool drained, writing to InfluxDB directly again")

    async def _write(self, db: InfluxClient, rec: Record) -> None:
        """Write one record; raises only when trying again later may help (the record is then kept).

        413 splits the batch; a 400 partial write keeps the good lines and dead-letters the others; a
        400 on the whole batch is bisected down to the bad lines.
        """
        if not rec.lines:
            return
        if not self._db_checked:
            try:
                async with asyncio.timeout(self.write_timeout):
                    await db.ensure_database()
            except ValueError as exc:  # InfluxDB answered with an error (rights?): keep the data, try later
                raise WriteError(f"cannot check/create the database: {exc}", retryable=True) from exc
            self._db_checked = True
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.write_timeout):
                await db.write(rec.lines, precision=rec.precision)
        except PartialWriteError as exc:
            if exc.rejected or len(rec.lines) == 1:
                await self._written(rec, len(rec.lines) - max(1, len(exc.rejected)))
                await self._write(db, Record("ns", self._rejected(rec, exc.rejected or {0: str(exc)})))
                return
            # InfluxDB dropped points without naming them (field type conflict): rewriting the good
            # ones is harmless, so bisect down to the refused lines
            await self._bisect(db, rec)
            return
        except WriteError as exc:
            if exc.status == 404:
                self._db_checked = False
            if exc.retryable or exc.status in (401, 403, 404) or (exc.status != 413 and exc.status != 400):
                raise WriteError(str(exc), status=exc.status, retryable=True, retry_after=exc.retry_after) from exc
            if len(rec.lines) == 1:
                await self._write(db, Record("ns", self._rejected(rec, {0: str(exc)})))
                return
            log.warning("collector: InfluxDB refused a batch of %d lines (%d); splitting it", len(rec.lines),
                        exc.status)
            await self._bisect(db, rec)
            return
        self.metrics.write_seconds.observe(time.perf_counter() - started)
        await self._written(rec, len(rec.lines))

    async def _bisect(self, db: InfluxClient, rec: Record) -> None:
        half = len(rec.lines) // 2
        await self._write(db, Record(rec.precision, rec.lines[:half]))
        await self._write(db, Record(rec.precision, rec.lines[half:]))

    async def _written(self, rec: Record, n: int) -> None:
        if rec.precision == "ms":
            # durable in InfluxDB, not yet acked or committed; the values only when InfluxDB took every line.
            # The file is written in a thread: a journal disk that stalls holds this batch's ack, not the
            # event loop that every connection, keepalive and logger of this process waits on
            # (tests/test_hj212_service.py::TestDurability::test_journal_stall_holds_the_batch_not_the_listener)
            periods = touched_periods(rec.lines)
            await asyncio.to_thread(self.rollup_journal.note, periods, rec.lines if n == len(rec.lines) else None)
            self.metrics.written.inc(n)

    def _rejected(self, rec: Record, rejected: dict[int, str]) -> list[str]:
        """Lines InfluxDB refused: readings become dead letters (``bad_value``, with InfluxDB's reason)."""
        out: list[str] = []
        for i, why in rejected.items():
            line = rec.lines[i]
            log.warning("collector: InfluxDB refused %r: %s", line[:200], why)
            if rec.precision != "ms":
                continue  # a refused dead letter or status point cannot be dead-lettered in turn
            rej = Rejected(BAD_VALUE, f"InfluxDB refused the point: {why}", "", line.encode())
            out.append(self._dead_letter_line(rej))
            self._count_dead_letters([rej])
        return out

    def stats(self) -> dict[str, Any]:
        return asdict(self.counters)

