"""The real ``smartpark collect`` and ``smartpark alerts run`` against MQTT brokers other than Mosquitto.

With no protocol flag, each service finds the protocol the broker speaks (MQTT 5, else 3.1.1), every QoS 1
reading is stored in InfluxDB, and the engine raises an alarm whose retained state is on the broker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from mqtt_brokers import AedesBroker, AmqttBroker, ExternalBroker, RabbitMqBroker
from paho.mqtt.enums import CallbackAPIVersion
from test_collector_support import TS0, Publisher, stored, wait_for

from devstack import SMARTPARK, free_port
from smartpark.park import load_park

REPO = Path(__file__).resolve().parent.parent
ALARM_TOPIC = "park/alarms/plant/tank/level/hh"


def interop_park(path: Path) -> Path:
    """500 sensors without limits, and one tank level with HH 90 for the alarm."""
    lines = ["park: {id: interop, name: Interop park, timezone: UTC}", "sites:", "  - id: plant",
             "    name: Plant", "    assets:",
             "      - id: tank", "        name: Tank", "        sensors:",
             "          - {id: level, name: Level, unit: '%', range: [0, 100], normal: [20, 60], interval_s: 3600, "
             "limits: {hh: 90}}"]
    for a in range(10):
        lines += [f"      - id: a{a:02d}", f"        name: Asset {a}", "        sensors:"]
        lines += [f"          - {{id: s{s:03d}, name: Sensor {s}, unit: mg/L, range: [0, 1000], normal: [0, 1000], "
                  "interval_s: 3600}" for s in range(50)]
    path.write_text("\n".join(lines) + "\n")
    return path


class Services:
    """``smartpark collect`` and ``smartpark alerts run --clock event`` as processes, logging to files."""

    def __init__(self, broker_url: str, influx: Any, park: Path, state: Path, *extra: str) -> None:
        self.api_port = free_port()
        self.state = state
        common = [*SMARTPARK, "-v", "--mqtt-url", broker_url, "--influx-url", influx.url,
                  "--influx-db", influx.db, "--park", str(park), "--state-dir", str(state),
                  "--api-url", f"http://127.0.0.1:{self.api_port}", *extra]
        state.mkdir(parents=True, exist_ok=True)
        self.logs = {"collect": state / "collect.log", "alerts": state / "alerts.log"}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        for name, argv in (("collect", [*common, "collect", "--instance", "interop"]),
                           ("alerts", [*common, "alerts", "run", "--clock", "event", "--instance", "interop"])):
            with open(self.logs[name], "wb") as out:
                self.procs[name] = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)

    def log(self, name: str) -> str:
        return self.logs[name].read_text(errors="replace")

    def wait_subscribed(self, timeout: float = 60) -> None:
        for name, proc in self.procs.items():
            def ready(name: str = name, proc: subprocess.Popen[bytes] = proc) -> bool:
                return "subscribed to 'park/#'" in self.log(name) or proc.poll() is not None
            wait_for(ready, timeout, f"{name} subscribed")
            assert proc.poll() is None, f"{name} exited: {self.log(name)[-3000:]}"

    def engine_status(self) -> dict[str, Any]:
        token = (self.state / "api-token").read_text().strip()
        req = urllib.request.Request(f"http://127.0.0.1:{self.api_port}/status",
                                     headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data

    def stop(self) -> dict[str, int]:
        codes: dict[str, int] = {}
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait(10)
        return codes


def retained(port: int, topic: str, timeout: float = 30) -> bytes:
    """The retained message of ``topic`` as a new MQTT 3.1.1 subscriber receives it."""
    got: list[bytes] = []
    done = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"check-{os.getpid()}", protocol=paho.MQTTv311)

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        if msg.topic == topic and msg.payload:
            got.append(msg.payload)
            done.set()

    client.on_message = on_message
    client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
    client.connect("127.0.0.1", port, keepalive=10)
    client.loop_start()
    try:
        assert done.wait(timeout), f"no retained message on {topic}"
    finally:
        client.disconnect()
        client.loop_stop()
    return got[0]


@pytest.fixture
def external(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ExternalBroker | None]:
    kind: type[ExternalBroker] | None = request.param
    if kind is None:  # Mosquitto, from the conftest fixture
        yield None
        return
    why = kind.available()
    if why:
        pytest.skip(why)
    with kind(tmp_path) as b:
        yield b


def _run(broker_url: str, port: int, influx_db: Any, tmp_path: Path, n: int) -> tuple[Services, dict[str, int]]:
    park_path = interop_park(tmp_path / "park.yaml")
    park = load_park(park_path)
    refs = [r for r in park.sensors() if r.key != "plant/tank/level"]
    sent = [(refs[i % len(refs)].topic, TS0 + (i // len(refs)) * 1000, float(i % 1000)) for i in range(n - 2)]
    sent += [("park/plant/tank/level", TS0, 50.0), ("park/plant/tank/level", TS0 + 60_000, 95.0)]
    services = Services(broker_url, influx_db, park_path, tmp_path / "state")
    try:
        services.wait_subscribed()
        pub = Publisher(port)
        pub.publish((t, json.dumps({"value": v, "ts": ts}).encode()) for t, ts, v in sent)
        pub.wait_acked()
        pub.close()
        expected = {(t.removeprefix("park/"), ts, v) for t, ts, v in sent}
        wait_for(lambda: influx_db.count("reading") >= n, 240, lambda: f"{influx_db.count('reading')} of {n} stored")
        wait_for(lambda: services.engine_status()["counts"]["readings"] >= n, 120, "the engine evaluating all")
        wait_for(lambda: influx_db.count("alarm", where="\"rule\" = 'hh'") >= 1, 60, "the hh alarm in InfluxDB")
        state = json.loads(retained(port, ALARM_TOPIC))
        assert stored(influx_db) == expected
        assert state["rule"] == "hh" and state["value"] == 95.0 and state["event"] == "raised"
    finally:
        codes = services.stop()
    return services, codes


BROKERS = [
    pytest.param(AmqttBroker, 1_000, id="amqtt-1k"),
    pytest.param(AmqttBroker, 10_000, id="amqtt", marks=pytest.mark.ci),
    pytest.param(AedesBroker, 10_000, id="aedes", marks=pytest.mark.ci),
    pytest.param(RabbitMqBroker, 10_000, id="rabbitmq", marks=pytest.mark.ci),
]


@pytest.mark.parametrize(("external", "n"), BROKERS, indirect=["external"])
def test_collector_and_engine_on_a_3_1_1_only_broker(external: ExternalBroker, n: int, influx_db: Any,
                                                     tmp_path: Path) -> None:
    """No flag: both services fall back to 3.1.1 on their own (the broker's way of refusing 5 differs: CONNACK
    0x01, silence, a close), say why in the log, store every reading and raise the alarm; SIGTERM exits 0."""
    services, codes = _run(external.url, external.port, influx_db, tmp_path, n)
    assert codes == {"collect": 0, "alerts": 0}
    for name in ("collect", "alerts"):
        log = services.log(name)
        assert "falling back to 3.1.1" in log and "(MQTT 3.1.1, session new)" in log, log[-3000:]
        assert "()" not in log and "Traceback" not in log, log[-3000:]


@pytest.mark.ci
def test_collector_and_engine_on_mosquitto_use_mqtt_5(broker: Any, influx_db: Any, tmp_path: Path) -> None:
    """Mosquitto speaks MQTT 5: no fallback, the same 10,000 readings and the alarm."""
    services, codes = _run(broker.url, broker.port, influx_db, tmp_path, 10_000)
    assert codes == {"collect": 0, "alerts": 0}
    for name in ("collect", "alerts"):
        assert "(MQTT 5, session new)" in services.log(name) and "falling back" not in services.log(name)
