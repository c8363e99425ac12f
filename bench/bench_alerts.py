"""Alarm-engine benchmarks.

1. Evaluation throughput on one core: ``Engine.process`` over simulated readings of the whole park
   (normal operation), against a ceiling measured in the same run: a Python loop that only dispatches
   each reading to a method and indexes per-sensor state (what any per-reading engine must at least do).
2. Publish -> webhook latency: ``smartpark alerts run --webhook`` as a subprocess on a private Mosquitto
   and InfluxDB, a load generator process publishing ``--rate`` readings/s of the whole park, and a probe
   sensor crossing its limit ``--probe-hz`` times a second; latency = webhook receive time - the probe
   reading's ``ts`` (set at publish). Ceiling in the same run: the same probe messages received by a plain
   MQTT subscriber (broker round trip under the same load).

    .venv/bin/python bench/bench_alerts.py [--seconds 20] [--rate 10000] [--eval-readings 300000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
from aiohttp import web
from paho.mqtt.enums import CallbackAPIVersion

from alerts import Engine, EventClock
from devstack import SMARTPARK, Stack, free_port
from simulators import Simulator
from smartpark.decode import Decoder, Reading
from smartpark.park import Park, load_park
from smartpark.topics import sensor_topic

PROBE = "hw_center/quench_tower/outlet_temp"  # h 200, hh 230
LOADGEN = r"""
# raw MQTT 3.1.1 QoS 0 publisher: pre-built packets written in batches, so that the load generator itself
# takes little CPU on the shared 2-core machine (paho spends ~30 us per publish)
import json, socket, sys, time, random
from smartpark.mqtt.codec import connect_packet, publish_packet
port, rate, seconds, topics = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), json.loads(sys.argv[4])
s = socket.create_connection(("127.0.0.1", port))
s.sendall(connect_packet("loadgen", 4, keepalive=60, clean_start=True, session_expiry=0, receive_maximum=100,
                         will=None, username=None, password=None))
s.recv(4)  # CONNACK
sent, t0, i = 0, time.monotonic(), 0
while time.monotonic() - t0 < seconds:
    due = int((time.monotonic() - t0) * rate)
    ts = int(time.time() * 1000)
    buf = []
    while sent < due:
        topic, mid, width = topics[i % len(topics)]
        i += 1
        v = mid + random.uniform(-0.01, 0.01) * width  # inside the normal band: background, not alarms
        buf.append(publish_packet(topic, b'{"value": %.6g, "ts": %d}' % (v, ts), 4))
        sent += 1
    if buf:
        s.sendall(b"".join(buf))
    time.sleep(0.002)
s.sendall(b"\xe0\x00")
print(sent / (time.monotonic() - t0))
"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), to show how much of a core the engine needs."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def park_readings(park: Park, n: int) -> list[Reading]:
    """``n`` decoded readings of the whole park in normal operation (the simulator, seed 1)."""
    dec = Decoder(park)
    readings: list[Reading] = []
    dur = 600
    while len(readings) < n:
        readings = []
        for m in Simulator(park, seed=1).messages(dur):
            readings += dec.decode(m.topic, m.payload, m.ts_ms).readings
        dur *= 2
    return readings[:n]


def bench_eval(n: int) -> dict[str, float]:
    park = load_park()
    readings = park_readings(park, n)

    class Ceiling:
        def __init__(self) -> None:
            self.state = [[0, 0.0] for _ in range(len(park))]

        def process(self, r: Reading) -> list[object]:
            s = self.state[r.ref.index]
            if r.ts_ms <= s[0]:
                return []
            s[0] = r.ts_ms
            s[1] = r.value
            return []

    def timed(fn: Callable[[Reading], object]) -> float:
        best = 0.0
        for _ in range(3):
            t = time.perf_counter()
            for r in readings:
                fn(r)
            best = max(best, len(readings) / (time.perf_counter() - t))
        return best

    ceiling = timed(Ceiling().process)
    engines = [Engine(park, None, EventClock()) for _ in range(3)]
    best = 0.0
    for e in engines:  # a fresh engine per repeat: readings older than the newest are (rightly) skipped
        t = time.perf_counter()
        for r in readings:
            e.process(r)
        best = max(best, len(readings) / (time.perf_counter() - t))
    events = sum(len(x) for x in [engines[0].active()])
    return {"readings": len(readings), "engine_per_s": best, "ceiling_per_s": ceiling,
            "ratio": best / ceiling, "active_alarms_after": events}


async def serve_probe_hook(port: int, lat: list[float]) -> web.AppRunner:
    """A local webhook on ``port`` (path ``/hook``) that appends to ``lat`` the milliseconds from the probe's
    reading to the arrival of its raised H alarm; the caller cleans the returned runner up."""
    async def hook(request: web.Request) -> web.Response:
        now = time.time() * 1000
        ev = await request.json()
        if ev["id"] == f"{PROBE}/h" and ev["event"] == "raised":
            lat.append(now - ev["ts"])
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def bench_latency(seconds: float, rate: float, probe_hz: float) -> dict[str, float | list[float]]:
    park = load_park()
    root = Path(tempfile.mkdtemp(prefix="bench_alerts_"))
    stack = Stack(root / "stack", mqtt_port=free_port(), influx_port=free_port())
    stack.up()
    lat: list[float] = []
    base: list[float] = []
    hook_port = free_port()
    runner = await serve_probe_hook(hook_port, lat)
    env = {**os.environ, "SMARTPARK_MQTT_URL": stack.mqtt_url, "SMARTPARK_INFLUX_URL": stack.influx_url,
           "SMARTPARK_STATE_DIR": str(root / "state"), "SMARTPARK_API_URL": f"http://127.0.0.1:{free_port()}"}
    cmd = [*SMARTPARK, "alerts", "run", "--webhook", f"http://127.0.0.1:{hook_port}/hook"]
    log = (root / "alerts.log").open("w")
    eng = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)  # noqa: ASYNC220  # only forks
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-sub")

    def on_message(c: object, u: object, m: mqtt.MQTTMessage) -> None:
        base.append(time.time() * 1000 - json.loads(m.payload)["ts"])
    sub.on_message = on_message
    sub.connect("127.0.0.1", stack.mqtt_port)
    sub.subscribe(sensor_topic(PROBE), qos=1)
    sub.loop_start()
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-probe")
    pub.connect("127.0.0.1", stack.mqtt_port)
    pub.loop_start()
    await asyncio.sleep(3)  # the engine starts (imports, subscription)
    topics = [(r.topic, (r.sensor.normal[0] + r.sensor.normal[1]) / 2, r.sensor.normal[1] - r.sensor.normal[0])
              for r in park if r.key != PROBE]
    cmd = [sys.executable, "-c", LOADGEN, str(stack.mqtt_port), str(rate), str(seconds + 2), json.dumps(topics)]
    gen = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)  # noqa: ASYNC220  # only forks
    await asyncio.sleep(1)
    cpu0, w0 = cpu_seconds(eng.pid), time.monotonic()
    t_end = time.monotonic() + seconds
    k = 0
    while time.monotonic() < t_end:
        value = 300.0 if k % 2 == 0 else 150.0
        pub.publish(sensor_topic(PROBE), json.dumps({"value": value, "ts": int(time.time() * 1000)}), qos=1)
        k += 1
        await asyncio.sleep(1 / probe_hz / 2)
    out, _ = await asyncio.to_thread(gen.communicate)
    await asyncio.sleep(2)
    cpu_s = cpu_seconds(eng.pid) - cpu0
    wall_s = time.monotonic() - w0
    eng.terminate()
    rc = await asyncio.to_thread(eng.wait, 30)
    pub.loop_stop()
    sub.loop_stop()
    await runner.cleanup()
    stack.down()
    raised_base = base[0::2]  # the probe's high readings (every other message)
    return {"offered_rate": float(out.strip() or 0), "probes": (k + 1) // 2, "received": len(lat),
            "p50_ms": statistics.median(lat) if lat else float("nan"), "p99_ms": pct(lat, 99) if lat else float("nan"),
            "mqtt_p50_ms": statistics.median(raised_base) if raised_base else float("nan"),
            "mqtt_p99_ms": pct(raised_base, 99) if raised_base else float("nan"), "engine_exit": rc,
            "engine_cpu_share": round(cpu_s / wall_s, 3),
            "latencies_ms": [round(x, 1) for x in lat]}


def add_latency_args(ap: argparse.ArgumentParser, probe_hz: float) -> None:
    """The options of a latency run: its length, the background load and the probe's rate."""
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--rate", type=float, default=10_000)
    ap.add_argument("--probe-hz", type=float, default=probe_hz)


def main() -> None:
    ap = argparse.ArgumentParser()
    add_latency_args(ap, probe_hz=2)
    ap.add_argument("--eval-readings", type=int, default=300_000)
    ap.add_argument("--skip-latency", action="store_true")
    a = ap.parse_args()
    ev = bench_eval(a.eval_readings)
    print(json.dumps({"evaluation": ev}))
    if not a.skip_latency:
        lt = asyncio.run(bench_latency(a.seconds, a.rate, a.probe_hz))
        print(json.dumps({"latency": lt}))


if __name__ == "__main__":
    threading.excepthook = lambda args: None
    main()
