"""The alarm service against a real Mosquitto, a real InfluxDB and real local HTTP endpoints."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.parse

import aiohttp
import aiomqtt
from alerts_helpers import PARK, Endpoints, reading, wait_for
from services import Broker, InfluxDB

from alerts.service import AlertService
from devstack import SMARTPARK, free_port
from smartpark.config import Settings

T0 = 1_772_416_800_000  # 2026-03-02 10:00 Asia/Shanghai


def settings(broker: Broker, db: InfluxDB, tmp_path: object, api_port: int) -> Settings:
    return Settings(mqtt_url=broker.url, influx_url=db.url, influx_db=db.db, state_dir=str(tmp_path),
                    api_url=f"http://127.0.0.1:{api_port}")


async def publish(broker: Broker, items: list[tuple[str, bytes]]) -> None:
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier=f"pub-{os.getpid()}") as c:
        for topic, payload in items:
            await c.publish(topic, payload, qos=1)


class TestService:
    """Readings in through MQTT; events out to webhooks, apprise, retained topics and InfluxDB; operators."""

    def test_end_to_end(self, broker: Broker, influx_db: InfluxDB, tmp_path: object) -> None:
        """One hanging and one failing notifier do not hold back the healthy webhook, apprise, MQTT or InfluxDB;
        the API lists, acknowledges and refuses shelving without a reason; every OpenAPI route exists."""
        api_port = free_port()
        s = settings(broker, influx_db, tmp_path, api_port)

        async def main() -> None:
            async with Endpoints("ok", "hang", "fail", "ok") as (ok, hang, fail, app_ep):
                svc = AlertService(s, PARK, webhooks=[hang.url, fail.url, ok.url],
                                   notify=[f"json://127.0.0.1:{app_ep.port}/apprise"], clock="event")
                svc.pipeline.senders[0].timeout = 300  # the hanging one stays hung for the whole test
                svc.pipeline.senders[1].backoff = 0.01  # the failing one retries quickly
                stop = asyncio.Event()
                task = asyncio.create_task(svc.run(stop))
                await asyncio.wait_for(svc.ready.wait(), 30)
                await asyncio.wait_for(svc.subscribed.wait(), 30)  # QoS 1 keeps what comes before
                topic = "park/plant/tank/level"
                msgs = [(topic, reading(50, T0)), (topic, reading(95, T0 + 10_000)),
                        (topic, reading(50, T0 + 20_000)), (topic, reading(85, T0 + 30_000)),
                        ("park/plant/tank/nope", b"1")]
                async with aiomqtt.Client("127.0.0.1", broker.port, identifier="sub-check") as sub:
                    await sub.subscribe("park/alarms/#", qos=1)
                    await publish(broker, msgs)
                    await wait_for(lambda: len(ok.bodies) >= 5)
                    retained = {}

                    async def collect() -> None:
                        async for m in sub.messages:
                            retained[m.topic.value] = m.payload
                            if "park/alarms/plant/tank/level/h" in retained:
                                return
                    await asyncio.wait_for(collect(), 20)
                # the healthy webhook received every event, in order, while the hanging one still hangs
                events = [(b["rule"], b["event"]) for b in ok.bodies]
                assert events[:5] == [("h", "raised"), ("hh", "raised"), ("h", "cleared"), ("hh", "cleared"),
                                      ("h", "raised")]
                assert hang.hits == 1 and hang.bodies == []
                assert svc.counts["readings"] == 4 and svc.counts["invalid"] == 1
                await wait_for(lambda: svc.pipeline.senders[1].counts["retries"] >= 2)
                assert fail.hits >= 2  # retried with backoff (until accepted or expired)
                # apprise really sent (json:// schema) a bilingual message
                await wait_for(lambda: len(app_ep.bodies) >= 1)
                assert any("液位" in b["message"] and "High" in b["message"] for b in app_ep.bodies)
                assert all(b["message"].splitlines()[-1].startswith("notification_id: ") for b in app_ep.bodies)
                # InfluxDB has the events
                await wait_for(lambda: influx_db.count("alarm") >= 5)
                # the operator API
                hdr = {"Authorization": f"Bearer {svc.token}"}
                base = f"http://127.0.0.1:{api_port}"
                async with aiohttp.ClientSession() as http:
                    async with http.get(base + "/alarms") as r:
                        assert r.status == 401
                    async with http.get(base + "/alarms", headers=hdr) as r:
                        active = await r.json()
                    assert {a["id"]: a["state"] for a in active} == {
                        "plant/tank/level/h": "UNACK", "plant/tank/level/hh": "RTNUN"}
                    aid = urllib.parse.quote("plant/tank/level/h", safe="")
                    async with http.post(f"{base}/alarms/{aid}/ack", headers=hdr,
                                         json={"operator": "alice", "comment": "on it"}) as r:
                        assert r.status == 200 and (await r.json())["state"] == "ACKED"
                    async with http.post(f"{base}/alarms/plant/tank/level/hh/shelve", headers=hdr,
                                         json={"operator": "alice", "duration_s": 600}) as r:
                        assert r.status == 400 and "reason" in (await r.json())["error"]
                    async with http.post(f"{base}/alarms/plant/tank/nope/hh/ack", headers=hdr, json={}) as r:
                        assert r.status == 404
                    async with http.get(base + "/status", headers=hdr) as r:
                        st = await r.json()
                    assert st["counts"]["readings"] == 4
                    assert st["notifiers"][f"webhook:{ok.url}"]["delivered"] >= 5
                    async with http.get(base + "/openapi.json") as r:
                        doc = await r.json()
                    for path, ops in doc["paths"].items():
                        url = base + path.replace("{id}", "plant/tank/temp/h")
                        for method in ops:
                            async with http.request(method, url, headers=hdr, json={}) as r:
                                assert r.status not in (404, 405), (method, path)
                    # the CLI against the same API: a bad command is one line and exit 2
                    env = {**os.environ, "SMARTPARK_API_URL": base, "SMARTPARK_API_TOKEN": svc.token or ""}
                    proc = await asyncio.create_subprocess_exec(
                        *SMARTPARK, "alerts", "ack", "plant/tank/none/hh", env=env,
                        stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
                    _, err = await proc.communicate()
                    assert proc.returncode == 2, err.decode()
                    assert err.decode().count("\n") == 1 and "unknown alarm" in err.decode(), err.decode()
                    proc = await asyncio.create_subprocess_exec(
                        *SMARTPARK, "alerts", "list", "--json", env=env,
                        stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
                    out, err = await proc.communicate()
                    assert proc.returncode == 0, err.decode()
                    assert {a["id"]: a["state"] for a in json.loads(out)}["plant/tank/level/h"] == "ACKED"
                stop.set()
                await asyncio.wait_for(task, 30)
            # the audit names the authenticated caller (the service token), not the operator name it typed
            rows = influx_db.query("SELECT * FROM alarm WHERE operator = 'service'", epoch="ns")
            assert [(r["event"], r["state"], r["rule"]) for r in rows] == [("acked", "ACKED", "h")]
            assert "on it" in rows[0]["message"]
            assert retained  # alarm states were published live
            # a newcomer gets the current state of each alarm from the retained topics
            states: dict[str, str] = {}
            async with aiomqtt.Client("127.0.0.1", broker.port, identifier="late-sub") as late:
                await late.subscribe("park/alarms/#", qos=1)

                async def take() -> None:
                    async for m in late.messages:
                        states[m.topic.value] = json.loads(m.payload)["state"] if m.payload else "NORM"
                        if len(states) >= 2:
                            return
                await asyncio.wait_for(take(), 20)
            assert states == {"park/alarms/plant/tank/level/h": "ACKED", "park/alarms/plant/tank/level/hh": "RTNUN"}

        asyncio.run(main())

    def test_windows_rebuilt_from_influx_history(self, broker: Broker, influx_db: InfluxDB, tmp_path: object) -> None:
        """Readings the collector stored while the engine was down are replayed on start: an alarm they
        cause is raised then (once), and the windows continue from them."""
        s = settings(broker, influx_db, tmp_path, free_port())

        async def session(extra: list[tuple[str, bytes]]) -> AlertService:
            svc = AlertService(s, PARK, clock="event", api=False)
            stop = asyncio.Event()
            task = asyncio.create_task(svc.run(stop))
            await asyncio.wait_for(svc.ready.wait(), 30)
            await asyncio.wait_for(svc.subscribed.wait(), 30)  # QoS 1 keeps what comes before
            if extra:
                await publish(broker, extra)
                await wait_for(lambda: svc.counts["readings"] >= len(extra))
            stop.set()
            await asyncio.wait_for(task, 30)
            return svc

        asyncio.run(session([("park/plant/tank/level", reading(50, T0))]))
        # while the engine is down, the collector stores two readings
        influx_db.write([f"reading,asset=tank,sensor=level,site=plant value=95.0 {T0 + 10_000}",
                         f"reading,asset=tank,sensor=level,site=plant value=96.0 {T0 + 20_000}"])
        svc = asyncio.run(session([]))
        assert svc.engine.get("plant/tank/level/hh").state == "UNACK"
        rows = influx_db.query("SELECT * FROM alarm WHERE event = 'raised'")
        assert sorted((r["rule"], r["time"]) for r in rows) == [("h", T0 + 10_000), ("hh", T0 + 10_000)]
        svc = asyncio.run(session([]))  # a second restart replays nothing twice
        assert influx_db.count("alarm") == 2

    def test_first_start_rebuilds_averages_from_history(self, broker: Broker, influx_db: InfluxDB,
                                                        tmp_path: object) -> None:
        """With no saved state, the clock-hour window is rebuilt from InfluxDB: the hour the engine joins late
        is judged on all its values (59), not only on those that arrive live."""
        s = settings(broker, influx_db, tmp_path, free_port())
        influx_db.write([f"reading,asset=stack,sensor=nox,site=other value=400.0 {T0 + i * 60_000}" for i in range(58)])

        messages = _join_late_and_close_the_hour(s, broker, influx_db)
        assert len(messages) == 1 and "hourly mean of 59 values" in messages[0]

    def test_history_rebuilds_averages_from_valid_readings_only(self, broker: Broker, influx_db: InfluxDB,
                                                                tmp_path: object) -> None:
        """The rebuilt hour counts what the report counts (smartpark.averages): of 50 good, 8 flagged D (stored
        without a quality: stated good) and 5 uncertain readings in InfluxDB, the 55 valid ones, with the live one."""
        s = settings(broker, influx_db, tmp_path, free_port())
        series = "reading,asset=stack,sensor=nox,site=other"
        influx_db.write([f"{series} value=400.0 {T0 + i * 60_000}" for i in range(50)]
                        + [f'{series} value=400.0,flag="D" {T0 + i * 60_000 + 30_000}' for i in range(8)]
                        + [f'{series} value=400.0,quality="uncertain" {T0 + (50 + i) * 60_000}' for i in range(5)])

        messages = _join_late_and_close_the_hour(s, broker, influx_db)
        assert len(messages) == 1 and "hourly mean of 56 values" in messages[0], messages

    def test_bad_rules_file_refused_at_start(self, tmp_path: object) -> None:
        """A rules file with a mistake stops `alerts run` before any I/O: one line, exit code 2."""
        import subprocess
        from pathlib import Path

        p = Path(str(tmp_path)) / "rules.yaml"
        p.write_text("rules:\n  - name: x\n    sensor: wwtp/effluent/cod\n    when: cod >> 3\n")
        r = subprocess.run([*SMARTPARK, "alerts", "run", "--rules", str(p),
                            "--mqtt-url", "mqtt://127.0.0.1:1"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2
        assert r.stderr.count("\n") == 1 and f"{p}:4:rules[0].when:" in r.stderr


def _join_late_and_close_the_hour(s: Settings, broker: Broker, influx_db: InfluxDB) -> list[str]:
    """Start an engine with no saved state, publish the hour's last reading and one of the next hour, and
    return the messages of the reg_1h events it wrote: the hour judged on history plus the live reading."""

    async def main() -> list[str]:
        svc = AlertService(s, PARK, clock="event", api=False)
        stop = asyncio.Event()
        task = asyncio.create_task(svc.run(stop))
        await asyncio.wait_for(svc.ready.wait(), 30)
        await asyncio.wait_for(svc.subscribed.wait(), 30)  # QoS 1 keeps what comes before
        topic = "park/other/stack/nox"
        await publish(broker, [(topic, reading(400, T0 + 58 * 60_000)), (topic, reading(100, T0 + 3_600_000))])
        await wait_for(lambda: svc.counts["readings"] >= 2)
        stop.set()
        await asyncio.wait_for(task, 30)
        return [r["message"] for r in influx_db.query("SELECT * FROM alarm WHERE rule = 'reg_1h'")]

    return asyncio.run(main())
