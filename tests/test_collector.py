"""The collector against a real Mosquitto and a real InfluxDB: each test counts what arrived."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import pytest
from services import InfluxDB
from test_collector_support import (
    TS0,
    CollectorThread,
    Publisher,
    big_park,
    readings,
    replay_process,
    settings_for,
    stored,
    wait_connected,
    wait_for,
)

from devstack import SMARTPARK, Stack
from smartpark.park import Park


def retained_status(port: int, instance: str) -> str | None:
    """The collector's retained service status (CONTRACT §2), as a fresh subscriber sees it."""
    out = subprocess.run(["mosquitto_sub", "-p", str(port), "-t", f"park/_sys/collector/{instance}", "-C", "1",
                          "-W", "5"], capture_output=True, text=True).stdout
    return json.loads(out)["status"] if out.strip() else None


def retained_status_wait(port: int, instance: str, timeout: int = 30) -> str | None:
    """Wait for the collector's retained status to exist (it is published once subscribed)."""
    out = subprocess.run(["mosquitto_sub", "-p", str(port), "-t", f"park/_sys/collector/{instance}", "-C", "1",
                          "-W", str(timeout)], capture_output=True, text=True).stdout
    return json.loads(out)["status"] if out.strip() else None


def own_stack(stack_factory: Callable[[], Stack], tmp_path: Path, db_name: str, n: int,
              seed: int) -> tuple[Stack, Path, Park, list[tuple[str, bytes, str, int, float]], InfluxDB]:
    """A stack of the test's own (it stops and starts its services), the park of 500 sensors, ``n`` readings
    over it and a fresh database ``db_name`` on the stack's InfluxDB."""
    stack = stack_factory()
    park_path, park = big_park(tmp_path)
    db = InfluxDB(stack.influx_url, db_name)
    db.create()
    return stack, park_path, park, readings(park, n, seed=seed), db


def count(db: Any) -> int:
    return db.count("reading", "value")


def run_until_stored(cmd: list[str], log: IO[bytes], db: Any, n: int, env: dict[str, str] | None = None) -> None:
    """The collector (``cmd``) started again until ``db`` holds ``n`` points, then stopped by SIGTERM: it
    exits 0."""
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env)
    try:
        wait_for(lambda: count(db) >= n, 120, lambda: f"{count(db)} of {n} points")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


class TestThroughputAndExactness:
    def test_100k_readings_over_500_sensors_arrive_exactly(self, broker: Any, influx_db: Any, tmp_path: Path) -> None:
        """100,000 readings at full speed become exactly 100,000 points with identical values and timestamps."""
        park_path, park = big_park(tmp_path)
        assert len(park) == 500
        sent = readings(park, 100_000)
        settings = settings_for(broker.url, influx_db.url, influx_db.db, park_path, tmp_path / "state")
        with CollectorThread(settings, park) as collector:
            wait_connected(collector)
            pub = replay_process(broker.port, ((t, p) for t, p, *_ in sent), tmp_path)
            assert pub.wait(300) == 0  # every message PUBACKed by the broker
            wait_for(lambda: count(influx_db) >= 100_000, 120, lambda: f"{count(influx_db)} of 100000 points")
        assert count(influx_db) == 100_000
        assert stored(influx_db) == {(k, ts, v) for _, _, k, ts, v in sent}
        assert collector.counters.written == 100_000
        assert collector.counters.invalid == 0
        assert influx_db.count("dead_letter") == 0
        status = influx_db.query('SELECT last("written") AS w, last("received") AS r FROM "collector"')
        assert status[0]["w"] == 100_000 and status[0]["r"] >= 100_000


class TestFailures:
    @pytest.mark.ci
    def test_influxdb_stopped_15s_mid_run_loses_nothing(self, stack_factory: Any, tmp_path: Path) -> None:
        """InfluxDB stopped for 15 s mid-run, then restarted: every reading arrives and the spool drains."""
        stack, park_path, park, sent, db = own_stack(stack_factory, tmp_path, "outage", 20_000, seed=2)
        settings = settings_for(stack.mqtt_url, stack.influx_url, "outage", park_path, tmp_path / "state")
        with CollectorThread(settings, park, write_timeout=3.0) as collector:
            wait_connected(collector)
            pub = Publisher(stack.mqtt_port)
            t = threading.Thread(target=pub.publish, args=([(s[0], s[1]) for s in sent], 800.0))
            t.start()
            wait_for(lambda: count(db) >= 2_000, 60, "the first points")
            stack.stop_influxd()
            time.sleep(15)  # the outage itself: a real InfluxDB is down for 15 s
            assert collector.spool is not None and collector.counters.spooled > 0
            stack.start_influxd()
            t.join()
            pub.wait_acked()
            wait_for(lambda: count(db) >= 20_000, 120, lambda: f"{count(db)} of 20000 points")
            wait_for(lambda: collector.spool is not None and collector.spool.empty, 60, "the spool to drain")
            pub.close()
        assert stored(db) == {(k, ts, v) for _, _, k, ts, v in sent}
        assert collector.counters.retries > 0
        assert not list((tmp_path / "state" / "spool" / "default").glob("*.seg")) or \
            collector.spool.pending_bytes == 0

    @pytest.mark.ci
    def test_broker_restart_mid_run_loses_nothing(self, broker: Any, influx_db: Any, tmp_path: Path) -> None:
        """The broker restarted mid-run (publisher at QoS 1, persistent session): every reading arrives."""
        park_path, park = big_park(tmp_path)
        sent = readings(park, 20_000, seed=3)
        settings = settings_for(broker.url, influx_db.url, influx_db.db, park_path, tmp_path / "state")
        with CollectorThread(settings, park) as collector:
            wait_connected(collector)
            pub = Publisher(broker.port, persistent=True, client_id="pub-restart")
            t = threading.Thread(target=pub.publish, args=([(s[0], s[1]) for s in sent], 2000.0))
            t.start()
            wait_for(lambda: count(influx_db) >= 3_000, 60, "the first points")
            broker.restart()
            t.join()
            pub.wait_acked()
            wait_for(lambda: count(influx_db) >= 20_000, 120, lambda: f"{count(influx_db)} of 20000 points")
            pub.close()
            assert collector.source is not None and collector.source.connects >= 2
        assert stored(influx_db) == {(k, ts, v) for _, _, k, ts, v in sent}

    @pytest.mark.ci
    def test_kill_9_and_restart_loses_nothing_and_duplicates_collapse(self, broker: Any, influx_db: Any,
                                                                       tmp_path: Path) -> None:
        """``kill -9`` of a real ``smartpark collect`` mid-run, started again: all arrive, once; SIGTERM exits 0."""
        park_path, park = big_park(tmp_path)
        sent = readings(park, 30_000, seed=4)
        cmd = [*SMARTPARK, "collect", "--mqtt-url", broker.url, "--influx-url",
               influx_db.url, "--influx-db", influx_db.db, "--park", str(park_path), "--state-dir",
               str(tmp_path / "state"), "--instance", "k9", "--batch-size", "1000"]
        log = open(tmp_path / "collector.log", "ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env)
        try:
            wait_for(lambda: influx_db.count("collector") > 0, 30, "the first collector status point")
            pub = Publisher(broker.port)
            t = threading.Thread(target=pub.publish, args=([(s[0], s[1]) for s in sent], 3000.0))
            t.start()
            wait_for(lambda: count(influx_db) >= 5_000, 60, "the first points")
            proc.kill()
            proc.wait(10)
            wait_for(lambda: retained_status(broker.port, "k9") == "offline", 15, "the last will (offline)")
            t.join()
            pub.wait_acked()
            pub.close()
            run_until_stored(cmd, log, influx_db, 30_000, env)
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()
        assert count(influx_db) == 30_000  # redelivered readings overwrote themselves
        assert stored(influx_db) == {(k, ts, v) for _, _, k, ts, v in sent}
        status = influx_db.query('SELECT "status" FROM "collector"')  # no such field: status is MQTT only
        assert status == []


class TestShareGroup:
    def test_two_collectors_in_one_share_group_split_the_load(self, broker: Any, influx_db: Any,
                                                              tmp_path: Path) -> None:
        """Two collectors in one share group: the union is complete and each took part of the load."""
        park_path, park = big_park(tmp_path)
        sent = readings(park, 20_000, seed=5)
        settings = settings_for(broker.url, influx_db.url, influx_db.db, park_path, tmp_path / "state")
        with CollectorThread(settings, park, instance="a", share_group="g") as a, \
                CollectorThread(settings, park, instance="b", share_group="g") as b:
            wait_connected(a)
            wait_connected(b)
            pub = Publisher(broker.port)
            pub.publish((s[0], s[1]) for s in sent)
            pub.wait_acked()
            wait_for(lambda: count(influx_db) >= 20_000, 120, lambda: f"{count(influx_db)} of 20000 points")
            pub.close()
        assert stored(influx_db) == {(k, ts, v) for _, _, k, ts, v in sent}
        assert a.counters.written > 1_000 and b.counters.written > 1_000
        assert a.counters.written + b.counters.written == 20_000


class TestInvalidInput:
    def test_snapshot_with_one_bad_entry(self, shared_broker: Any, influx_db: Any, tmp_path: Path) -> None:
        """A snapshot with one bad entry: the good entries are stored, the bad one dead-lettered alone."""
        park_path, park = big_park(tmp_path)
        settings = settings_for(shared_broker.url, influx_db.url, influx_db.db, park_path, tmp_path / "state")
        snap = {"ts": TS0, "values": {"s000": 1.5, "s001": "broken", "s002": 3.25}}
        with CollectorThread(settings, park, instance=f"snap{os.getpid()}") as collector:
            wait_connected(collector)
            pub = Publisher(shared_broker.port)
            pub.publish([("park/plant/a07", json.dumps(snap).encode())])
            pub.wait_acked()
            wait_for(lambda: influx_db.count("dead_letter") >= 1 and count(influx_db) >= 2, 30, "the snapshot")
            pub.close()
        assert stored(influx_db) == {("plant/a07/s000", TS0, 1.5), ("plant/a07/s002", TS0, 3.25)}
        dl = influx_db.query('SELECT * FROM "dead_letter"')
        assert len(dl) == 1
        assert dl[0]["reason"] == "bad_value" and dl[0]["topic"] == "park/plant/a07"
        assert "s001" in dl[0]["detail"] and json.loads(dl[0]["payload"]) == {"s001": "broken"}

    def test_metrics_endpoint_counts_what_happened(self, shared_broker: Any, influx_db: Any,
                                                    tmp_path: Path) -> None:
        """/metrics reports received, written and dead letters by reason while the collector runs."""
        park_path, park = big_park(tmp_path)
        settings = settings_for(shared_broker.url, influx_db.url, influx_db.db, park_path, tmp_path / "state")
        from devstack import free_port
        port = free_port()
        with CollectorThread(settings, park, instance=f"met{os.getpid()}", metrics_port=port) as collector:
            wait_connected(collector)
            pub = Publisher(shared_broker.port)
            pub.publish([("park/plant/a00/s000", b'{"value": 5, "ts": %d}' % TS0),
                         ("park/plant/a00/s000", b"not json")])
            pub.wait_acked()
            wait_for(lambda: count(influx_db) >= 1 and influx_db.count("dead_letter") >= 1, 30, "both")
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            pub.close()
        assert "smartpark_collector_written_total 1.0" in text
        assert 'smartpark_collector_dead_letters_total{reason="bad_json"} 1.0' in text
        received = next(float(line.split()[1]) for line in text.splitlines()
                        if line.startswith("smartpark_collector_received_total "))
        assert received >= 2  # the shared broker may also hold other tests' retained service messages
        assert "smartpark_collector_write_seconds_bucket" in text
        assert "smartpark_collector_batch_readings_sum 1.0" in text  # idle flushes are not batches
        assert "smartpark_collector_spool_bytes 0.0" in text


def test_sigint_flushes_and_exits_0(broker: Any, influx_db: Any, tmp_path: Path) -> None:
    """``smartpark collect`` as a subprocess: SIGINT ends it cleanly: exit 0, the reading stored."""
    park_path, _ = big_park(tmp_path)
    from devstack import free_port
    port = free_port()
    cmd = [*SMARTPARK, "collect", "--mqtt-url", broker.url, "--influx-url",
           influx_db.url, "--influx-db", influx_db.db, "--park", str(park_path), "--state-dir",
           str(tmp_path / "state"), "--flush-interval", "60", "--metrics-port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def received() -> float:
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
        except OSError:
            return -1
        return next(float(line.split()[1]) for line in text.splitlines()
                    if line.startswith("smartpark_collector_received_total"))
    try:
        # the retained status topic (CONTRACT §2) says when the collector is subscribed
        online = subprocess.run(["mosquitto_sub", "-p", str(broker.port), "-t", "park/_sys/collector/default",
                                 "-C", "1", "-W", "30"], capture_output=True, text=True)
        assert json.loads(online.stdout)["status"] == "online"
        pub = Publisher(broker.port)
        pub.publish([("park/plant/a01/s001", b'{"value": 7.5, "ts": %d}' % TS0)])
        pub.wait_acked()
        pub.close()
        wait_for(lambda: received() >= 1, 30, "the reading to reach the collector")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert stored(influx_db) == {("plant/a01/s001", TS0, 7.5)}
    offline = subprocess.run(["mosquitto_sub", "-p", str(broker.port), "-t", "park/_sys/collector/default",
                              "-C", "1", "-W", "10"], capture_output=True, text=True)
    assert json.loads(offline.stdout)["status"] == "offline"


class TestBackpressure:
    def test_full_spool_stops_acking_and_the_broker_holds_the_rest(self, stack_factory: Any,
                                                                   tmp_path: Path) -> None:
        """InfluxDB down and the spool full: the collector takes no more (the broker holds the rest, nothing
        is dropped); once InfluxDB is back everything arrives."""
        stack, park_path, park, sent, db = own_stack(stack_factory, tmp_path, "full", 5_000, seed=6)
        settings = settings_for(stack.mqtt_url, stack.influx_url, "full", park_path, tmp_path / "state")
        with CollectorThread(settings, park, batch_size=100, spool_max_mb=0.02, write_timeout=2.0) as collector:
            wait_connected(collector)
            stack.stop_influxd()
            pub = Publisher(stack.mqtt_port)
            pub.publish((s[0], s[1]) for s in sent)
            pub.wait_acked()  # the broker has them all
            spool = collector.spool
            assert spool is not None
            wait_for(lambda: spool.pending_bytes > 0.6 * 0.02 * 1024 * 1024, 60, "the spool to fill")
            held = collector.counters.received
            assert held < 2_500, f"took {held} of 5000 with a full spool and a 400-message window"
            stack.start_influxd()
            wait_for(lambda: count(db) >= 5_000, 120, lambda: f"{count(db)} of 5000 points")
            pub.close()
        assert stored(db) == {(k, ts, v) for _, _, k, ts, v in sent}
        assert collector.counters.received >= 5_000


class TestTlsAndPassword:
    def test_mqtts_with_user_and_password_from_the_url(self, influx_db: Any, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
        """``mqtts://user:password@host:port``: the collector connects over TLS with the URL's credentials."""
        import getpass

        from devstack import free_port
        cert, key, pw = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "passwd"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                        "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key),
                        "-out", str(cert)], check=True, capture_output=True)
        subprocess.run(["mosquitto_passwd", "-b", "-c", str(pw), "reader", "s3cr:et"], check=True)
        port = free_port()
        conf = tmp_path / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {pw}\n"
                        f"certfile {cert}\nkeyfile {key}\nuser {getpass.getuser()}\npersistence false\n")
        broker = subprocess.Popen(["mosquitto", "-c", str(conf)], stderr=subprocess.DEVNULL)
        try:
            monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trust the test's self-signed certificate
            park_path, park = big_park(tmp_path)
            settings = settings_for(f"mqtts://reader:s3cr%3Aet@127.0.0.1:{port}", influx_db.url, influx_db.db,
                                    park_path, tmp_path / "state")
            with CollectorThread(settings, park, instance="tls") as collector:
                wait_connected(collector)
                subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "--cafile", str(cert),
                                "-u", "reader", "-P", "s3cr:et", "-q", "1", "-t", "park/plant/a02/s002", "-m",
                                json.dumps({"value": 2.5, "ts": TS0})], check=True)
                wait_for(lambda: count(influx_db) >= 1, 30, "the reading over TLS")
            # a wrong password is a refusal with the broker's reason code (the service retries it, logged)
            from collector import MqttError, MqttSource
            from smartpark.config import parse_mqtt_url
            bad = MqttSource(parse_mqtt_url(f"mqtts://reader:wrong@127.0.0.1:{port}"), "bad", "park/#")
            with pytest.raises(MqttError) as err:
                asyncio.run(bad._connect())
            assert err.value.reason_code in (0x86, 0x87)  # MQTT 5: bad user name or password, not authorized
        finally:
            broker.kill()
            broker.wait(10)
        assert stored(influx_db) == {("plant/a02/s002", TS0, 2.5)}


class TestSpoolDurability:
    def test_kill_9_with_acked_readings_only_in_the_spool_loses_nothing(self, stack_factory: Any,
                                                                         tmp_path: Path) -> None:
        """Readings acked because they were fsync'd in the spool (InfluxDB down) survive ``kill -9``: the
        next start replays them once InfluxDB is back."""
        stack, park_path, _, sent, db = own_stack(stack_factory, tmp_path, "spoolkill", 5_000, seed=7)
        state = tmp_path / "state"
        cmd = [*SMARTPARK, "collect", "--mqtt-url", stack.mqtt_url, "--influx-url",
               stack.influx_url, "--influx-db", "spoolkill", "--park", str(park_path), "--state-dir", str(state),
               "--instance", "sk", "--batch-size", "500"]
        log = open(tmp_path / "collector.log", "ab")
        proc = subprocess.Popen(cmd, stdout=log, stderr=log)
        try:
            assert retained_status_wait(stack.mqtt_port, "sk") == "online"
            stack.stop_influxd()
            pub = Publisher(stack.mqtt_port)
            pub.publish((s[0], s[1]) for s in sent)
            pub.wait_acked()
            pub.close()
            spool_dir = state / "spool" / "sk"

            def spooled() -> int:
                return sum(p.stat().st_size for p in spool_dir.glob("*.seg"))
            wait_for(lambda: spooled() > 5_000 * 60, 60, lambda: f"the readings in the spool ({spooled()} B)")
            proc.kill()
            proc.wait(10)
            stack.start_influxd()
            run_until_stored(cmd, log, db, 5_000)
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()
        assert stored(db) == {(k, ts, v) for _, _, k, ts, v in sent}
        assert "from a previous run to replay" in (tmp_path / "collector.log").read_text()
