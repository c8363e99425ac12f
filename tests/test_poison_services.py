"""Poison messages against the real services: ``smartpark collect`` and ``smartpark alerts run`` as processes,
a real Mosquitto and a real influxd. Each generated poison message is dead-lettered in InfluxDB and acked,
the good reading after them is stored and evaluated, and neither process exits; the collector's last guard
turns a message whose handling raises into one dead letter instead of a crash loop."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion
from services import Broker, InfluxDB
from test_collector_support import CollectorThread, Publisher, settings_for, wait_connected, wait_for
from test_wire_poison import POISON, nested

from devstack import SMARTPARK, free_port
from smartpark.decode import Decoder, now_ms
from smartpark.park import load_park

PARK = load_park()
DEC = Decoder(PARK)
TOPICS = ["park/wwtp/effluent/cod", "park/wwtp/effluent", "park/wwtp/effluent/nope", "park/wwtp"]
# the message that stopped both services: 1,000 levels of lists in a 2 KB snapshot
ISSUE = ("park/wwtp/effluent", b'{"values": {"cod": ' + nested(1000).encode() + b"}}")


def poison(n: int) -> list[tuple[str, bytes]]:
    """``n`` hypothesis-generated poison messages (derandomized: the same every run)."""
    out: list[tuple[str, bytes]] = []

    @settings(max_examples=n, database=None, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(TOPICS), POISON)
    def collect(topic: str, payload: bytes) -> None:
        out.append((topic, payload))

    collect()
    return out


class StatusWatch:
    """Who is online: the retained service-status messages under ``park/_sys/#`` (CONTRACT §2)."""

    def __init__(self, port: int) -> None:
        self.online: set[str] = set()
        self._lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"watch-{os.getpid()}-{id(self)}")
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *a: c.subscribe("park/_sys/#", qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        try:
            status = orjson.loads(msg.payload).get("status")
        except orjson.JSONDecodeError:
            return
        with self._lock:
            (self.online.add if status == "online" else self.online.discard)(msg.topic.split("/")[2])

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def services(broker: Broker, influx_db: InfluxDB, tmp_path: Path) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """``smartpark collect`` and ``smartpark alerts run`` (wall clock), both online; SIGTERM at the end."""
    env = {**os.environ, "SMARTPARK_MQTT_URL": broker.url, "SMARTPARK_INFLUX_URL": influx_db.url,
           "SMARTPARK_INFLUX_DB": influx_db.db, "SMARTPARK_API_URL": f"http://127.0.0.1:{free_port()}"}
    watch = StatusWatch(broker.port)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    for name, args in (("collector", ["collect"]), ("alerts", ["alerts", "run"])):
        env_ = {**env, "SMARTPARK_STATE_DIR": str(tmp_path / name)}
        procs[name] = subprocess.Popen([*SMARTPARK, "-v", *args], env=env_,
                                       stdout=(tmp_path / f"{name}.log").open("wb"), stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: watch.online >= {"collector", "alerts"} or any(p.poll() is not None for p in procs.values()),
                 60, lambda: f"both services online (online: {watch.online})")
        for name, p in procs.items():
            assert p.poll() is None, f"{name} exited: " + (tmp_path / f"{name}.log").read_text()[-2000:]
        yield procs
    finally:
        watch.close()
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for name, p in procs.items():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                raise AssertionError(f"{name} did not stop on SIGTERM") from None


def test_poison_then_good_reading(broker: Broker, influx_db: InfluxDB, tmp_path: Path,
                                  services: dict[str, subprocess.Popen[bytes]]) -> None:
    """Hypothesis poison (nested values, ts, quality and flags; huge integers, 1e400, NaN, duplicate keys,
    lone surrogates, non-UTF-8, 64 KiB + 1 ...) then a good reading of 55.2 mg/L effluent COD (HH 50): every
    dead letter the decoder names is in InfluxDB, the reading is stored, the engine raises its HH alarm, and
    neither process exits."""
    messages = [ISSUE, *poison(120)]
    expected = sum(len(DEC.decode(t, p, now_ms()).rejected) for t, p in messages)
    assert expected >= len(messages) // 2
    def alive() -> None:
        for name, p in services.items():
            assert p.poll() is None, f"{name} exited: " + (tmp_path / f"{name}.log").read_text()[-3000:]

    def dead_letters() -> bool:
        alive()
        return influx_db.count("dead_letter") >= expected

    pub = Publisher(broker.port)
    pub.publish(messages)
    pub.wait_acked()
    wait_for(dead_letters, 60, lambda: f"{expected} dead letters ({influx_db.count('dead_letter')} so far)")
    # after every poison reading stamped with its receive time (a later one would make this one late)
    ts = now_ms() + 1000
    pub.publish([("park/wwtp/effluent/cod", orjson.dumps({"value": 55.2, "ts": ts}))])
    pub.wait_acked()
    pub.close()

    def stored() -> bool:
        alive()
        return bool(influx_db.query(f'SELECT "value" FROM "reading" WHERE "sensor" = \'cod\' AND time = {ts}ms'))

    wait_for(stored, 60, "the good reading")

    def raised() -> bool:
        alive()
        return bool(influx_db.query("SELECT \"value\" FROM \"alarm\" WHERE \"sensor\" = 'cod' AND \"rule\" = 'hh' "
                                    "AND \"site\" = 'wwtp' AND \"asset\" = 'effluent'"))

    wait_for(raised, 60, "the engine's HH alarm on the good reading")
    assert influx_db.count("dead_letter") == expected
    issue = influx_db.query("SELECT \"detail\" FROM \"dead_letter\" WHERE \"reason\" = 'bad_value' "
                            "AND \"topic\" = 'park/wwtp/effluent'")
    assert any("snapshot entry 'cod'" in r["detail"] for r in issue)
    alive()


class _Raising(Decoder):
    """A decoder with a defect: it raises on one payload. Stands for any bug the decoder's own guards miss."""

    def lines(self, topic: str, payload: bytes, received_ms: int | None = None) -> tuple[list[str], list[Any]]:
        if payload == b"trip":
            raise RuntimeError("defect in decoding")
        return super().lines(topic, payload, received_ms)


def test_collector_guard_dead_letters_a_raising_message(broker: Broker, influx_db: InfluxDB, tmp_path: Path) -> None:
    """A message whose handling raises becomes one ``bad_value`` dead letter naming the exception, is acked,
    and the reading after it is stored; after a restart it is not redelivered (no crash loop)."""
    settings_ = settings_for(broker.url, influx_db.url, influx_db.db, None, tmp_path / "state")
    ts = now_ms()

    def run(messages: list[tuple[str, bytes]], want_readings: int) -> None:
        thread = CollectorThread(settings_, PARK, instance="guard")
        thread.collector.decoder = _Raising(PARK)
        with thread as collector:
            wait_connected(collector)
            pub = Publisher(broker.port)
            pub.publish(messages)
            pub.wait_acked()
            pub.close()
            wait_for(lambda: influx_db.count("reading") >= want_readings, 30, "the reading after the defect")

    run([("park/wwtp/effluent/cod", b"trip"),
         ("park/wwtp/effluent/cod", orjson.dumps({"value": 41.5, "ts": ts}))], 1)
    rows = influx_db.query('SELECT "reason", "detail", "topic" FROM "dead_letter"')
    assert [(r["reason"], r["detail"], r["topic"]) for r in rows] == [
        ("bad_value", "RuntimeError: defect in decoding", "park/wwtp/effluent/cod")]
    run([("park/wwtp/effluent/cod", orjson.dumps({"value": 41.6, "ts": ts + 1}))], 2)
    assert influx_db.count("dead_letter") == 1  # the run above stopped after flushing all it had received
