"""Prometheus ``/metrics`` of one alarm engine, like the collector's (``--metrics-port``, 127.0.0.1).

Every value is read from the service when scraped (its counters, the outbox's, the journal's size), never
stored twice; the endpoint is served on the engine's own event loop, so a scrape sees a consistent state.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from smartpark.errors import ConfigError

if TYPE_CHECKING:
    from .service import AlertService

log = logging.getLogger(__name__)

P = "smartpark_alerts_"


class _Live(Collector):
    """The service's state as metric families, built at each scrape."""

    def __init__(self, svc: AlertService) -> None:
        self.svc = svc

    def collect(self) -> Iterator[Metric]:
        svc = self.svc
        c = svc.counts
        for name, key, what in (("received", "received", "MQTT messages received"),
                                ("readings_evaluated", "readings", "readings evaluated"),
                                ("invalid", "invalid", "messages or entries refused by the decoder"),
                                ("errors", "errors", "messages skipped after an unexpected evaluation error"),
                                ("events_written", "written", "alarm event points written to InfluxDB")):
            yield CounterMetricFamily(P + name, what, value=c.get(key, 0))
        yield CounterMetricFamily(P + "future_readings", "readings stamped too far ahead, evaluated at arrival",
                                  value=svc.engine.future_readings)
        events = CounterMetricFamily(P + "events", "alarm events by kind", labels=("kind",))
        for kind, n in sorted(svc.event_kinds.items()):
            events.add_metric((kind,), n)
        yield events
        outcomes = CounterMetricFamily(P + "notifications", "final outcomes of notifications since start",
                                       labels=("destination", "outcome"))
        attempts = CounterMetricFamily(P + "notification_attempts", "delivery attempts", labels=("destination",))
        retries = CounterMetricFamily(P + "notification_retries", "failed attempts retried later",
                                      labels=("destination",))
        pending = GaugeMetricFamily(P + "outbox_pending", "notifications waiting in the outbox",
                                    labels=("destination",))
        for sn in svc.pipeline.senders:
            for outcome in ("delivered", "expired", "refused"):
                outcomes.add_metric((sn.dest, outcome), sn.counts.get(outcome, 0))
            attempts.add_metric((sn.dest,), sn.counts.get("attempts", 0))
            retries.add_metric((sn.dest,), sn.counts.get("retries", 0))
            pending.add_metric((sn.dest,), max(0, svc.outbox.pending[sn.dest]))
        yield from (outcomes, attempts, retries, pending)
        yield GaugeMetricFamily(P + "outbox_depth", "notifications waiting in the outbox, all destinations",
                                value=svc.outbox.depth())
        yield GaugeMetricFamily(P + "journal_bytes", "journal written since the last snapshot (replayed after a "
                                "crash)", value=svc.store.journal_bytes())
        yield GaugeMetricFamily(P + "journal_lag_seconds", "age of the last snapshot: how much journal a crash "
                                "would replay", value=svc.store.snapshot_age())
        yield GaugeMetricFamily(P + "influx_backlog", "alarm event points waiting for InfluxDB",
                                value=len(svc._lines) + len(svc._inflight))
        yield GaugeMetricFamily(P + "mqtt_backlog", "alarm states waiting to be published",
                                value=svc._retained.qsize())
        yield GaugeMetricFamily(P + "active_alarms", "alarms not in NORM", value=len(svc.engine.active()))


class Metrics:
    """A registry of its own per service (several engines may run in one process, as tests do)."""

    def __init__(self, svc: AlertService) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_Live(svc))
        self.port = 0

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    @contextlib.asynccontextmanager
    async def serve(self, port: int) -> AsyncIterator[int]:
        """``/metrics`` on 127.0.0.1:``port`` while the engine runs; port 0 means no endpoint."""
        if not port:
            yield 0
            return
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", port)
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(f"cannot serve metrics on 127.0.0.1:{port}: {exc.strerror}", key="metrics_port") \
                from None
        self.port = port
        log.info("alerts: Prometheus metrics on http://127.0.0.1:%d/metrics", port)
        try:
            yield port
        finally:
            await runner.cleanup()
