"""Notifications are never lost (CONTRACT §9): the durable outbox, retries, expiry, kill -9, against a real
Mosquitto, InfluxDB and a real local webhook (aiohttp)."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import sqlite3
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from alerts_helpers import PARK, api_up, reading, wait_for
from services import Broker, InfluxDB
from test_alerts_service import T0, publish, settings

from alerts.events import AlarmEvent
from alerts.notify import Outbox, Sender, WebhookNotifier
from alerts.notify.notifiers import Notification
from alerts.service import AlertService
from devstack import SMARTPARK, free_port
from devstack.parks import one_tank_level

TOPIC = "park/plant/tank/level"
ONE_SENSOR = one_tank_level()


class Hook:
    """A webhook on a fixed port that can be down (not listening), failing (503, maybe Retry-After) or up."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.got: list[tuple[str, dict[str, Any]]] = []  # (Idempotency-Key, body)
        self.status = 200
        self.retry_after: str | None = None
        self.kill_first: subprocess.Popen[bytes] | None = None  # SIGKILL it after taking the first notification
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        if self.kill_first is not None and self.status == 200:
            self.got.append((request.headers.get("Idempotency-Key", ""), json.loads(await request.read())))
            self.kill_first.send_signal(signal.SIGKILL)  # accepted, but the engine never hears of it
            self.kill_first.wait(30)
            self.kill_first = None
            return web.Response(status=200)
        if self.status != 200:
            return web.Response(status=self.status, headers={"Retry-After": self.retry_after}
                                if self.retry_after else {})
        self.got.append((request.headers.get("Idempotency-Key", ""), json.loads(await request.read())))
        return web.Response(status=200)

    async def up(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def down(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def pending(state: Path) -> int:
    path = state / "alerts" / "outbox.sqlite"
    if not path.exists():
        return 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        try:
            return int(db.execute("SELECT count(*) FROM notification WHERE status = 'pending'").fetchone()[0])
        except sqlite3.OperationalError:  # not created yet
            return 0


def flapping(start: int, n: int) -> list[tuple[str, bytes]]:
    """Readings that raise and clear h and hh in turn: 4 events per pair."""
    return [(TOPIC, reading(95 if k % 2 == 0 else 50, T0 + (start + k) * 10_000)) for k in range(n)]


class Engine:
    """``smartpark alerts run --clock event --webhook URL`` as a process, on a one-sensor park."""

    def __init__(self, broker: Broker, influx_db: InfluxDB, tmp_path: Path, hook: Hook) -> None:
        self.api = f"http://127.0.0.1:{free_port()}"
        self.state = tmp_path
        park = tmp_path / "park.yaml"
        park.write_text(ONE_SENSOR, encoding="utf-8")  # no other sensor: no no_data of theirs in event time
        self.env = {**os.environ, "SMARTPARK_MQTT_URL": broker.url, "SMARTPARK_INFLUX_URL": influx_db.url,
                    "SMARTPARK_INFLUX_DB": influx_db.db, "SMARTPARK_STATE_DIR": str(tmp_path),
                    "SMARTPARK_API_URL": self.api, "SMARTPARK_PARK": str(park)}
        self.log = tmp_path / "alerts.log"
        self.hook = hook

    def start(self, *extra: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([*SMARTPARK, "alerts", "run", "--clock", "event",
                                 "--webhook", self.hook.url, *extra], env=self.env, stdout=self.log.open("ab"),
                                stderr=subprocess.STDOUT)

    def up(self) -> bool:
        return api_up(self.api, self.state / "api-token", "/status")

    @staticmethod
    def stop(p: subprocess.Popen[bytes]) -> int:
        p.send_signal(signal.SIGTERM)
        return p.wait(30)


def delivered(influx_db: InfluxDB) -> int:
    rows = influx_db.query("SELECT count(id) FROM notification WHERE status = 'delivered'")
    return int(rows[0]["count"]) if rows else 0


class TestOutboxEndToEnd:
    """The engine as a process: a destination down, then kill -9, then the destination back."""

    def test_down_destination_and_kill_9_lose_no_notification(self, broker: Broker, influx_db: InfluxDB,
                                                              tmp_path: Path) -> None:
        """Events while the webhook is down wait in the outbox; kill -9; more events while the engine is down
        (queued by the broker); restart and the webhook back: every event reaches it with one id per event
        (in the body and the Idempotency-Key), and each outcome is in the notification measurement as
        delivered."""
        hook = Hook()
        eng = Engine(broker, influx_db, tmp_path, hook)

        async def main() -> int:
            a = eng.start()
            try:
                await wait_for(eng.up, 60, 0.1)
                await publish(broker, flapping(0, 10))  # 20 events, the webhook not listening
                await wait_for(lambda: pending(tmp_path) >= 20, 30, 0.1)
            finally:
                a.send_signal(signal.SIGKILL)
                a.wait(30)
            await publish(broker, flapping(10, 10))  # 20 more, queued by the broker for the engine's session
            await hook.up()
            b = eng.start()
            try:
                await wait_for(lambda: len({k for k, _ in hook.got}) >= 40, 60, 0.1)
                await wait_for(lambda: delivered(influx_db) >= 40, 60, 0.2)
            finally:
                rc = eng.stop(b)
                await hook.down()
            return rc

        assert asyncio.run(main()) == 0, eng.log.read_text()[-3000:]
        by_event: dict[tuple[str, str, int], set[str]] = collections.defaultdict(set)
        for key, body in hook.got:
            assert key == body["notification_id"] and body["reason"] == "event" and body["level"] == 0
            by_event[(body["id"], body["event"], body["ts"])].add(key)
        assert len(by_event) == 40  # every event arrived
        assert all(len(ids) == 1 for ids in by_event.values())  # one id per event
        rows = influx_db.query("SELECT * FROM notification")
        assert collections.Counter(r["status"] for r in rows) == {"delivered": 40}
        assert {r["id"] for r in rows} == {k for k, _ in hook.got}
        assert all(r["reason"] == "event" and r["route"].startswith("webhook:") for r in rows)
        assert max(r["attempts"] for r in rows) >= 2  # the first 20 were tried while the webhook was down
        assert pending(tmp_path) == 0

    def test_a_duplicate_after_a_crash_has_the_same_id(self, broker: Broker, influx_db: InfluxDB,
                                                       tmp_path: Path) -> None:
        """The webhook takes a notification and the engine is killed before it hears the answer: after the
        restart it is sent again, with the same notification_id, and recorded delivered once."""
        hook = Hook()
        eng = Engine(broker, influx_db, tmp_path, hook)

        async def main() -> int:
            await hook.up()
            a = eng.start()
            hook.kill_first = a
            await wait_for(eng.up, 60, 0.1)
            await publish(broker, [(TOPIC, reading(85, T0))])  # one event: h raised
            await wait_for(lambda: a.poll() is not None, 30, 0.05)
            b = eng.start()
            try:
                await wait_for(lambda: len(hook.got) >= 2 and delivered(influx_db) >= 1, 60, 0.1)
            finally:
                rc = eng.stop(b)
                await hook.down()
            return rc

        assert asyncio.run(main()) == 0, eng.log.read_text()[-3000:]
        keys = [k for k, _ in hook.got]
        assert len(keys) == 2 and keys[0] == keys[1]
        assert [b["notification_id"] for _, b in hook.got] == keys
        rows = influx_db.query("SELECT * FROM notification")
        assert [(r["id"], r["status"]) for r in rows] == [(keys[0], "delivered")]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


def event(k: int) -> AlarmEvent:
    return AlarmEvent(f"plant/tank/level/hh{k}", "plant", "tank", "level", "hh", "high", "raised", "UNACK", 95.0,
                      90.0, T0 + k, f"alarm {k}")


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    with Outbox(tmp_path / "outbox.sqlite") as ob:
        yield ob


class TestSender:
    """One destination's line on injected time, against a real local HTTP server."""

    def test_an_hour_down_then_back_loses_none(self, outbox: Outbox) -> None:
        """A webhook answering 503 for an hour (injected time): retried at most 30 s apart, Retry-After
        honoured beyond that, everything delivered in order once it is back; one attempt per backoff period
        however many wait (the head of the line is tried, the rest wait behind it)."""
        clock = Clock()

        async def main() -> tuple[list[int], list[str], Sender]:
            hook = Hook()
            hook.status = 503
            await hook.up()
            notifier = WebhookNotifier(hook.url)
            sender = Sender(notifier, outbox, clock, expire_s=86_400)
            gaps: list[int] = []
            try:
                added = 0
                while clock.now < T0 + 3_600_000:
                    while added < 50 and clock.now >= T0 + added * 60_000:  # one more every minute
                        outbox.add([(notifier.name, Notification("event", "plant", "high", "t", "b", event(added),
                                                                 f"n{added:03d}"))], clock.now)
                        added += 1
                    if clock.now > T0 + 1_800_000:
                        hook.retry_after = "120"  # the second half hour: the destination asks for 2 minutes
                    await sender.step()
                    head = outbox.head(notifier.name)
                    assert head is not None
                    gaps.append(head.next_at - clock.now)
                    clock.now = max(head.next_at, clock.now + 1)
                hook.status = 200
                while outbox.depth():
                    await sender.step()
                return gaps, [k for k, _ in hook.got], sender
            finally:
                await notifier.close()
                await hook.down()

        gaps, keys, sender = asyncio.run(main())
        half = len([g for g in gaps if g < 120_000])
        assert all(0 <= g <= 30_000 for g in gaps[:half]) and half >= 50
        assert all(g >= 120_000 for g in gaps[half:]) and len(gaps) > half
        assert keys == [f"n{k:03d}" for k in range(50)]
        assert sender.counts["delivered"] == 50 and sender.counts["expired"] == 0
        assert sender.counts["attempts"] == len(gaps) + 50  # failures were tried only at the head of the line

    def test_expiry_is_an_outcome(self, outbox: Outbox) -> None:
        """Not accepted within the expiry: recorded as expired (for the notification measurement)."""
        clock = Clock()

        async def main() -> None:
            notifier = WebhookNotifier(f"http://127.0.0.1:{free_port()}/never")
            sender = Sender(notifier, outbox, clock, expire_s=600)
            outbox.add([(notifier.name, Notification("event", "plant", "high", "t", "b", event(k), f"x{k}"))
                        for k in range(3)], clock.now)
            await sender.step()  # connection refused: retried later
            clock.now += 601_000
            await sender.step()
            await notifier.close()

        asyncio.run(main())
        assert outbox.depth() == 0
        _, lines = outbox.unreported()
        assert len(lines) == 3 and all('status="expired"' in line for line in lines)
        assert 'attempts=1i' in lines[0] and 'attempts=0i' in lines[1]

    def test_a_refusal_is_not_retried(self, outbox: Outbox) -> None:
        """A 4xx other than 408/425/429 will not succeed later: final at once, the next one goes out."""
        clock = Clock()

        async def main() -> list[str]:
            hook = Hook()
            hook.status = 400
            await hook.up()
            notifier = WebhookNotifier(hook.url)
            sender = Sender(notifier, outbox, clock)
            outbox.add([(notifier.name, Notification("event", "plant", "high", "t", "b", event(k), f"r{k}"))
                        for k in range(2)], clock.now)
            await sender.step()
            hook.status = 200
            await sender.step()
            await notifier.close()
            await hook.down()
            return [k for k, _ in hook.got]

        assert asyncio.run(main()) == ["r1"]
        _, lines = outbox.unreported()
        assert 'status="expired"' in lines[0] and "refused" in lines[0] and 'status="delivered"' in lines[1]


class TestServiceExpiry:
    def test_expired_notifications_reach_the_measurement(self, broker: Broker, influx_db: InfluxDB,
                                                         tmp_path: Path) -> None:
        """With a destination that never answers and a short --notify-expire, each notification ends as
        expired in the notification measurement; nothing stays pending."""
        s = settings(broker, influx_db, tmp_path, free_port())
        svc = AlertService(s, PARK, clock="event", api=False, notify_expire_s=1.0,
                           webhooks=[f"http://127.0.0.1:{free_port()}/down"])

        async def main() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(svc.run(stop))
            await asyncio.wait_for(svc.ready.wait(), 30)
            await asyncio.wait_for(svc.subscribed.wait(), 30)  # QoS 1 keeps what comes before
            await publish(broker, [(TOPIC, reading(95, T0))])
            await wait_for(lambda: len(influx_db.query("SELECT * FROM notification")) >= 2, 30, 0.2)
            stop.set()
            await asyncio.wait_for(task, 30)

        asyncio.run(main())
        rows = influx_db.query("SELECT * FROM notification")
        assert sorted((r["status"], r["alarm"]) for r in rows) == [("expired", "plant/tank/level/h"),
                                                                   ("expired", "plant/tank/level/hh")]
        assert svc.outbox.depth() == 0


def scrape(port: int) -> dict[str, float]:
    """The real /metrics endpoint, parsed by the Prometheus client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()) if k != "destination")
            out[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return out


class TestMetrics:
    def test_metrics_of_a_running_engine(self, broker: Broker, influx_db: InfluxDB, tmp_path: Path) -> None:
        """`alerts run --metrics-port P`: evaluated readings, events by kind, notifications by outcome, outbox
        depth and journal lag, scraped from the process while its webhook is down and after it is back."""
        hook = Hook()
        eng = Engine(broker, influx_db, tmp_path, hook)
        port = free_port()

        async def main() -> tuple[dict[str, float], dict[str, float], int]:
            p = eng.start("--metrics-port", str(port))
            try:
                await wait_for(eng.up, 60, 0.1)
                await publish(broker, flapping(0, 4))  # 8 events: raised and cleared, h and hh
                await wait_for(lambda: scrape(port).get("smartpark_alerts_outbox_depth") == 8, 30, 0.1)
                down = scrape(port)
                await hook.up()
                await wait_for(lambda: scrape(port).get("smartpark_alerts_outbox_depth") == 0, 60, 0.1)
                back = scrape(port)
            finally:
                rc = eng.stop(p)
                await hook.down()
            return down, back, rc

        down, back, rc = asyncio.run(main())
        assert rc == 0, eng.log.read_text()[-3000:]
        assert down["smartpark_alerts_readings_evaluated_total"] == 4
        assert down["smartpark_alerts_events_total{kind=raised}"] == 4
        assert down["smartpark_alerts_events_total{kind=cleared}"] == 4
        assert down["smartpark_alerts_notification_retries_total"] >= 1
        assert down["smartpark_alerts_notifications_total{outcome=delivered}"] == 0
        assert "smartpark_alerts_journal_bytes" in down and "smartpark_alerts_journal_lag_seconds" in down
        assert back["smartpark_alerts_notifications_total{outcome=delivered}"] == 8
        assert back["smartpark_alerts_notifications_total{outcome=expired}"] == 0
        assert back["smartpark_alerts_outbox_pending"] == 0


class TestEscalationAcrossRestart:
    def test_an_escalation_due_during_a_restart_is_sent_when_the_engine_is_back(
            self, broker: Broker, influx_db: InfluxDB, tmp_path: Path) -> None:
        """A route escalating after 1 min: the alarm is raised, the engine stops, the minute passes (event
        time), and the engine back sends the escalation (level 1) to the second destination, once: a further
        restart sends it no more."""
        from alerts import parse_rules
        s = settings(broker, influx_db, tmp_path, free_port())
        oncall, boss = Hook(), Hook()
        rules = parse_rules(f"routes:\n  - webhook: {oncall.url}\n    escalate_after_min: 1\n"
                            f"    escalate_to: {boss.url}\n", PARK, "rules.yaml")

        async def session(msgs: list[tuple[str, bytes]], until: Any) -> None:
            svc = AlertService(s, PARK, rules=rules, clock="event", api=False)
            stop = asyncio.Event()
            task = asyncio.create_task(svc.run(stop))
            await asyncio.wait_for(svc.ready.wait(), 30)
            await asyncio.wait_for(svc.subscribed.wait(), 30)  # QoS 1 keeps what comes before
            await publish(broker, msgs)
            await wait_for(lambda: svc.counts["readings"] >= len(msgs) and until(), 30, 0.05)
            await wait_for(lambda: svc.outbox.depth() == 0, 30, 0.05)
            stop.set()
            await asyncio.wait_for(task, 30)

        async def main() -> None:
            await oncall.up()
            await boss.up()
            try:
                await session([(TOPIC, reading(95, T0))], lambda: len(oncall.got) >= 2)
                assert boss.got == []
                await session([(TOPIC, reading(96, T0 + 120_000))], lambda: len(boss.got) >= 2)
                await session([(TOPIC, reading(97, T0 + 130_000))], lambda: True)
            finally:
                await oncall.down()
                await boss.down()

        asyncio.run(main())
        level = [(k, b) for k, b in boss.got if b["sensor"] == "level"]  # others went silent: their no_data too
        assert sorted((b["rule"], b["reason"], b["level"]) for _, b in level) == [("h", "escalation", 1),
                                                                                 ("hh", "escalation", 1)]
        assert len({k for k, _ in boss.got}) == len(boss.got)  # none sent twice
