"""The alarm service against a real Mosquitto and InfluxDB: bad quality, early readings, a message the engine
cannot evaluate."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from alerts_helpers import PARK, reading, wait_for
from services import Broker, InfluxDB
from test_alerts_service import T0, publish, settings

from alerts.service import AlertService
from devstack import free_port
from smartpark.decode import Reading

TOPIC = "park/plant/tank/level"


async def running(svc: AlertService, body: Callable[[], Awaitable[Any]]) -> Any:
    """Run the service around ``body``; the service must still be running when ``body`` ends."""
    stop = asyncio.Event()
    task = asyncio.create_task(svc.run(stop))
    try:
        await asyncio.wait_for(svc.ready.wait(), 30)
        await asyncio.wait_for(svc.subscribed.wait(), 30)  # QoS 1 keeps what comes before
        result = await body()
        assert not task.done(), task.exception() if task.done() else None
        return result
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def raised(db: InfluxDB) -> list[tuple[str, int]]:
    rows = db.query("SELECT * FROM alarm WHERE event = 'raised' AND sensor = 'level'")
    return sorted((r["rule"], r["time"]) for r in rows)


class TestServiceReliability:
    """What reaches the engine through MQTT, end to end into the alarm measurement."""

    def test_bad_quality_raises_its_health_alarm_and_hides_no_limit(self, broker: Broker, influx_db: InfluxDB,
                                                                    tmp_path: object) -> None:
        """Readings of quality bad at 95 % (HH 90) for a minute: only bad_quality (after 3 x 10 s), no
        no_data, no limit alarm; a good reading clears it."""
        svc = AlertService(settings(broker, influx_db, tmp_path, free_port()), PARK, clock="event", api=False)
        bad = [(TOPIC, json.dumps({"value": 95, "ts": T0 + t * 1000, "quality": "bad"}).encode())
               for t in range(0, 60, 10)]

        async def body() -> None:
            await publish(broker, [*bad, (TOPIC, reading(50, T0 + 60_000))])
            await wait_for(lambda: influx_db.count("alarm") >= 2)

        asyncio.run(running(svc, body))
        rows = influx_db.query("SELECT * FROM alarm WHERE sensor = 'level'")
        assert [(r["rule"], r["event"], r["priority"], r["time"]) for r in rows] == [
            ("bad_quality", "raised", "low", T0 + 40_000), ("bad_quality", "cleared", "low", T0 + 60_000)]

    @pytest.mark.parametrize("clock", ["wall", "event"])
    def test_a_reading_290_s_ahead_does_not_blind_the_engine(self, broker: Broker, influx_db: InfluxDB,
                                                            tmp_path: object, clock: str) -> None:
        """One pH-like reading stamped 290 s ahead (inside the tolerance), then five real readings above HH:
        HH and H are raised on the first of them, with either clock."""
        svc = AlertService(settings(broker, influx_db, tmp_path, free_port()), PARK, clock=clock, api=False)
        base = int(time.time() * 1000) - 60_000 if clock == "wall" else T0
        msgs = [(TOPIC, reading(50, base)), (TOPIC, reading(50, base + 290_000))]
        msgs += [(TOPIC, reading(95, base + 10_000 * k)) for k in range(1, 6)]

        async def body() -> None:
            await publish(broker, msgs)
            await wait_for(lambda: svc.counts["readings"] >= len(msgs))
            await wait_for(lambda: influx_db.count("alarm") >= 2)

        asyncio.run(running(svc, body))
        got = raised(influx_db)
        assert [rule for rule, _ in got] == ["h", "hh"]
        if clock == "event":  # judged at the sensor's newest time: the early reading's
            assert {ts for _, ts in got} == {base + 290_000}
        else:  # the early reading was taken at its arrival (now); the later, older ones at that time too
            (ts, *_), = {ts for _, ts in got},
            assert base + 60_000 <= ts < base + 290_000

    def test_a_message_the_engine_cannot_evaluate_is_skipped(self, broker: Broker, influx_db: InfluxDB,
                                                             tmp_path: object) -> None:
        """An unexpected error while evaluating one message (a fault injected into the engine for the value
        13) is logged and counted; that message is acknowledged and skipped, the next reading raises its alarm,
        and a restart does not meet the message again."""
        s = settings(broker, influx_db, tmp_path, free_port())

        def faulty(svc: AlertService) -> list[float]:
            seen: list[float] = []
            real = svc.engine.process

            def process(r: Reading) -> list[Any]:
                seen.append(r.value)
                if r.value == 13:
                    raise RuntimeError("an engine fault")
                return real(r)
            svc.engine.process = process  # type: ignore[method-assign]  # the fault is injected here
            return seen

        svc = AlertService(s, PARK, clock="event", api=False)
        faulty(svc)

        async def body() -> None:
            await publish(broker, [(TOPIC, reading(13, T0)), (TOPIC, reading(95, T0 + 10_000))])
            await wait_for(lambda: influx_db.count("alarm") >= 2)

        asyncio.run(running(svc, body))
        assert svc.counts["errors"] == 1
        assert raised(influx_db) == [("h", T0 + 10_000), ("hh", T0 + 10_000)]
        again = AlertService(s, PARK, clock="event", api=False)
        seen = faulty(again)

        async def idle() -> None:
            await asyncio.sleep(1.0)  # a redelivery would arrive at once

        asyncio.run(running(again, idle))
        assert 13 not in seen and again.counts["errors"] == 0


class TestJournalReplay:
    def test_a_journal_record_the_engine_cannot_replay_is_skipped(self, tmp_path: Path) -> None:
        """After a kill -9, the journal holds the reading that hit an engine fault: the start logs and skips
        it and replays the rest, instead of failing at every start."""
        from alerts import Engine, EventClock
        from alerts.store import StateStore, restore

        store = StateStore(tmp_path)
        level = PARK.get("plant/tank/level")
        store.readings([Reading(level, 13.0, T0), Reading(level, 95.0, T0 + 10_000)])
        store.flush()
        store.close()
        engine = Engine(PARK, None, EventClock())
        real = engine.process

        def process(r: Reading) -> list[Any]:
            if r.value == 13:
                raise RuntimeError("an engine fault")
            return real(r)
        engine.process = process  # type: ignore[method-assign]  # the fault is injected here
        snap, records = StateStore(tmp_path).load()
        restore(engine, PARK, snap, records)
        assert engine.get("plant/tank/level/hh").active
