"""kill -9 the alarm engine mid-scenario: after the restart no alarm is lost and none is raised twice."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from alerts_helpers import Endpoints, api_up, wait_for
from services import Broker, InfluxDB

from alerts import Engine, EventClock
from devstack import SMARTPARK, free_port
from simulators import Simulator, load_scenario, publish
from smartpark.decode import Decoder
from smartpark.park import load_park

PARK = load_park()


def reference(msgs: list[Any]) -> list[tuple[str, int]]:
    """Raised alarms (id, ts) of an uninterrupted in-process run over the same messages (all sites)."""
    clock = EventClock()
    e = Engine(PARK, None, clock)
    d = Decoder(PARK)
    raised: list[tuple[str, int]] = []
    last = 0
    for m in msgs:
        evs = []
        for r in d.decode(m.topic, m.payload, m.ts_ms).readings:
            evs += e.process(r)
        if clock.now_ms() - last >= 1000:
            last = clock.now_ms()
            evs += e.tick(last)
        raised += [(ev.id, ev.ts) for ev in evs if ev.event == "raised"]
    return raised


def start(env: dict[str, str], log: Path, webhook: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*SMARTPARK, "alerts", "run", "--clock", "event",
                             "--webhook", webhook], env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)


class TestRestart:
    """Durable state: journal + snapshot + persistent MQTT session."""

    def test_kill_9_mid_scenario(self, broker: Broker, influx_db: InfluxDB, tmp_path: Path) -> None:
        """Killed with SIGKILL after part of sc01, restarted while the rest is queued by the broker: every
        alarm of the uninterrupted run is in the alarm measurement exactly once and reached the webhook
        (at least once); SIGTERM then exits 0."""
        sc = load_scenario("sc01_scc_temp_drop_on_feed", PARK)
        msgs = list(Simulator(PARK, sc, seed=0, sites=[sc.site]).messages())
        ref = reference(msgs)
        expected = collections.Counter(i for i, _ in ref)
        incident = sorted(ts for i, ts in ref if i.startswith(sc.site) and not i.endswith("/no_data"))
        assert len(incident) >= 6
        split_ts = incident[len(incident) // 2 - 1]  # half of the incident's alarms before the kill, half after
        cut = next(k for k, m in enumerate(msgs) if m.ts_ms > split_ts)
        api = f"http://127.0.0.1:{free_port()}"
        env = {**os.environ, "SMARTPARK_MQTT_URL": broker.url, "SMARTPARK_INFLUX_URL": influx_db.url,
               "SMARTPARK_INFLUX_DB": influx_db.db, "SMARTPARK_STATE_DIR": str(tmp_path), "SMARTPARK_API_URL": api}
        log = tmp_path / "alerts.log"
        env["PYTHONFAULTHANDLER"] = "1"
        token = tmp_path / "api-token"

        async def main() -> int:
            async with Endpoints("ok") as (hook,):
                a = start(env, log, hook.url)
                try:
                    await wait_for(lambda: api_up(api, token, "/alarms"), 60, 0.1)
                    await publish(msgs[:cut], broker.url, speed=0)
                    before = {(i, ts) for i, ts in ref if ts <= split_ts}
                    await wait_for(lambda: before <= {(b["id"], b["ts"]) for b in hook.bodies
                                                      if b["event"] == "raised"}, 60)
                finally:
                    a.send_signal(signal.SIGKILL)
                    a.wait(30)
                await publish(msgs[cut:], broker.url, speed=0)  # queued by the broker for the engine's session
                b = start(env, log, hook.url)
                try:
                    await wait_for(lambda: api_up(api, token, "/alarms"), 60, 0.1)
                    def done() -> bool:
                        rows = influx_db.query("SELECT count(state) FROM alarm WHERE event = 'raised'")
                        return bool(rows) and rows[0]["count"] >= sum(expected.values())
                    await wait_for(done, 120, 0.5)
                    await wait_for(lambda: {b["id"] for b in hook.bodies if b["event"] == "raised"} >= set(expected),
                                   60, 0.2)
                    hooked.update(b["id"] for b in hook.bodies if b["event"] == "raised")
                finally:
                    b.send_signal(signal.SIGTERM)
                    try:
                        rc = b.wait(30)
                    except subprocess.TimeoutExpired:
                        b.send_signal(signal.SIGUSR1)  # faulthandler: the stacks into the log
                        time.sleep(1)  # noqa: ASYNC251  # the dump is written by the child process
                        b.kill()
                        raise AssertionError("no clean exit on SIGTERM: " + log.read_text()[-3000:]) from None
                return rc

        hooked: set[str] = set()
        rc = asyncio.run(main())
        assert rc == 0, log.read_text()[-2000:]
        rows = influx_db.query("SELECT * FROM alarm WHERE event = 'raised'")
        got = collections.Counter(f"{r['site']}/{r['asset']}/{r['sensor']}/{r['rule']}" for r in rows)
        assert got == expected
        assert hooked == set(expected)
