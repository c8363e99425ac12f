"""Load for the collector, shared by its tests and benchmarks: a park of many sensors, readings over it, a
QoS 1 publisher (in this process or through ``smartpark replay``), a collector running in a thread, and
waiting for an outcome."""

from __future__ import annotations

import asyncio
import gzip
import json
import random
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from collector import Collector
from smartpark.config import Settings
from smartpark.park import Park, load_park
from smartpark.topics import SUBSCRIPTION

from .epochs import RECENT_MIDNIGHT_MS
from .stack import SMARTPARK

__all__ = ["TS0", "CollectorThread", "Publisher", "big_park", "readings", "replay_process", "settings_for",
           "wait_connected", "wait_for", "write_park"]

TS0 = RECENT_MIDNIGHT_MS  # inside the raw retention (devstack/epochs.py)


def write_park(path: Path, assets: int = 10, per_asset: int = 50, site: str = "plant") -> Path:
    """A park of ``assets * per_asset`` sensors ``plant/aNN/sNNN``, range [0, 1000] (CONTRACT §4 format)."""
    lines = ["park: {id: test_park, name: Test park, timezone: UTC}", "sites:", f"  - id: {site}",
             "    name: Test plant", "    assets:"]
    for a in range(assets):
        lines += [f"      - id: a{a:02d}", f"        name: Asset {a}", "        sensors:"]
        for s in range(per_asset):
            lines += [f"          - {{id: s{s:03d}, name: Sensor {s}, unit: mg/L, range: [0, 1000], "
                      f"normal: [0, 1000], interval_s: 1}}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def big_park(tmp_path: Path) -> tuple[Path, Park]:
    path = write_park(tmp_path / "park.yaml")
    return path, load_park(path)


def readings(park: Park, n: int, seed: int = 1) -> list[tuple[str, bytes, str, int, float]]:
    """``n`` readings spread over every sensor: (topic, payload, key, ts, value), distinct (key, ts)."""
    rng = random.Random(seed)
    refs = park.sensors()
    out = []
    for i in range(n):
        ref = refs[i % len(refs)]
        ts = TS0 + (i // len(refs)) * 1000
        value = rng.uniform(0, 1000)
        out.append((ref.topic, json.dumps({"value": value, "ts": ts}).encode(), ref.key, ts, value))
    return out


class Publisher:
    """paho-mqtt at QoS 1 in its own network thread; counts PUBACKs. ``persistent`` keeps the session so
    that paho resends what the broker had not acknowledged when the broker restarts."""

    def __init__(self, port: int, *, persistent: bool = False, client_id: str | None = None) -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"pub-{uuid.uuid4().hex[:8]}",
                                  clean_session=not persistent, protocol=paho.MQTTv311)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(1, 2)
        self.acked = 0
        self.sent = 0
        self._lock = threading.Lock()
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()

    def _on_publish(self, *args: Any) -> None:
        with self._lock:
            self.acked += 1

    def publish(self, messages: Iterable[tuple[str, bytes]], rate: float = 0.0) -> None:
        """Publish at QoS 1; ``rate`` messages/s paces a run so that a failure can happen in its middle."""
        start = time.monotonic()
        for topic, payload in messages:
            self.client.publish(topic, payload, qos=1)
            self.sent += 1
            if self.sent - self.acked > 20_000:  # paho's message ids wrap at 65535: stay well below
                while self.sent - self.acked > 10_000:
                    time.sleep(0.005)
            if rate and self.sent % 100 == 0:
                ahead = self.sent / rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)

    def wait_acked(self, timeout: float = 120) -> None:
        wait_for(lambda: self.acked >= self.sent, timeout, lambda: f"{self.acked} of {self.sent} PUBACKs")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def replay_process(port: int, messages: Iterable[tuple[str, bytes]], tmp: Path) -> subprocess.Popen[bytes]:
    """Publish ``messages`` at QoS 1 as fast as the broker takes them, from another process.

    Through the product's own path: a recording file replayed by ``smartpark replay --speed 0``. A paho
    publisher in the test process shares the GIL with the collector thread and publishes 20x slower.
    """
    path = tmp / f"replay-{uuid.uuid4().hex[:8]}.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(json.dumps({"format": "smartpark-recording", "version": 1, "topic": SUBSCRIPTION}) + "\n")
        for i, (topic, payload) in enumerate(messages):
            f.write(json.dumps({"t": i, "topic": topic, "qos": 1, "retain": False, "payload": payload.decode()}) + "\n")
    return subprocess.Popen([*SMARTPARK, "--mqtt-url", f"mqtt://127.0.0.1:{port}", "replay",
                             str(path), "--speed", "0", "--qos", "1"], stdout=subprocess.DEVNULL)


def wait_for(cond: Callable[[], bool], timeout: float, what: Callable[[], str] | str = "condition") -> None:
    """Poll an outcome (not a clock): fail with ``what`` when it does not come within ``timeout``."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what() if callable(what) else what}")
        time.sleep(0.2)


class CollectorThread:
    """A :class:`collector.Collector` running in a thread with its own event loop: ``with`` starts it and
    stops it (SIGTERM path: flush, ack, exit)."""

    def __init__(self, settings: Settings, park: Park, **kw: Any) -> None:
        self.collector = Collector(settings, park, **kw)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        async def go() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._ready.set()
            await self.collector.run(self._stop)
        try:
            asyncio.run(go())
        except BaseException as exc:  # reported by stop()
            self.error = exc
            self._ready.set()

    def __enter__(self) -> Collector:
        self._thread.start()
        self._ready.wait(10)
        return self.collector

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)
        assert not self._thread.is_alive(), "collector did not stop within 60 s"
        if self.error is not None:
            raise self.error


def wait_connected(collector: Collector, timeout: float = 15) -> None:
    wait_for(lambda: collector.source is not None and collector.source.connected.is_set(), timeout,
             "the collector's MQTT subscription")


def settings_for(broker_url: str, influx_url: str, db: str, park: Path | None, state: Path) -> Settings:
    return Settings(mqtt_url=broker_url, influx_url=influx_url, influx_db=db,
                    park=str(park) if park else None, state_dir=str(state))
