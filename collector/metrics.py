"""Prometheus metrics of one collector, in a registry of its own (no globals: several collectors may run in
one process, as the share-group test does).

The registry is the one store of the collector's counts: the ``collector`` measurement, the status, the log
lines and ``Collector.counters`` read them back from it (:meth:`Metrics.counters`), nothing counts them twice."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

if TYPE_CHECKING:
    from .spool import Spool

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Counters:
    """Every path a message can take, counted since start (the ``collector`` measurement, CONTRACT §3), as the
    registry holds them at the moment it is read: a snapshot, not a count of its own.

    ``received``: MQTT messages; ``written``: reading points in InfluxDB; ``invalid``: dead letters (of every
    reason); ``spooled``: points put in the spool; ``retries``: failed writes tried again.
    """

    received: int = 0
    written: int = 0
    invalid: int = 0
    spooled: int = 0
    retries: int = 0


def _total(counter: Counter) -> int:
    """A counter's value, summed over its labels (``dead_letters`` has one child per reason)."""
    return int(sum(s.value for family in counter.collect() for s in family.samples if s.name.endswith("_total")))


class Metrics:
    """Ingest rate is ``rate(smartpark_collector_received_total[1m])``; the rest are named for what they count."""

    def __init__(self, instance: str) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.received = Counter("smartpark_collector_received", "MQTT messages received", registry=r)
        self.written = Counter("smartpark_collector_written", "reading points written to InfluxDB", registry=r)
        self.spooled = Counter("smartpark_collector_spooled", "points put in the durable spool", registry=r)
        self.retries = Counter("smartpark_collector_retries", "InfluxDB writes tried again", registry=r)
        self.reconnects = Counter("smartpark_collector_mqtt_reconnects", "MQTT reconnections", registry=r)
        self.sessions_lost = Counter("smartpark_collector_mqtt_session_lost", "reconnections on which the broker "
                                     "had forgotten our persistent session (what it held for us may be lost)",
                                     registry=r)
        self.window_flushes = Counter("smartpark_collector_window_flushes", "batches flushed at once because they "
                                      "held the broker's whole in-flight window (a small window limits ingest: "
                                      "raise max_inflight_messages / mqtt.prefetch)", registry=r)
        self.dead_letters = Counter("smartpark_collector_dead_letters", "dead letters by reason",
                                    labelnames=("reason",), registry=r)
        self.write_seconds = Histogram("smartpark_collector_write_seconds", "InfluxDB write latency", registry=r,
                                       buckets=(.002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5, 10))
        self.batch_size = Histogram("smartpark_collector_batch_readings", "readings per batch", registry=r,
                                    buckets=(1, 10, 100, 500, 1000, 2000, 5000, 10000, 20000))
        self.spool_bytes = Gauge("smartpark_collector_spool_bytes", "bytes waiting in the spool", registry=r)
        self.spool_records = Gauge("smartpark_collector_spool_records", "batches waiting in the spool",
                                   registry=r)
        self.spool_errors = Counter("smartpark_collector_spool_errors", "batches the spool could not take "
                                    "(disk full, read-only): held, not acked, tried again", registry=r)
        self.spool_writable = Gauge("smartpark_collector_spool_writable", "0 while the spool's last write "
                                    "failed, else 1", registry=r)

    def counters(self) -> Counters:
        """The counts of the ``collector`` measurement, read from the registry now."""
        return Counters(received=_total(self.received), written=_total(self.written),
                        invalid=_total(self.dead_letters), spooled=_total(self.spooled),
                        retries=_total(self.retries))

    def bind_spool(self, spool: Spool) -> None:
        """Spool depth is read when scraped, never stored twice."""
        self.spool_bytes.set_function(lambda: spool.pending_bytes)
        self.spool_records.set_function(lambda: len(spool))
        self.spool_writable.set_function(lambda: 0 if spool.error else 1)

    @contextlib.asynccontextmanager
    async def serve(self, port: int) -> AsyncIterator[int]:
        """``/metrics`` on 127.0.0.1:``port`` while the collector runs; port 0 means no endpoint."""
        if not port:
            yield 0
            return
        server, thread = start_http_server(port, addr="127.0.0.1", registry=self.registry)
        log.info("collector: Prometheus metrics on http://127.0.0.1:%d/metrics", server.server_port)
        try:
            yield int(server.server_port)
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)

