"""What the MQTT subscriber of the collector and the alert engine does with brokers that differ from Mosquitto:
the protocol option, SIGTERM during the handshake, share groups where the broker has none, a forgotten
session, and a small in-flight window. Real brokers throughout (amqtt, aedes, mosquitto)."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mqtt_brokers import AedesBroker, AmqttBroker, RabbitMqBroker
from test_collector_faults import _ServerThread
from test_collector_support import (
    CollectorThread,
    Publisher,
    big_park,
    readings,
    settings_for,
    stored,
    wait_connected,
    wait_for,
)

from devstack import SMARTPARK
from smartpark.config import Settings
from smartpark.errors import ConfigError
from smartpark.mqtt import MQTT311, RECEIVE_MAXIMUM, SHARED_SUBSCRIPTION_AVAILABLE
from smartpark.mqtt.codec import properties as _props

REPO = Path(__file__).resolve().parent.parent
NO_INFLUX = "http://127.0.0.1:9"  # nothing listens: what is collected goes to the spool


@pytest.fixture
def aedes(tmp_path: Path) -> Iterator[AedesBroker]:
    """A running aedes (in-memory sessions, MQTT 3.1.1 only); skipped where node or aedes is missing."""
    if why := AedesBroker.available():
        pytest.skip(why)
    with AedesBroker(tmp_path) as broker:
        yield broker


def smartpark(*args: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen([*SMARTPARK, "-v", *args], stdout=out,
                                stderr=subprocess.STDOUT, cwd=REPO)


class TestProtocolOption:
    """``--mqtt-protocol 5|3.1.1|auto`` / ``SMARTPARK_MQTT_PROTOCOL``, default auto."""

    def test_values_flag_and_variable(self) -> None:
        """auto is the default (None: find out); the variable sets it, a flag would win; anything else is refused."""
        assert Settings.resolve(env={}).mqtt().protocol is None
        assert Settings.resolve(env={"SMARTPARK_MQTT_PROTOCOL": "3.1.1"}).mqtt().protocol == MQTT311
        assert Settings.resolve(env={"SMARTPARK_MQTT_PROTOCOL": "5"}).mqtt().protocol == 5
        with pytest.raises(ConfigError, match="mqtt_protocol"):
            Settings.resolve(env={"SMARTPARK_MQTT_PROTOCOL": "3"})

    def test_bad_value_exits_2_with_one_line(self, tmp_path: Path) -> None:
        """A wrong value is a configuration error: exit 2, one line on stderr."""
        out = subprocess.run([*SMARTPARK, "--mqtt-protocol", "4.0", "collect"], cwd=REPO,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 2
        assert out.stderr.count("\n") == 1 and "--mqtt-protocol must be 5, 3.1.1 or auto" in out.stderr

    def test_explicit_3_1_1_connects_without_trying_5(self, broker: Any, tmp_path: Path) -> None:
        """With 3.1.1 asked for, the first CONNECT is 3.1.1: no fallback line."""
        proc = smartpark("--mqtt-url", broker.url, "--mqtt-protocol", "3.1.1", "--influx-url", NO_INFLUX,
                         "--state-dir", str(tmp_path), "collect", log=tmp_path / "log")
        try:
            wait_for(lambda: "subscribed to" in (tmp_path / "log").read_text(), 30, "the subscription")
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0
        text = (tmp_path / "log").read_text()
        assert "(MQTT 3.1.1, session new)" in text and "falling back" not in text


def test_sigterm_while_waiting_for_a_connack_exits_at_once(tmp_path: Path) -> None:
    """amqtt never answers an MQTT 5 CONNECT (the first attempt of auto): SIGTERM during that wait ends the
    collector cleanly (exit 0) without waiting for the CONNACK timeout first."""
    with AmqttBroker(tmp_path) as amqtt:
        proc = smartpark("--mqtt-url", amqtt.url, "--influx-url", NO_INFLUX, "--state-dir", str(tmp_path / "s"),
                         "collect", log=tmp_path / "log")
        try:
            # the readiness probe of the fixture was the first connection; the collector is the second
            wait_for(lambda: amqtt.log_path.read_text().count("Connection from") >= 2, 30, "the CONNECT at amqtt")
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(60)
    text = (tmp_path / "log").read_text()
    assert code == 0, text
    assert "no CONNACK" not in text and "reconnect attempt" not in text, text


class _ConnackWithoutSharedSubscriptions(_ServerThread):
    """A real mosquitto behind a front that adds Shared Subscription Available = 0 to its MQTT 5 CONNACK, as a
    broker without shared subscriptions answers (a property mosquitto itself never sends)."""

    def __init__(self, upstream_port: int) -> None:
        super().__init__()
        self.upstream_port = upstream_port

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def down() -> None:
            head = await up_reader.readexactly(2)  # CONNACK: type, remaining length (< 128)
            body = await up_reader.readexactly(head[1])
            if len(body) > 2:  # MQTT 5: flags, reason code, property length, properties
                props = body[3:] + b"\x2a\x00"
                body = body[:2] + bytes((len(props),)) + props
            writer.write(bytes((head[0], len(body))) + body)
            while data := await up_reader.read(65536):
                writer.write(data)
                await writer.drain()

        async def up() -> None:
            while data := await reader.read(65536):
                up_writer.write(data)
                await up_writer.drain()

        try:
            await asyncio.gather(down(), up(), return_exceptions=True)
        finally:
            writer.close()
            up_writer.close()

    async def serve(self) -> Any:
        return await asyncio.start_server(self.handle, "127.0.0.1", self.port)

    async def shutdown(self, server: Any) -> None:
        server.close()


class TestShareGroupWithoutSharedSubscriptions:
    """``--share-group`` where the broker takes ``$share/g/park/#`` as a plain topic would store nothing."""

    def test_refused_with_exit_2_when_the_connack_says_unavailable(self, broker: Any, influx_db: Any,
                                                                    tmp_path: Path) -> None:
        """MQTT 5 CONNACK with Shared Subscription Available 0: exit 2, one line saying why, nothing subscribed."""
        with _ConnackWithoutSharedSubscriptions(broker.port) as front:
            out = subprocess.run([*SMARTPARK, "--mqtt-url", f"mqtt://127.0.0.1:{front.port}",
                                  "--influx-url", influx_db.url, "--influx-db", influx_db.db, "--state-dir",
                                  str(tmp_path), "collect", "--share-group", "g"], cwd=REPO, capture_output=True,
                                 text=True, timeout=120)
        assert out.returncode == 2, out.stderr
        assert out.stderr.count("\n") == 1, out.stderr
        assert "has no shared subscriptions" in out.stderr and "Shared Subscription Available = 0" in out.stderr

    def test_warned_loudly_over_3_1_1(self, aedes: AedesBroker, tmp_path: Path,
                                      caplog: pytest.LogCaptureFixture) -> None:
        """aedes (3.1.1): the broker cannot say, so a WARNING says that this collector may receive nothing."""
        caplog.set_level(logging.WARNING, logger="smartpark.mqtt")
        park_path, park = big_park(tmp_path)
        settings = settings_for(aedes.url, NO_INFLUX, "db", park_path, tmp_path / "state")
        with CollectorThread(settings, park, instance="s", share_group="g") as collector:
            wait_connected(collector)
        warned = [r for r in caplog.records if "receives NOTHING" in r.getMessage()]
        assert len(warned) == 1 and warned[0].levelno == logging.WARNING
        assert "over MQTT 3.1.1" in warned[0].getMessage()


def test_a_session_the_broker_forgot_is_a_warning_and_a_metric(aedes: AedesBroker, tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """aedes keeps sessions in memory: after its restart the reconnect finds session present 0. That is when
    readings it had queued (acked to their publishers) were dropped: a WARNING saying so, and the counter."""
    caplog.set_level(logging.INFO, logger="smartpark.mqtt")
    park_path, park = big_park(tmp_path)
    settings = settings_for(aedes.url, NO_INFLUX, "db", park_path, tmp_path / "state")
    with CollectorThread(settings, park, instance="lost") as collector:
        wait_connected(collector)
        aedes.stop()
        aedes.start()
        wait_for(lambda: collector.source is not None and collector.source.connects >= 2, 60, "the reconnect")
        lost = collector.metrics.registry.get_sample_value("smartpark_collector_mqtt_session_lost_total")
    assert lost == 1
    assert caplog.text.count("falling back to 3.1.1") == 1  # the reconnect remembered what aedes speaks
    warned = [r for r in caplog.records if "no longer has the persistent session" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING
    assert "may have been lost" in warned[0].getMessage()


@pytest.mark.ci
def test_a_full_in_flight_window_is_flushed_without_waiting_for_the_idle_timer(influx_db: Any,
                                                                               tmp_path: Path) -> None:
    """RabbitMQ sends an MQTT 3.1.1 client at most ``mqtt.prefetch`` (10) messages unacked: a batch then holds the
    whole window and nothing more comes until it is acked, so it is flushed after the short window gap rather
    than the idle timer, and counted in ``window_flushes``. All stored."""
    if why := RabbitMqBroker.available():
        pytest.skip(why)
    park_path, park = big_park(tmp_path)
    sent = readings(park, 3_000, seed=77)
    with RabbitMqBroker(tmp_path, prefetch=10) as rabbit:
        settings = settings_for(rabbit.url, influx_db.url, influx_db.db, park_path, tmp_path / "state")
        with CollectorThread(settings, park, instance="w") as collector:
            wait_connected(collector)
            pub = Publisher(rabbit.port)
            pub.publish((t, p) for t, p, *_ in sent)
            pub.wait_acked()
            wait_for(lambda: influx_db.count("reading") >= len(sent), 120, "the readings")
            pub.close()
            flushes = collector.metrics.registry.get_sample_value("smartpark_collector_window_flushes_total")
    assert stored(influx_db) == {(k, ts, v) for _, _, k, ts, v in sent}
    assert flushes is not None and flushes >= len(sent) // 10 // 2  # most batches end on a full window


class TestConnackProperties:
    """The numeric MQTT 5 properties of a CONNACK, found among strings, pairs and varints of any kind."""

    def test_mosquittos_connack(self) -> None:
        """Mosquitto 2.0 with ``max_inflight_messages 10``: topic alias maximum and receive maximum, both 10."""
        body = bytes.fromhex("00000622000a21000a")
        assert _props(body, 2, len(body)) == {0x22: 10, RECEIVE_MAXIMUM: 10}

    def test_strings_pairs_and_varints_are_skipped(self) -> None:
        """A reason string, a user property, an assigned client id and a subscription identifier around the
        shared-subscription flag."""
        props = (b"\x1f\x00\x02ok" + b"\x26\x00\x01k\x00\x02vv" + b"\x12\x00\x03abc" + b"\x0b\x81\x01"
                 + bytes((SHARED_SUBSCRIPTION_AVAILABLE, 0)) + b"\x27\x00\x01\x00\x00")
        body = b"\x00\x00" + bytes((len(props),)) + props
        assert _props(body, 2, len(body)) == {SHARED_SUBSCRIPTION_AVAILABLE: 0, 0x27: 65_536}
