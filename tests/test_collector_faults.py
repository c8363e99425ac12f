"""The collector when its neighbours misbehave without going away: InfluxDB answering 429 and 503, a broker
that is down for a while, frozen, or without MQTT 5, and a flood of invalid messages larger than the in-flight
window.

InfluxDB 1.6 cannot be made to answer 429 or 503 on demand, nor mosquitto 2 to refuse MQTT 5, so
:class:`FaultyInflux` and :class:`Mqtt311OnlyBroker` stand in front of the real servers: they answer what the
test plans and pass everything else through to them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
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

from devstack import free_port
from smartpark.config import parse_mqtt_url
from smartpark.mqtt import MqttSource


class _ServerThread:
    """An asyncio server of the test in a thread with its own loop: ``with`` starts it, leaving stops it."""

    def __init__(self) -> None:
        self.port = free_port()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def serve(self) -> Any:
        """Start serving on ``self.port``; return what :meth:`shutdown` needs."""
        raise NotImplementedError

    async def shutdown(self, server: Any) -> None:
        raise NotImplementedError

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        server = await self.serve()
        self._ready.set()
        await self._stop.wait()
        await self.shutdown(server)

    def __enter__(self) -> Any:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


class FaultyInflux(_ServerThread):
    """An HTTP proxy to a real InfluxDB that answers the first ``/write`` requests from ``plan``, a list of
    (status, Retry-After or None), and forwards every other request. ``writes`` records (monotonic time,
    status answered) of each ``/write``."""

    def __init__(self, upstream: str, plan: list[tuple[int, str | None]]) -> None:
        super().__init__()
        self.upstream = upstream.rstrip("/")
        self.plan = list(plan)
        self.writes: list[tuple[float, int]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.Response:
        arrived = time.monotonic()
        body = await request.read()
        if request.path == "/write" and self.plan:
            status, after = self.plan.pop(0)
            self.writes.append((arrived, status))
            headers = {"Retry-After": after} if after is not None else {}
            return web.json_response({"error": "planned fault"}, status=status, headers=headers)
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() in ("content-type", "content-encoding", "authorization")}
        async with self._session.request(request.method, self.upstream + request.path_qs, data=body,
                                          headers=headers) as up:
            data = await up.read()
            if request.path == "/write":
                self.writes.append((arrived, up.status))
            return web.Response(status=up.status, body=data, content_type=up.content_type if data else None)

    async def serve(self) -> Any:
        self._session = aiohttp.ClientSession()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        return runner

    async def shutdown(self, server: Any) -> None:
        await server.cleanup()
        await self._session.close()


class Mqtt311OnlyBroker(_ServerThread):
    """A real mosquitto behind a front that behaves as a broker without MQTT 5 (mosquitto < 1.6, many
    gateways): an MQTT 5 CONNECT gets CONNACK return code 0x01 (unacceptable protocol version) and the
    connection is closed, as MQTT 3.1.1 §3.2.2.3 says; a 3.1.1 connection is passed through to mosquitto."""

    def __init__(self, upstream_port: int) -> None:
        super().__init__()
        self.upstream_port = upstream_port
        self.refused = 0
        self.passed = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readexactly(1)
            length, shift, size = 0, 0, b""
            while True:
                b = await reader.readexactly(1)
                size += b
                length |= (b[0] & 0x7F) << shift
                shift += 7
                if not b[0] & 0x80:
                    break
            body = await reader.readexactly(length)
            if head != b"\x10" or body[:6] != b"\x00\x04MQTT":
                return
            if body[6] != 4:
                self.refused += 1
                writer.write(b"\x20\x02\x00\x01")
                await writer.drain()
                return
            self.passed += 1
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            up_writer.write(head + size + body)

            async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
                try:
                    while data := await src.read(65536):
                        dst.write(data)
                        await dst.drain()
                finally:
                    dst.close()
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def serve(self) -> Any:
        return await asyncio.start_server(self.handle, "127.0.0.1", self.port)

    async def shutdown(self, server: Any) -> None:
        server.close()


def test_429_and_503_are_retried_after_the_time_influxdb_asks_for(influx_db: Any, shared_broker: Any,
                                                                   tmp_path: Path) -> None:
    """429 and 503 keep the batch (spooled, acked once durable) and it is written again, never sooner than
    InfluxDB's Retry-After; every reading arrives."""
    park_path, park = big_park(tmp_path)
    plan = [(429, "2"), (503, "1"), (503, None), (500, None)]
    sent = readings(park, 300, seed=11)
    with FaultyInflux(influx_db.url, plan) as proxy:
        settings = settings_for(shared_broker.url, proxy.url, influx_db.db, park_path, tmp_path / "state")
        with CollectorThread(settings, park, instance=f"ra{os.getpid()}", flush_interval=0.2,
                             write_concurrency=1) as collector:  # one write at a time: a clear order
            wait_connected(collector)
            pub = Publisher(shared_broker.port)
            pub.publish((topic, payload) for topic, payload, *_ in sent)
            pub.wait_acked()
            wait_for(lambda: influx_db.count("reading") >= len(sent), 60,
                     lambda: f"{influx_db.count('reading')} of {len(sent)} points; writes {proxy.writes}")
            pub.close()
        writes = list(proxy.writes)
    assert stored(influx_db) == {(k, ts, v) for _, _, k, ts, v in sent}
    assert [status for _, status in writes[:4]] == [429, 503, 503, 500]
    assert writes[4][1] == 204
    # the write after an answer with Retry-After comes no sooner than it asked
    for (t, _), (t_next, _), (_, after) in zip(writes, writes[1:], plan):
        if after is not None:
            assert t_next - t >= float(after) - 0.05, f"retried {t_next - t:.2f} s after a Retry-After of {after} s"
    assert collector.counters.retries >= 3  # the first failure is the direct write; three replays failed
    assert collector.counters.spooled >= len(sent)


def test_broker_down_reconnect_attempts_are_logged_then_collection_resumes(
        broker: Any, influx_db: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """With the broker down, every reconnect attempt is a log line (numbered, full-jitter delays within the
    cap); once it is back the collector subscribes again and readings arrive: never a silent stall."""
    caplog.set_level(logging.INFO, logger="smartpark.mqtt")
    park_path, park = big_park(tmp_path)
    settings = settings_for(broker.url, influx_db.url, influx_db.db, park_path, tmp_path / "state")
    pattern = re.compile(r"reconnect attempt (\d+) in ([\d.]+) s")
    with CollectorThread(settings, park, instance="down") as collector:
        wait_connected(collector)
        broker.stop()

        def attempts() -> list[tuple[int, float]]:
            return [(int(m[1]), float(m[2])) for m in pattern.finditer(caplog.text)]
        wait_for(lambda: len(attempts()) >= 4, 60, lambda: f"reconnect attempts, logged so far: {attempts()}")
        broker.start()
        assert collector.source is not None
        wait_for(lambda: collector.source is not None and collector.source.connects >= 2, 60, "the reconnection")
        sent = readings(park, 200, seed=12)
        pub = Publisher(broker.port)
        pub.publish((topic, payload) for topic, payload, *_ in sent)
        pub.wait_acked()
        wait_for(lambda: influx_db.count("reading") >= len(sent), 60, "the readings after the reconnection")
        pub.close()
        reconnects = collector.metrics.registry.get_sample_value("smartpark_collector_mqtt_reconnects_total")
    seen = attempts()
    assert [n for n, _ in seen] == list(range(1, len(seen) + 1))
    assert all(0 <= delay <= min(15.0, 0.2 * 2 ** n) for n, delay in seen)
    assert stored(influx_db) == {(k, ts, v) for _, _, k, ts, v in sent}
    assert reconnects == 1
    assert sum("subscribed to 'park/#'" in r.getMessage() for r in caplog.records) == 2


def test_frozen_broker_is_noticed_by_keepalive_and_left(broker: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A broker that stops answering (SIGSTOP: the TCP connection stays open) is noticed within 1.5 keep-alive
    periods and the connection dropped; once it answers again the subscription delivers."""
    caplog.set_level(logging.INFO, logger="smartpark.mqtt")
    pid = broker.pid
    assert pid is not None

    async def go() -> bytes:
        src = MqttSource(parse_mqtt_url(broker.url), "frozen-test", "park/frozen/#", keepalive=2,
                         backoff_cap=1.0)
        stop = asyncio.Event()
        async with src:
            task = asyncio.create_task(src.run(stop))
            async with asyncio.timeout(15):
                await src.connected.wait()
            os.kill(pid, signal.SIGSTOP)
            try:
                async with asyncio.timeout(20):
                    while "no answer from the broker" not in caplog.text:
                        await asyncio.sleep(0.1)
                assert not src.connected.is_set()
            finally:
                os.kill(pid, signal.SIGCONT)
            async with asyncio.timeout(30):
                while src.connects < 2 or not src.connected.is_set():
                    await asyncio.sleep(0.1)
            await asyncio.to_thread(subprocess.run, ["mosquitto_pub", "-p", str(broker.port), "-q", "1", "-t",
                                                     "park/frozen/x", "-m", "after the thaw"], check=True)
            messages = await src.take(10, 10)
            src.ack(messages)
            stop.set()
            await task
        return b"".join(m.payload for m in messages)

    assert asyncio.run(go()) == b"after the thaw"


def test_invalid_flood_larger_than_the_in_flight_window_does_not_block_good_readings(
        shared_broker: Any, influx_db: Any, tmp_path: Path) -> None:
    """2,000 invalid messages through a 20-message in-flight window: each is dead-lettered and acked, so the
    good readings published after them still arrive (Telegraf stops consuming in this case)."""
    park_path, park = big_park(tmp_path)
    settings = settings_for(shared_broker.url, influx_db.url, influx_db.db, park_path, tmp_path / "state")
    good = readings(park, 100, seed=13)
    junk = [(f"park/plant/a08/s{i % 50:03d}", b"{not json %d" % i) for i in range(2_000)]
    with CollectorThread(settings, park, instance=f"flood{os.getpid()}", batch_size=10,
                         receive_maximum=20) as collector:
        wait_connected(collector)
        pub = Publisher(shared_broker.port)
        pub.publish(junk)
        pub.publish((topic, payload) for topic, payload, *_ in good)
        pub.wait_acked()
        wait_for(lambda: influx_db.count("reading") >= len(good), 120,
                 lambda: f"{influx_db.count('reading')} of {len(good)} good readings, "
                         f"{influx_db.count('dead_letter')} dead letters")
        wait_for(lambda: influx_db.count("dead_letter") >= len(junk), 60, "the dead letters")
        pub.close()
    assert stored(influx_db) == {(k, ts, v) for _, _, k, ts, v in good}
    reasons = influx_db.query('SELECT count("payload") FROM "dead_letter" GROUP BY "reason"')
    assert {r["reason"]: r["count"] for r in reasons} == {"bad_json": len(junk)}
    assert collector.counters.invalid == len(junk)


def test_broker_without_mqtt_5_gets_mqtt_3_1_1(broker: Any, influx_db: Any, tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """A broker that refuses MQTT 5 (CONNACK 0x01): the collector falls back to 3.1.1 on its own, logs it, and
    collects as usual."""
    caplog.set_level(logging.INFO, logger="smartpark.mqtt")
    park_path, park = big_park(tmp_path)
    sent = readings(park, 500, seed=14)
    with Mqtt311OnlyBroker(broker.port) as front:
        settings = settings_for(f"mqtt://127.0.0.1:{front.port}", influx_db.url, influx_db.db, park_path,
                                tmp_path / "state")
        with CollectorThread(settings, park, instance="old") as collector:
            wait_connected(collector)
            pub = Publisher(broker.port)
            pub.publish((topic, payload) for topic, payload, *_ in sent)
            pub.wait_acked()
            wait_for(lambda: influx_db.count("reading") >= len(sent), 60, "the readings over MQTT 3.1.1")
            pub.close()
        refused, passed = front.refused, front.passed
    assert stored(influx_db) == {(k, ts, v) for _, _, k, ts, v in sent}
    assert refused == 1 and passed == 1
    assert "falling back to 3.1.1" in caplog.text and "(MQTT 3.1.1, session new)" in caplog.text
