"""The alarm service: the engine on its own MQTT subscription, with its outputs.

One screen of wiring (:meth:`AlertService.run`): MQTT ``park/#`` (QoS 1, persistent session) -> decode
(:class:`smartpark.decode.Decoder`, the collector's own) -> :class:`Engine` -> journal (fsync) -> retained
``park/alarms/...`` topics, the ``alarm`` measurement, the notification :class:`Dispatcher`. Every output
has its own bounded queue and task, so a slow broker, InfluxDB or notifier never delays evaluation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import sqlite3
import ssl
import time
from collections import Counter, deque
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from smartpark.config import Settings
from smartpark.decode import Decoder, Reading
from smartpark.errors import ConfigError, UsageError, WriteError
from smartpark.influx import InfluxClient
from smartpark.lineproto import quote_literal
from smartpark.mqtt import MqttError, MqttSource, Publisher, reason
from smartpark.park import Park, SensorRef
from smartpark.schema import GOOD, OUT_OF_RANGE, READING
from smartpark.timing import Backoff
from smartpark.topics import SUBSCRIPTION, alarm_topic, status_topic

from .api import GuardedSite, make_app, runner_args
from .clock import EventClock, WallClock
from .console import EventHub, ServiceBackend
from .console.auth import Sessions
from .engine import Engine
from .events import NORM, AlarmEvent
from .metrics import Metrics
from .notify import Outbox, build_pipeline
from .rules import RuleSet
from .store import StateStore, restore
from .users import UserStore

log = logging.getLogger(__name__)
SERVICE = "alerts"


def api_token(settings: Settings, create: bool = False) -> str | None:
    """The operator API token: given, or read from (and, for the engine, generated into) the state dir."""
    if settings.api_token:
        return settings.api_token
    path = settings.state_path / "api-token"
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    if not create:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def _history_reading(ref: SensorRef, row: dict[str, Any]) -> Reading:
    """A reading of InfluxDB history as the decoder made it: its quality and HJ 212 flag decide whether the
    averages count it (an absent flag may come back empty)."""
    return Reading(ref, float(row["value"]), int(row["time"]), row.get("quality") or GOOD, row.get("flag") or None)


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class AlertService:
    """``await AlertService(settings, park, ...).run(stop)`` until ``stop`` is set."""

    def __init__(self, settings: Settings, park: Park, *, rules: RuleSet | None = None,
                 webhooks: Iterable[str] = (), notify: Iterable[str] = (), clock: str = "wall",
                 instance: str = "main", api: bool = True, snapshot_s: float = 1.0, tick_s: float = 0.5,
                 sites: Iterable[str] | None = None, notify_expire_s: float = 86_400.0,
                 public_url: str | None = None, metrics_port: int = 0) -> None:
        self.settings = settings
        self.park = park
        self.rules = rules or RuleSet()
        self.clock = EventClock() if clock == "event" else WallClock()
        self.event_clock = clock == "event"
        self.engine = Engine(park, self.rules, self.clock, sites=sites)
        self.decoder = Decoder(park)
        # notifications live in real time whatever the engine's clock: expiry and backoff are about delivery
        self.outbox = Outbox(settings.state_path / "alerts" / "outbox.sqlite")
        self.notify_expire_s = notify_expire_s
        self.pipeline = build_pipeline(self.outbox, webhooks, notify, self.rules.routes, tz=park.park.timezone,
                                       public_url=public_url or settings.public_url, now_ms=wall_ms,
                                       expire_s=notify_expire_s)
        self.dispatcher = self.pipeline.dispatcher
        self.dispatcher.autocommit = False  # committed per batch of messages, before their ack (see _mqtt_in)
        self.instance = instance
        self.api = api
        self.snapshot_s, self.tick_s = snapshot_s, tick_s
        self.store = StateStore(settings.state_path / "alerts")
        self.mqtt = settings.mqtt()
        self.token = api_token(settings, create=api)
        self.users = UserStore(settings.state_path / "users.yaml")  # the console's users, checked at start
        self.hub = EventHub()  # live events for the open consoles
        self._retained: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(100_000)
        self._lines: deque[str] = deque(maxlen=1_000_000)
        self._inflight: list[str] = []
        self._last_tick = 0
        self.counts = {"received": 0, "readings": 0, "invalid": 0, "events": 0, "written": 0, "errors": 0}
        self.event_kinds: Counter[str] = Counter()
        self.metrics = Metrics(self)
        self.metrics_port = metrics_port
        self.ready = asyncio.Event()
        self.subscribed = asyncio.Event()  # set once the readings' MQTT subscription is acknowledged

    # ------------------------------------------------------------------ one place for every event
    def emit(self, events: list[AlarmEvent]) -> None:
        """Journal first (durable), then every output's queue; never blocks."""
        if not events:
            return
        self.store.events(self.engine, events)
        self.counts["events"] += len(events)
        self.event_kinds.update(ev.event for ev in events)
        for ev in events:
            if len(self._lines) == self._lines.maxlen:  # InfluxDB has been away for a million events
                self.counts["influx_dropped"] = self.counts.get("influx_dropped", 0) + 1
                log.error("alarm events waiting for InfluxDB exceed %d: the oldest is dropped from the backlog "
                          "(it was published on MQTT and notified)", self._lines.maxlen)
            self._lines.append(ev.to_line())
            self._publish_state(ev)
        self.dispatcher.dispatch(events)
        self.hub.publish(events)

    def _publish_state(self, ev: AlarmEvent) -> None:
        topic = alarm_topic(ev.site, ev.asset, ev.sensor, ev.rule)
        payload = b"" if ev.state == NORM else ev.to_json().encode()
        try:
            self._retained.put_nowait((topic, payload))
        except asyncio.QueueFull:
            log.error("MQTT alarm-state queue full: %s not republished now (it is in the journal)", topic)

    async def act(self, action: str, body: dict[str, Any]) -> AlarmEvent:
        """An operator action from the API (or a test)."""
        aid, op = body["id"], str(body.get("operator") or "operator")
        comment = None if body.get("comment") is None else str(body["comment"])
        e = self.engine
        if action == "ack":
            ev = e.ack(aid, op, comment)
        elif action == "shelve":
            try:
                duration = float(body.get("duration_s") or 0)
            except (TypeError, ValueError):
                raise UsageError("duration_s is a number of seconds") from None
            ev = e.shelve(aid, op, comment, duration, max_s=body.get("max_shelve_s"))
        elif action == "unshelve":
            ev = e.unshelve(aid, op, comment)
        elif action == "out-of-service":
            ev = e.out_of_service(aid, op, comment)
        else:
            ev = e.in_service(aid, op, comment)
        self.emit([ev])
        self.dispatcher.commit()
        return ev

    # ------------------------------------------------------------------ the pipeline
    def handle(self, topic: str, payload: bytes, received_ms: int | None = None) -> None:
        """One MQTT message: decode, evaluate, emit; with the event clock, let time pass too.
        The caller flushes the journal (``store.flush``) before acknowledging the message."""
        self.counts["received"] += 1
        dec = self.decoder.decode(topic, payload, received_ms)
        self.counts["invalid"] += len(dec.rejected) - sum(1 for r in dec.rejected if r.reason == OUT_OF_RANGE)
        events: list[AlarmEvent] = []
        if dec.readings:
            self.store.readings(dec.readings)
        for r in dec.readings:
            self.counts["readings"] += 1
            events += self.engine.process(r)
        if self.event_clock:
            now = self.clock.now_ms()
            if now - self._last_tick >= 1000:
                self._last_tick = now
                self.store.tick(now)
                events += self.engine.tick(now)
                self.dispatcher.tick(now)
        self.emit(events)

    def guarded(self, topic: str, payload: bytes, received_ms: int | None = None) -> None:
        """:meth:`handle`, but an unexpected error in one message is logged, counted and that message skipped:
        it is acknowledged with the rest, so it cannot come back and stop the engine again and again. A
        storage error (the journal, the outbox) is not the message's fault: it stops the service, nothing
        acknowledged."""
        try:
            self.handle(topic, payload, received_ms)
        except (OSError, sqlite3.Error):  # the journal or the outbox: storage, not the message
            raise
        except Exception:
            self.counts["errors"] += 1
            log.exception("alerts: skipped a message on %s that the engine could not evaluate (payload %r)",
                          topic[:200], payload[:200])

    async def run(self, stop: asyncio.Event) -> None:
        with self.outbox:
            async with self.metrics.serve(self.metrics_port):
                await self._run(stop)

    async def _run(self, stop: asyncio.Event) -> None:
        snap, records = self.store.load()
        journaled = restore(self.engine, self.park, snap, records)
        outbox = (snap or {}).get("outbox", []) + [ev.to_line() for ev in journaled]
        self._lines.extend(outbox)  # re-written after a crash: same ns timestamps, so the same points
        async with InfluxClient(self.settings.influx()) as db:
            try:
                await db.ensure_database()
                await self._rebuild(db, snap, journaled)
            except (WriteError, ValueError) as exc:
                log.warning("InfluxDB not available at start (%s): windows from the snapshot only", exc)
            for ev in journaled:  # published after the crash or not: publishing the same retained state is harmless
                self._publish_state(ev)
            self.dispatcher.resume(self.engine.unacked_events())
            # events of the last second before a crash may not have reached the notifiers: send them again
            # (at least once: a webhook may see one twice, nobody misses one)
            self.dispatcher.dispatch(journaled)
            self.dispatcher.commit()
            runner = await self._start_api(db) if self.api else None
            try:
                async with asyncio.TaskGroup() as tg:
                    out = tg.create_task(self._mqtt_out(stop), name="mqtt-out")
                    tasks = [tg.create_task(self._mqtt_in(stop), name="mqtt-in"),
                             tg.create_task(self._influx_loop(db), name="influx"),
                             tg.create_task(self._ticker(), name="ticker"),
                             tg.create_task(self._snapshotter(), name="snapshot")]
                    tasks += [tg.create_task(sn.run(), name=f"notify:{sn.dest}") for sn in self.pipeline.senders]
                    self.ready.set()
                    await stop.wait()
                    # the subscription ends by itself on stop (its session says offline and disconnects);
                    # then the senders get a moment to deliver what is pending (the rest waits in the outbox)
                    await asyncio.wait([tasks[0]], timeout=5)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(3):
                            while self.outbox.depth() and any(not sn.failures for sn in self.pipeline.senders):  # noqa: ASYNC110  # the outbox has no event to await
                                await asyncio.sleep(0.05)
                    for t in tasks:
                        t.cancel()
                    _, late = await asyncio.wait([*tasks, out], timeout=10)
                    for t in late:  # a task that ignores cancellation: name it rather than hang silently
                        log.error("task %s did not stop within 10 s: %s", t.get_name(), t.get_stack(limit=5))
            finally:
                if runner is not None:
                    await runner.cleanup()
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(5):
                        await self._flush(db)
                self._snapshot()
                self.store.close()

    async def _rebuild(self, db: InfluxClient, snap: dict[str, Any] | None, journaled: list[AlarmEvent]) -> None:
        """Fill the windows from InfluxDB history the collector wrote after our last snapshot.

        Events the replay reproduces that are already in the journal are not emitted again; the others
        really happened while we were down and are emitted now."""
        last = self.engine.sensor_last_ts()
        if not last:
            await self._warm(db)
            return
        since = min(last.values())
        floor = max(last.values()) - 24 * 3_600_000
        since = max(since, floor)
        rows = await db.rows(f"SELECT value, quality, flag FROM {READING} WHERE time > {since}ms "
                             "GROUP BY site, asset, sensor")
        readings = []
        for row in rows:
            ref = self.park.lookup(row.get("site", ""), row.get("asset", ""), row.get("sensor", ""))
            if ref is None or row.get("value") is None:
                continue
            readings.append(_history_reading(ref, row))
        readings.sort(key=lambda r: r.ts_ms)
        seen = {(e.id, e.event, e.ts) for e in journaled}
        events: list[AlarmEvent] = []
        for r in readings:
            try:
                events += [e for e in self.engine.process(r) if (e.id, e.event, e.ts) not in seen]
            except Exception:  # as for a live message: one reading never stops the engine's start
                self.counts["errors"] += 1
                log.exception("alerts: skipped a reading of InfluxDB history the engine could not evaluate: %r", r)
        if readings:
            log.info("rebuilt windows from %d readings of InfluxDB history", len(readings))
        self.emit(events)
        self.dispatcher.commit()

    async def _warm(self, db: InfluxClient) -> None:
        """First start (no snapshot): rebuild the averaging windows from the readings InfluxDB holds, up to
        the newest one (the wall clock's now, or the newest reading with the event clock)."""
        need = self.engine.needs_history()
        if not need:
            return
        if self.event_clock:
            newest = await db.rows(f"SELECT last(value) FROM {READING}")
            if not newest:
                return
            now = int(newest[0]["time"])
        else:
            now = self.clock.now_ms()
        readings: list[Reading] = []
        for key, back in need.items():
            site, asset, sensor = key.split("/")
            q = (f"SELECT value, quality, flag FROM {READING} WHERE site = {quote_literal(site)} AND asset = "
                 f"{quote_literal(asset)} AND sensor = {quote_literal(sensor)} AND time > {now - back}ms "
                 f"AND time <= {now}ms")
            ref = self.park.get(key)
            readings += [_history_reading(ref, row) for row in await db.rows(q) if row.get("value") is not None]
        readings.sort(key=lambda r: r.ts_ms)
        for r in readings:
            self.engine.warm(r)
        if readings:
            log.info("averaging windows rebuilt from %d readings of InfluxDB history", len(readings))

    async def _start_api(self, db: InfluxClient) -> web.AppRunner:
        parts = urlsplit(self.settings.api_url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 8765
        assert self.token is not None
        # Secure cookies behind TLS: served over https, or reached through an https public URL (a TLS proxy)
        public = str(getattr(self.settings, "public_url", None) or "")
        app = make_app(ServiceBackend(self, db), secure_cookies=parts.scheme == "https" or public.startswith("https:"),
                       sessions=Sessions(path=self.settings.state_path / "alerts" / "sessions.sqlite"))
        runner = web.AppRunner(app, **runner_args())
        await runner.setup()
        try:
            await GuardedSite(runner, host, port, ssl_context=self._api_tls(parts.scheme)).start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}", key="api_url") from None
        return runner

    def _api_tls(self, scheme: str) -> ssl.SSLContext | None:
        """HTTPS for the operator API and console when ``--api-url`` is https:// (``--tls-cert``/``--tls-key``)."""
        if scheme != "https":
            return None
        cert, key = self.settings.tls_cert, self.settings.tls_key
        if not cert or not key:
            raise ConfigError("--api-url is https:// but --tls-cert / --tls-key (SMARTPARK_TLS_CERT, "
                              "SMARTPARK_TLS_KEY) are not both set", key="tls_cert")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load the TLS certificate {cert} / key {key}: {exc}", key="tls_cert") from None
        return ctx

    async def _mqtt_in(self, stop: asyncio.Event) -> None:
        """Readings in, through the collector's lean subscriber (QoS 1, persistent session, batched acks):
        a batch is acknowledged only once its readings are journaled, so kill -9 loses nothing."""
        client_id = f"smartpark-alerts-{self.instance}"
        status = status_topic(SERVICE, self.instance)
        def session_lost() -> None:  # the broker forgot our session (it warns): readings may be missing
            self.counts["mqtt_session_lost"] = self.counts.get("mqtt_session_lost", 0) + 1

        async with MqttSource(self.mqtt, client_id, SUBSCRIPTION, status_topic=status,
                              on_session_lost=session_lost) as src:
            run = asyncio.create_task(src.run(stop), name="mqtt-session")
            try:
                while not run.done():
                    batch = await src.take(2000, 0.2)
                    if src.connected.is_set() and not self.subscribed.is_set():  # connected: SUBACK received
                        self.subscribed.set()
                    if not batch:
                        continue
                    for m in batch:
                        self.guarded(m.topic, m.payload, m.received_ms)
                    self.store.flush()
                    self.dispatcher.commit()
                    src.ack(batch)
                    await asyncio.sleep(0)  # let the outputs and the API run between batches
                await run
            finally:
                run.cancel()

    async def _mqtt_out(self, stop: asyncio.Event) -> None:
        """Retained alarm states out (QoS 1) on a connection of their own, reconnecting with backoff.

        It ends by itself once ``stop`` is set and the queue is drained (what was decided is published),
        rather than by cancellation in the middle of a publish. MQTT 3.1.1 unless MQTT 5 is asked for
        (:class:`Publisher`): every broker speaks it, and retained QoS 1 publishes need nothing of 5."""
        m = self.mqtt
        backoff = Backoff(0.5, 30.0)
        while not (stop.is_set() and self._retained.empty()):
            try:
                async with Publisher(m, f"smartpark-alerts-{self.instance}-out") as client:
                    backoff.reset()
                    while not (stop.is_set() and self._retained.empty()):
                        try:
                            async with asyncio.timeout(0.2):
                                topic, payload = await self._retained.get()
                        except TimeoutError:
                            continue
                        try:
                            async with asyncio.timeout(5):
                                await client.publish(topic, payload, qos=1, retain=True)
                        except (MqttError, OSError, TimeoutError) as exc:
                            self._retained.put_nowait((topic, payload))
                            raise MqttError(f"publish of an alarm state failed ({reason(exc)})") from None
            except (MqttError, OSError, TimeoutError) as exc:
                if stop.is_set():
                    log.error("MQTT (alarm states): %s at shutdown; %d states not republished (they are in the "
                              "journal)", reason(exc), self._retained.qsize())
                    return
                log.warning("MQTT (alarm states): %s; reconnecting in %.1f s", reason(exc), backoff.bound())
                await asyncio.sleep(backoff.next())

    async def _influx_loop(self, db: InfluxClient) -> None:
        backoff = Backoff(0.5, 30.0)
        pruned = 0.0
        while True:
            if time.monotonic() - pruned > 60:  # outcomes reported a day ago no longer dedupe anything
                pruned = time.monotonic()
                self.outbox.prune(wall_ms() - int(self.notify_expire_s * 1000) - 3_600_000)
            if not self._lines and not self.outbox.unreported(1)[0]:
                await asyncio.sleep(0.05)
                continue
            try:
                await self._flush(db)
                backoff.reset()
            except WriteError as exc:
                if not exc.retryable:
                    log.error("InfluxDB refused alarm events, dropping %d: %s", len(self._inflight), exc)
                    self._inflight = []
                    continue
                wait = backoff.next()  # counted either way: the bound doubles also while Retry-After rules
                await asyncio.sleep(exc.retry_after or wait)

    async def _flush(self, db: InfluxClient) -> None:
        while self._lines or self._inflight:
            if not self._inflight:
                self._inflight = [self._lines.popleft() for _ in range(min(5000, len(self._lines)))]
            await db.write(self._inflight, precision="ns")
            self.counts["written"] += len(self._inflight)
            self._inflight = []
        while True:  # final outcomes of notifications: marked reported only once InfluxDB has them
            seqs, lines = self.outbox.unreported()
            if not seqs:
                return
            try:
                await db.write(lines, precision="ns")
            except WriteError as exc:
                if exc.retryable:
                    raise
                log.error("InfluxDB refused %d notification outcomes, not written: %s", len(lines), exc)
            self.outbox.reported(seqs)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            now = self.clock.now_ms()
            if now <= 0:
                continue
            self.store.tick(now)
            self.emit(self.engine.tick(now))  # with the event clock: shelving expiry etc. at the newest reading
            if not self.event_clock:
                self.dispatcher.tick(now)
            self.store.flush()
            self.dispatcher.commit()

    def _snapshot(self) -> None:
        state = {"engine": self.engine.dump(), "outbox": self._inflight + list(self._lines)}
        self.outbox.sync()  # the journal's events made these notifications: durable before it is emptied
        self.store.snapshot(state)

    async def _snapshotter(self) -> None:  # every second: the journal to replay after a crash stays short
        seen = None
        while True:
            await asyncio.sleep(self.snapshot_s)
            mark = (self.counts["received"], self.counts["events"], self.clock.now_ms() // 60_000)
            if mark != seen:  # nothing happened: the last snapshot is still the state
                self._snapshot()
                seen = mark

    def status(self) -> dict[str, Any]:
        """Counters of every path (received, readings, invalid, events, written) and of every notifier."""
        return {"instance": self.instance, "clock": "event" if self.event_clock else "wall",
                "now": self.clock.now_ms(), "counts": dict(self.counts), "notifiers": self.pipeline.counts(),
                "outbox": self.outbox.depth(),
                "flooding": dict(self.dispatcher.flooding), "influx_backlog": len(self._lines) + len(self._inflight),
                "mqtt_backlog": self._retained.qsize(),
                "future_readings": self.engine.future_readings}


__all__ = ["AlertService", "api_token"]
