"""The collector service: MQTT -> decode -> points -> batch -> InfluxDB or the spool -> ack.

A QoS 1 message is acked only once its points (or its dead letters) are in InfluxDB or fsync'd in the
spool, so ``kill -9`` loses nothing; what is in flight is bounded by the MQTT receive maximum. Invalid
messages ride in the same batches as good ones and are acked when their dead letters are durable: they
never hold the in-flight window longer than a good message does.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from rollups.runner import journal_for
from smartpark.config import Settings
from smartpark.errors import PartialWriteError, WriteError
from smartpark.influx import InfluxClient
from smartpark.lineproto import encode_line
from smartpark.mqtt import Message, MqttSource
from smartpark.park import Park
from smartpark.wire import (
    BAD_VALUE,
    SUBSCRIPTION,
    Decoder,
    Rejected,
    UniqueNs,
    dead_letter_line,
    share_subscription,
    status_topic,
)

from .metrics import Metrics
from .spool import Record, Spool

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Counters:
    """Every path a message can take, counted since start (the ``collector`` measurement, CONTRACT §3).

    ``received``: MQTT messages; ``written``: reading points in InfluxDB; ``invalid``: dead letters;
    ``spooled``: points put in the spool; ``retries``: failed writes tried again.
    """

    received: int = 0
    written: int = 0
    invalid: int = 0
    spooled: int = 0
    retries: int = 0


@dataclass(slots=True)
class Batch:
    """Lines of one flush: readings (ms precision), events (dead letters + status, ns) and what to ack."""

    readings: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)

    def records(self) -> list[Record]:
        return [r for r in (Record("ms", self.readings), Record("ns", self.events)) if r.lines]


class Collector:
    """``await Collector(settings, park).run(stop)`` until ``stop`` is set; then flush, ack, exit."""

    def __init__(self, settings: Settings, park: Park, *, instance: str = "default",
                 share_group: str | None = None, batch_size: int = 5000, flush_interval: float = 1.0,
                 spool_max_mb: float = 256, metrics_port: int = 0, write_timeout: float = 10.0,
                 receive_maximum: int | None = None, protocol: int | None = None,
                 write_concurrency: int = 2) -> None:
        self.settings = settings
        self.park = park
        self.instance = instance
        self.share_group = share_group
        self.batch_size = max(1, batch_size)
        self.flush_interval = flush_interval
        self.idle_flush = min(0.05, flush_interval)
        self.spool_max_bytes = int(spool_max_mb * 1024 * 1024)
        self.metrics_port = metrics_port
        self.write_timeout = write_timeout
        self.receive_maximum = receive_maximum or min(65_535, 4 * self.batch_size)
        self.protocol = protocol
        self.write_concurrency = max(1, write_concurrency)
        self.counters = Counters()
        self.metrics = Metrics(instance)
        self.decoder = Decoder(park, max_age_ms=settings.raw_retention_ms)
        self.rollup_journal = journal_for(settings)  # the periods each written batch touched (rollups/)
        self._unique = UniqueNs()
        self._influx_ok = True
        self._retry_at = 0.0  # loop time of the next write attempt after a failure (backoff, Retry-After)
        self._db_checked = False
        self._next_status = 0.0
        self.source: MqttSource | None = None  # while running, for observation (tests, status)
        self.spool: Spool | None = None

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
        source = MqttSource(self.settings.mqtt(), self.client_id, share_subscription(self.share_group, SUBSCRIPTION),
                            receive_maximum=self.receive_maximum, protocol=self.protocol,
                            status_topic=status_topic("collector", self.instance),
                            on_reconnect=self.metrics.reconnects.inc)
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
                await self._pipeline(source, queue, stop)
                try:
                    async with asyncio.timeout(max(30.0, 3 * self.write_timeout)):
                        await asyncio.shield(sink)
                except TimeoutError:  # spool full and InfluxDB down: what is not acked stays with the broker
                    log.error("collector: could not make the last batch durable in time; the broker keeps it")
                    sink.cancel()
                replay.cancel()
                mqtt_stop.set()
        log.info("collector %s stopped: %s", self.instance, asdict(self.counters))

    async def _pipeline(self, source: MqttSource, queue: asyncio.Queue[Batch | None], stop: asyncio.Event) -> None:
        """The one pipeline: take messages, decode each into points or dead letters, hand full batches on."""
        loop = asyncio.get_running_loop()
        batch, opened = Batch(), loop.time()
        while True:
            stopping = stop.is_set()
            wait = 0.0 if stopping else min(self.idle_flush, opened + self.flush_interval - loop.time())
            # small takes: a snapshot message carries many readings, and a batch should not overshoot much
            messages = await source.take(max(1, min(256, self.batch_size - len(batch.readings))), max(0.0, wait))
            if messages:
                self.counters.received += len(messages)
                self.metrics.received.inc(len(messages))
            for m in messages:
                self._add(batch, m)
            now = loop.time()
            if (stopping or len(batch.readings) >= self.batch_size or now >= opened + self.flush_interval
                    or (not messages and batch.messages)):
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

    def _add(self, batch: Batch, m: Message) -> None:
        batch.messages.append(m)
        lines, rejected = self.decoder.lines(m.topic, m.payload, m.received_ms)
        batch.readings += lines
        for rej in rejected:
            batch.events.append(dead_letter_line(rej, self._unique.next(rej.reason, time.time_ns())))
            self.metrics.dead_letters.labels(rej.reason).inc()
            self.counters.invalid += 1

    def _status_line(self) -> str:
        return encode_line("collector", {"instance": self.instance}, asdict(self.counters),
                           self._unique.next("collector", time.time_ns()))

    # ------------------------------------------------------------------ durability
    async def _sink(self, db: InfluxClient, spool: Spool, source: MqttSource,
                    queue: asyncio.Queue[Batch | None]) -> None:
        """Make batches durable, ``write_concurrency`` at a time (InfluxDB ingests on several cores)."""
        slots = asyncio.Semaphore(self.write_concurrency)
        async with asyncio.TaskGroup() as tg:
            while (batch := await queue.get()) is not None:
                await slots.acquire()
                tg.create_task(self._deliver(db, spool, source, batch, slots), name="deliver")

    async def _deliver(self, db: InfluxClient, spool: Spool, source: MqttSource, batch: Batch,
                       slots: asyncio.Semaphore) -> None:
        """One batch into InfluxDB, else the spool; then its messages are acked in one write."""
        try:
            pending: list[Record] = []
            for rec in batch.records():
                if not pending and spool.empty and self._influx_ok:
                    try:
                        await self._write(db, rec)
                        continue
                    except (WriteError, TimeoutError) as exc:
                        self._influx_ok = False
                        self._defer(exc)
                        log.warning("collector: InfluxDB write failed (%s); spooling until it answers", exc)
                pending.append(rec)
            if pending:
                await spool.append(pending)
                n = sum(len(r.lines) for r in pending)
                self.counters.spooled += n
                self.metrics.spooled.inc(n)
            source.ack(batch.messages)
        finally:
            slots.release()

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
        attempt = 0
        while True:
            await spool.wait_nonempty()
            record = spool.peek()
            if record is None:
                continue
            if (hold := self._retry_at - loop.time()) > 0:
                await asyncio.sleep(hold)
            try:
                await self._write(db, record)
            except (WriteError, TimeoutError) as exc:
                attempt += 1
                self.counters.retries += 1
                self.metrics.retries.inc()
                delay = self._defer(exc, random.uniform(0, min(10.0, 0.25 * 2 ** min(attempt, 8))))
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
                self._written(rec, len(rec.lines) - max(1, len(exc.rejected)))
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
        self._written(rec, len(rec.lines))

    async def _bisect(self, db: InfluxClient, rec: Record) -> None:
        half = len(rec.lines) // 2
        await self._write(db, Record(rec.precision, rec.lines[:half]))
        await self._write(db, Record(rec.precision, rec.lines[half:]))

    def _written(self, rec: Record, n: int) -> None:
        if rec.precision == "ms":
            self.rollup_journal.note_lines(rec.lines)  # durable in InfluxDB, not yet acked or committed
            self.counters.written += n
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
            out.append(dead_letter_line(rej, self._unique.next(rej.reason, time.time_ns())))
            self.counters.invalid += 1
            self.metrics.dead_letters.labels(rej.reason).inc()
        return out

    def stats(self) -> dict[str, Any]:
        return asdict(self.counters)
