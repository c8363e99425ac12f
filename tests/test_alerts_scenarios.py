"""The golden rule: every shipped scenario raises exactly its declared alarms in their windows, no others.

All ten run in-process through the same decode and engine code as the service, and all ten through a real
Mosquitto into the :class:`AlertService` with the event clock (as the demo does), which must give the same
events as in-process.
"""

from __future__ import annotations

import asyncio
import fnmatch
from collections.abc import Iterable

import pytest
from alerts_helpers import wait_for
from services import Broker, InfluxDB

from alerts import Engine, EventClock
from alerts.events import AlarmEvent
from alerts.service import AlertService
from devstack import free_port
from simulators import Scenario, Simulator, list_scenarios, publish
from smartpark.config import Settings
from smartpark.decode import Decoder
from smartpark.park import load_park

PARK = load_park()
SCENARIOS = {sc.id: sc for sc in list_scenarios()}
# every scenario runs in process; through a real broker two by default and all ten under CI
BROKER_DEFAULT = ("sc01", "sc05")


def golden_violations(sc: Scenario, events: Iterable[AlarmEvent]) -> list[str]:
    """What breaks the golden rule, in words (empty: the scenario passes)."""
    t0 = sc.t0_ms(PARK)
    problems: list[str] = []
    raised: dict[str, list[float]] = {}
    cleared: dict[str, list[float]] = {}
    for ev in events:
        t = (ev.ts - t0) / 1000
        if ev.event == "raised":
            raised.setdefault(ev.id, []).append(t)
        elif ev.event == "cleared":
            cleared.setdefault(ev.id, []).append(t)
    claimed: set[str] = set()
    for ex in sc.expect:
        pattern = f"{ex.sensor}/{ex.rule}"
        ids = [i for i in raised if fnmatch.fnmatchcase(i, pattern)]
        if not ids:
            problems.append(f"expected {pattern} raised in {ex.raise_s}: not raised")
        for i in ids:
            claimed.add(i)
            ts = raised[i]
            if len(ts) != 1 or not ex.raise_s[0] <= ts[0] <= ex.raise_s[1]:
                problems.append(f"{i} raised at {ts}, expected once in {ex.raise_s}")
            if ex.clear_s is not None:
                cs = cleared.get(i, [])
                if len(cs) != 1 or not ex.clear_s[0] <= cs[0] <= ex.clear_s[1]:
                    problems.append(f"{i} cleared at {cs}, expected once in {ex.clear_s}")
    for i, ts in raised.items():
        if i not in claimed:
            problems.append(f"unexpected alarm {i} raised at {ts}")
    return problems


def run_in_process(sc: Scenario) -> list[AlarmEvent]:
    """The scenario's messages through Decoder and Engine, time from the readings (event clock)."""
    clock = EventClock()
    engine = Engine(PARK, None, clock, sites=[sc.site])
    decoder = Decoder(PARK)
    out: list[AlarmEvent] = []
    last_tick = 0
    for m in Simulator(PARK, sc, seed=0, sites=[sc.site]).messages():
        for r in decoder.decode(m.topic, m.payload, m.ts_ms).readings:
            out += engine.process(r)
        now = clock.now_ms()
        if now - last_tick >= 1000:
            last_tick = now
            out += engine.tick(now)
    return out


class TestGolden:
    """Scenarios are the fixtures of the alarm tests."""

    def test_ten_scenarios_shipped(self) -> None:
        """The catalog's ten incidents are shipped and declare their alarms."""
        assert len(SCENARIOS) == 10 and all(sc.expect for sc in SCENARIOS.values())

    @pytest.mark.parametrize("name", sorted(SCENARIOS))
    def test_scenario_in_process(self, name: str) -> None:
        """Exactly the declared alarms, each once in its window (and cleared in its window when declared)."""
        sc = SCENARIOS[name]
        assert golden_violations(sc, run_in_process(sc)) == []

    @pytest.mark.parametrize("name", [pytest.param(n, marks=() if n.startswith(BROKER_DEFAULT) else pytest.mark.ci)
                                      for n in sorted(SCENARIOS)])
    def test_scenario_through_broker(self, name: str, broker: Broker, influx_db: InfluxDB, tmp_path: object) -> None:
        """Published as fast as possible through a real broker into the service (event clock): the same
        golden outcome, and the same events as in-process."""
        sc = SCENARIOS[name]
        s = Settings(mqtt_url=broker.url, influx_url=influx_db.url, influx_db=influx_db.db, state_dir=str(tmp_path),
                     api_url=f"http://127.0.0.1:{free_port()}")
        msgs = list(Simulator(PARK, sc, seed=0, sites=[sc.site]).messages())

        async def main() -> list[AlarmEvent]:
            svc = AlertService(s, PARK, clock="event", api=False, sites=[sc.site])
            got: list[AlarmEvent] = []
            emit = svc.emit

            def spy(events: list[AlarmEvent]) -> None:
                got.extend(events)
                emit(events)
            svc.emit = spy  # type: ignore[method-assign]  # the spy sees what is emitted
            stop = asyncio.Event()
            task = asyncio.create_task(svc.run(stop))
            await asyncio.wait_for(svc.ready.wait(), 30)
            await asyncio.wait_for(svc.subscribed.wait(), 30)  # QoS 1 keeps what comes before
            assert await publish(msgs, broker.url, speed=0) == len(msgs)
            await wait_for(lambda: svc.counts["received"] >= len(msgs), 120)
            stop.set()
            await asyncio.wait_for(task, 30)
            return got

        got = asyncio.run(main())
        assert golden_violations(sc, got) == []
        ref = run_in_process(sc)
        assert [(e.id, e.event, e.ts) for e in got if e.event in ("raised", "cleared")] == \
               [(e.id, e.event, e.ts) for e in ref if e.event in ("raised", "cleared")]
        assert influx_db.count("alarm") == len(got)
