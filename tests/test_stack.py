"""`smartpark stack up | down | status` and the Stack API, against the real mosquitto and influxd binaries."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from services import Broker, InfluxDB
from test_collector_support import (
    CollectorThread,
    Publisher,
    readings,
    settings_for,
    wait_connected,
    wait_for,
    write_park,
)
from test_collector_support import stored as stored_readings

import cli
from devstack import SMARTPARK, Stack, find_binary, free_port, influx_answers, mqtt_answers, pid_alive
from smartpark.park import load_park

REPO = Path(__file__).resolve().parent.parent
MISSING_MOSQUITTO = ("smartpark: mosquitto not found: install the Debian package 'mosquitto' "
                     "(apt-get install mosquitto)")


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def run_sub(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SMARTPARK, *argv], cwd=REPO, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)


def stack_args(state: Path, mqtt_port: int, influx_port: int) -> tuple[list[str], list[str]]:
    return ["--state-dir", str(state)], ["--mqtt-port", str(mqtt_port), "--influx-port", str(influx_port)]


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """An unrelated process that `stack down` must leave alone."""
    proc = subprocess.Popen(["sleep", "100"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


# --------------------------------------------------------------------------------------------------
# command line


def test_cli_up_is_idempotent_status_and_down(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              sleeper: subprocess.Popen[bytes]) -> None:
    mqtt_port, influx_port = free_port(), free_port()
    common, ports = stack_args(tmp_path, mqtt_port, influx_port)
    api = Stack(tmp_path / "stack", mqtt_port, influx_port)
    try:
        rc, out, err = run_cli(capsys, *common, "stack", "up", *ports)
        assert rc == 0, err
        assert "mosquitto: started" in out and "influxd: started" in out
        pids = {name: svc.pid for name, svc in api.status().items()}
        assert all(pids.values())
        assert mqtt_answers(mqtt_port) and influx_answers(influx_port)

        # second up: nothing new, same pids
        rc, out, err = run_cli(capsys, *common, "stack", "up", *ports)
        assert rc == 0, err
        assert out.count("already running") == 2
        assert {name: svc.pid for name, svc in api.status().items()} == pids

        # status, even without the ports: they are remembered in the pid files
        rc, out, err = run_cli(capsys, *common, "stack", "status")
        assert rc == 0, err
        lines = {line.split()[0]: line for line in out.splitlines()}
        for name in ("mosquitto", "influxd"):
            assert lines[name].split()[1] == "up"
            assert str(pids[name]) in lines[name]
        assert f"port {mqtt_port}" in lines["mosquitto"] and f"port {influx_port}" in lines["influxd"]

        rc, out, err = run_cli(capsys, *common, "stack", "down")
        assert rc == 0, err
        assert "mosquitto: stopped" in out and "influxd: stopped" in out
        assert not any(pid_alive(p) for p in pids.values() if p)
        assert not mqtt_answers(mqtt_port) and not influx_answers(influx_port)
        assert sleeper.poll() is None, "stack down killed an unrelated process"

        rc, out, _ = run_cli(capsys, *common, "stack", "status")
        assert rc == 0 and out.count(" down ") == 2
        rc, out, _ = run_cli(capsys, *common, "stack", "down")
        assert rc == 0 and out.count("not running") == 2
    finally:
        api.down()


def test_subprocess_cli_leaves_services_running(tmp_path: Path) -> None:
    """`smartpark stack up` as its own process: the services outlive it; `stack down` stops them."""
    mqtt_port, influx_port = free_port(), free_port()
    common, ports = stack_args(tmp_path, mqtt_port, influx_port)
    api = Stack(tmp_path / "stack", mqtt_port, influx_port)
    try:
        res = run_sub(*common, "stack", "up", *ports)
        assert res.returncode == 0, res.stderr
        assert f"SMARTPARK_MQTT_URL=mqtt://127.0.0.1:{mqtt_port}" in res.stdout
        assert all(svc.up for svc in api.status().values())
        res = run_sub(*common, "stack", "up", *ports)
        assert res.returncode == 0 and res.stdout.count("already running") == 2, res.stderr
        res = run_sub(*common, "stack", "status")
        assert res.returncode == 0 and res.stdout.count(" up ") == 2, res.stdout
        res = run_sub(*common, "stack", "down")
        assert res.returncode == 0, res.stderr
        assert not any(svc.running for svc in api.status().values())
    finally:
        api.down()


def test_down_leaves_a_reused_pid_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        sleeper: subprocess.Popen[bytes]) -> None:
    """A stale pid file whose pid now belongs to someone else: `down` must not signal it."""
    root = tmp_path / "stack"
    root.mkdir()
    for name in ("mosquitto", "influxd"):
        (root / f"{name}.pid").write_text(f'{{"pid": {sleeper.pid}, "port": 1}}\n')
    rc, out, err = run_cli(capsys, "--state-dir", str(tmp_path), "stack", "status")
    assert rc == 0 and out.count(" down ") == 2, out
    rc, out, err = run_cli(capsys, "--state-dir", str(tmp_path), "stack", "down")
    assert rc == 0, err
    assert out.count("not running") == 2
    time.sleep(0.2)
    assert sleeper.poll() is None, "stack down killed a process it did not start"


def test_missing_binary_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    common, ports = stack_args(tmp_path, free_port(), free_port())
    # as a subprocess
    res = run_sub(*common, "stack", "up", *ports, env={**os.environ, "PATH": str(empty)})
    assert res.returncode == 2
    assert res.stderr == MISSING_MOSQUITTO + "\n"
    # in process
    monkeypatch.setenv("PATH", str(empty))
    rc, _out, err = run_cli(capsys, *common, "stack", "up", *ports)
    assert rc == 2 and err == MISSING_MOSQUITTO + "\n"
    # influxd missing but mosquitto present: nothing is started at all
    only_mosquitto = tmp_path / "only-mosquitto"
    only_mosquitto.mkdir()
    monkeypatch.setenv("PATH", os.defpath)
    (only_mosquitto / "mosquitto").symlink_to(find_binary("mosquitto"))
    monkeypatch.setenv("PATH", str(only_mosquitto))
    rc, _out, err = run_cli(capsys, *common, "stack", "up", *ports)
    assert rc == 2
    assert err == ("smartpark: influxd not found: install the Debian package 'influxdb' "
                   "(apt-get install influxdb)\n")
    assert not (tmp_path / "stack" / "mosquitto.pid").exists()


def test_port_taken_by_a_stranger(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        common, ports = stack_args(tmp_path, taken, free_port())
        rc, _out, err = run_cli(capsys, *common, "stack", "up", *ports)
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and f"127.0.0.1:{taken} is already in use" in err


def test_start_failure_shows_the_log(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A service that dies at start: exit 1, and the error ends with the last lines of its log."""
    fake = tmp_path / "bin"
    fake.mkdir()
    script = fake / "mosquitto"
    script.write_text("#!/bin/sh\necho 'Error: fake mosquitto cannot start' >&2\nexit 3\n")
    script.chmod(0o755)
    (fake / "influxd").symlink_to(find_binary("influxd"))
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}/bin")
    common, ports = stack_args(tmp_path, free_port(), free_port())
    rc, _out, err = run_cli(capsys, *common, "stack", "up", *ports, "--timeout", "5")
    assert rc == 1
    assert "mosquitto exited with status 3" in err
    assert "Error: fake mosquitto cannot start" in err
    assert not (tmp_path / "stack" / "mosquitto.pid").exists()
    assert not (tmp_path / "stack" / "influxd.pid").exists()


# --------------------------------------------------------------------------------------------------
# restarts keep the data


def test_influx_data_survives_restart_and_kill(stack_factory: Callable[..., Stack]) -> None:
    stack = stack_factory()
    db = InfluxDB(stack.influx_url, "survive")
    db.create()
    t0 = 1764201600000
    db.write([f"reading,site=s,asset=a,sensor=x value={i} {t0 + i}" for i in range(100)])
    assert db.count("reading") == 100
    pid = stack.pid("influxd")

    assert stack.stop_influxd()
    assert not influx_answers(stack.influx_port) and not pid_alive(pid or 0)
    assert stack.status()["mosquitto"].up  # only influxd was stopped
    stack.start_influxd()
    assert db.count("reading") == 100

    db.write(f"reading,site=s,asset=a,sensor=x value=-1 {t0 + 100}")
    stack.stop_influxd(kill=True)       # SIGKILL: the fsynced WAL still has the last point
    stack.start_influxd()
    assert db.count("reading") == 101
    assert db.query("SELECT value FROM reading ORDER BY time DESC LIMIT 1")[0]["time"] == t0 + 100


def _session_client(broker: Broker, client_id: str, received: list[int] | None = None,
                    connected: threading.Event | None = None,
                    session_present: list[bool] | None = None) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)

    def on_connect(c: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags, rc: object,
                   props: object) -> None:
        if session_present is not None:
            session_present.append(bool(flags.session_present))
        if connected is not None:
            connected.set()

    def on_message(c: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if received is not None:
            received.append(int(msg.payload))

    client.on_connect = on_connect
    client.on_message = on_message
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    client.connect(broker.host, broker.port, clean_start=False, properties=props)
    return client


def _subscribe_and_leave(broker: Broker, client_id: str, topic: str) -> None:
    subscribed = threading.Event()
    client = _session_client(broker, client_id)
    client.on_subscribe = lambda *a: subscribed.set()
    client.loop_start()
    client.subscribe(topic, qos=1)
    assert subscribed.wait(10)
    client.disconnect()
    client.loop_stop()


def _publish_qos1(broker: Broker, topic: str, n: int) -> None:
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv5)
    pub.max_inflight_messages_set(200)
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    infos = [pub.publish(topic, str(i), qos=1) for i in range(n)]
    deadline = time.monotonic() + 15
    for info in infos:
        info.wait_for_publish(max(0.1, deadline - time.monotonic()))
        assert info.is_published()
    pub.disconnect()
    pub.loop_stop()


def _collect(broker: Broker, client_id: str, n: int, timeout: float = 15) -> tuple[list[int], bool]:
    received: list[int] = []
    session_present: list[bool] = []
    client = _session_client(broker, client_id, received, session_present=session_present)
    client.loop_start()
    deadline = time.monotonic() + timeout
    while len(received) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # anything beyond n would be a duplicate: let it show
    client.disconnect()
    client.loop_stop()
    return received, bool(session_present and session_present[0])


def test_broker_keeps_5000_queued_qos1_messages(broker: Broker) -> None:
    """Mosquitto's default (1000 per client) would silently drop 4000 of these."""
    conf = broker.stack.config_path("mosquitto").read_text()
    assert "\nmax_queued_messages 10000000\n" in conf and "\nmax_queued_bytes 0\n" in conf
    _subscribe_and_leave(broker, "slow-collector", "park/q/#")
    _publish_qos1(broker, "park/q/x", 5000)
    received, present = _collect(broker, "slow-collector", 5000)
    assert present
    assert len(received) == 5000
    assert sorted(received) == list(range(5000))


def test_broker_sessions_and_queue_survive_a_clean_restart(broker: Broker) -> None:
    _subscribe_and_leave(broker, "collector-1", "park/r/#")
    _publish_qos1(broker, "park/r/x", 2000)
    old = broker.pid
    broker.restart()
    assert broker.pid != old and broker.running
    received, present = _collect(broker, "collector-1", 2000)
    assert present
    assert sorted(received) == list(range(2000))


def test_fixtures(influx_db: InfluxDB, shared_broker: Broker) -> None:
    influx_db.write(["m,k=a v=1 1000", "m,k=b v=2 2000", "m,k=b v=3 3000"])
    assert influx_db.count("m") == 3
    rows = influx_db.query("SELECT sum(v) FROM m GROUP BY k")
    assert {r["k"]: r["sum"] for r in rows} == {"a": 1, "b": 5}
    assert influx_db.query("SELECT * FROM m WHERE k = 'a'")[0]["time"] == 1000
    assert influx_db.count("nothing") == 0
    assert mqtt_answers(shared_broker.port)
    assert shutil.which("mosquitto_pub"), "mosquitto-clients is part of the test set-up"


# --------------------------------------------------------------------------------------------------
# what survives a broker failure (README, "What survives a broker failure")


class TestBrokerDurability:
    """QoS 1 readings acknowledged by the local stack's mosquitto and queued for the offline collector's
    persistent session: a clean stop keeps all; a SIGKILL keeps all that the last autosave (every second,
    devstack.PERSISTENCE) took in; losing the broker's disk loses what it held."""

    def test_queued_readings_across_clean_stop_sigkill_and_disk_loss(self, stack_factory: Callable[..., Stack],
                                                                     tmp_path: Path) -> None:
        """500 readings survive a clean stop, 500 more a SIGKILL after the next autosave, 500 sent before the
        data directory is lost are lost (and nothing else): the collector then stores exactly 1,500 + the
        500 published after it."""
        stack = stack_factory()
        conf = stack.config_path("mosquitto").read_text()
        assert "autosave_interval 1\n" in conf and "autosave_on_changes false" in conf
        park_path = write_park(tmp_path / "park.yaml", assets=2, per_asset=10)
        park = load_park(park_path)
        db = InfluxDB(stack.influx_url, "durability")
        db.create()
        settings = settings_for(stack.mqtt_url, stack.influx_url, "durability", park_path, tmp_path / "state")
        batches = [readings(park, 2000, seed=7)[i * 500:(i + 1) * 500] for i in range(4)]
        db_file = stack.service_dir("mosquitto") / "data" / "mosquitto.db"

        def stored() -> int:
            return db.count("reading", "value")

        def collect_until(expected: int) -> None:
            """Run the collector until it stored ``expected`` readings, and stop it (its session stays)."""
            with CollectorThread(settings, park) as collector:
                wait_connected(collector)
                wait_for(lambda: stored() >= expected, 60, lambda: f"{stored()} of {expected} readings stored")

        def queue(batch: list[tuple[str, bytes, str, int, float]]) -> None:
            """Publish at QoS 1 while the collector is away; return once mosquitto acknowledged each."""
            pub = Publisher(stack.mqtt_port)
            try:
                pub.publish((topic, payload) for topic, payload, *_ in batch)
                pub.wait_acked(60)
            finally:
                pub.close()

        collect_until(0)                       # the collector's persistent session exists, then it is away
        queue(batches[0])
        stack.stop_mosquitto()                 # clean stop (SIGTERM): mosquitto saves everything
        stack.start_mosquitto()
        collect_until(500)

        queue(batches[1])
        before = _identity(db_file)
        wait_for(lambda: _identity(db_file) != before, 20, "an autosave after the last PUBACK")
        stack.stop_mosquitto(kill=True)        # SIGKILL after the autosave: all 500 are in mosquitto.db
        stack.start_mosquitto()
        collect_until(1000)

        queue(batches[2])
        stack.stop_mosquitto(kill=True)        # the broker's disk is lost: sessions and queues with it
        shutil.rmtree(db_file.parent)
        stack.start_mosquitto()
        with CollectorThread(settings, park) as collector:
            wait_connected(collector)
            queue(batches[3])
            wait_for(lambda: stored() >= 1500, 60, lambda: f"{stored()} of 1500 readings stored")
        expected = {(key, ts, value) for i in (0, 1, 3) for _, _, key, ts, value in batches[i]}
        assert stored_readings(db) == expected  # exactly: batch 2 (queued on the lost disk) is gone


def _identity(path: Path) -> tuple[int, int] | None:
    """(inode, mtime) of mosquitto.db: each save writes a new file and renames it over the old one."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns
