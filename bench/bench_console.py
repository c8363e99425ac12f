"""Operator console benchmarks, with Debian's Chromium driven by Playwright against ``smartpark alerts run``
(a subprocess) on a private Mosquitto and InfluxDB.

1. ``latency``: publish -> visible in an open console, at ``--rate`` background readings/s of the whole park,
   beside the webhook latency of the same probe alarms (the same engine notifies a local webhook). A probe
   sensor crosses its limit ``--probe-hz`` times a second; in the page a MutationObserver stamps the moment the
   probe's row appears as UNACK; latency = that moment - the probe reading's ``ts`` (set at publish).
2. ``list``: a generated park with 1,000 alarms active: first render of the active list (navigation start to
   1,000 rows in the DOM), then one alarm event: how many rows the page touched (the others must stay the
   same DOM nodes).
3. ``eval``: the engine's evaluation rate (readings counted by ``/status``) under a flood of readings with no
   console, then with 20 consoles connected (Server-Sent Events clients in another process, each receiving
   every event; alarms toggle during the flood so that events flow), alternated.

    .venv/bin/python bench/bench_console.py [--seconds 20] [--rate 10000] [--probe-hz 4] [--only latency,list,eval]
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
import time
import urllib.request
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_alerts import (  # the sibling benchmark's tools
    LOADGEN,
    PROBE,
    add_latency_args,
    cpu_seconds,
    pct,
    serve_probe_hook,
)

from alerts.users import UserStore
from devstack import SMARTPARK, Stack, free_port
from smartpark.park import load_park, parse_park
from smartpark.topics import sensor_topic

CHROMIUM = os.environ.get("SMARTPARK_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PASSWORD = "bench-password"


class Engine:
    """``smartpark alerts run`` as a subprocess with a console user ``bench`` (supervisor)."""

    def __init__(self, stack: Stack, root: Path, park_file: Path | None = None, webhook: str | None = None) -> None:
        self.api_port = free_port()
        self.url = f"http://127.0.0.1:{self.api_port}"
        state = root / f"state{self.api_port}"
        UserStore(state / "users.yaml").add("bench", "supervisor", PASSWORD)
        self.env = {**os.environ, "SMARTPARK_MQTT_URL": stack.mqtt_url, "SMARTPARK_INFLUX_URL": stack.influx_url,
                    "SMARTPARK_STATE_DIR": str(state), "SMARTPARK_API_URL": self.url}
        if park_file:
            self.env["SMARTPARK_PARK"] = str(park_file)
        cmd = [*SMARTPARK, "alerts", "run", "--instance", f"b{self.api_port}"]
        if webhook:
            cmd += ["--webhook", webhook]
        self.log = (root / f"alerts{self.api_port}.log").open("w")
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        self.token = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            tok = state / "api-token"
            if tok.exists():
                self.token = tok.read_text().strip()
                try:
                    self.status()
                    return
                except OSError:
                    pass
            time.sleep(0.2)
        raise RuntimeError("the engine did not start")

    def status(self) -> dict[str, Any]:
        req = urllib.request.Request(self.url + "/status", headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def stop(self) -> int:
        self.proc.terminate()
        return self.proc.wait(30)


def login(browser: Any, url: str) -> Any:
    ctx = browser.new_context(viewport={"width": 1400, "height": 900}, bypass_csp=True)  # for wait_for_function
    page = ctx.new_page()
    page.goto(url + "/")
    page.fill("#login-user", "bench")
    page.fill("#login-password", PASSWORD)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#live.on", timeout=30_000)
    return page


OBSERVE = """(probe) => { window.__lat = []; const seen = new Set();
  new MutationObserver(() => { const now = Date.now();
    const tr = document.querySelector(`#active-table tr[data-id="${probe}"].UNACK`);
    if (!tr) return; const since = Number(tr.querySelector('td.dur').dataset.since);
    if (since && !seen.has(since)) { seen.add(since); window.__lat.push(now - since); } })
  .observe(document.querySelector('#active-table tbody'), {childList: true, subtree: true}); }"""


def bench_latency(browser: Any, seconds: float, rate: float, probe_hz: float) -> dict[str, Any]:
    park = load_park()
    root = Path(tempfile.mkdtemp(prefix="bench_console_"))
    stack = Stack(root / "stack", mqtt_port=free_port(), influx_port=free_port())
    stack.up()
    hook_lat: list[float] = []
    hook_port = free_port()

    async def serve_hook(stop: asyncio.Event) -> None:
        runner = await serve_probe_hook(hook_port, hook_lat)
        await stop.wait()
        await runner.cleanup()

    import threading

    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    th = threading.Thread(target=loop.run_until_complete, args=(serve_hook(stop),), daemon=True)
    th.start()
    eng = Engine(stack, root, webhook=f"http://127.0.0.1:{hook_port}/hook")
    page = login(browser, eng.url)
    page.evaluate(OBSERVE, f"{PROBE}/h")
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-probe")
    pub.connect("127.0.0.1", stack.mqtt_port)
    pub.loop_start()
    topics = [(r.topic, (r.sensor.normal[0] + r.sensor.normal[1]) / 2, r.sensor.normal[1] - r.sensor.normal[0])
              for r in park if r.key != PROBE]
    gen = subprocess.Popen([sys.executable, "-c", LOADGEN, str(stack.mqtt_port), str(rate), str(seconds + 2),
                            json.dumps(topics)], stdout=subprocess.PIPE, text=True)
    time.sleep(1)
    cpu0, w0 = cpu_seconds(eng.proc.pid), time.monotonic()
    k = 0
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        value = 300.0 if k % 2 == 0 else 150.0
        pub.publish(sensor_topic(PROBE), json.dumps({"value": value, "ts": int(time.time() * 1000)}), qos=1)
        k += 1
        page.wait_for_timeout(1000 / probe_hz / 2)  # lets the page run while waiting
    out, _ = gen.communicate()
    page.wait_for_timeout(2000)
    lat = page.evaluate("window.__lat")
    cpu_s, wall_s = cpu_seconds(eng.proc.pid) - cpu0, time.monotonic() - w0
    page.context.close()
    rc = eng.stop()
    pub.loop_stop()
    loop.call_soon_threadsafe(stop.set)
    th.join(10)
    stack.down()
    probes = (k + 1) // 2
    return {"offered_rate": round(float(out.strip() or 0)), "probes": probes, "console_received": len(lat),
            "console_p50_ms": statistics.median(lat) if lat else None, "console_p99_ms": pct(lat, 99) if lat else None,
            "webhook_received": len(hook_lat),
            "webhook_p50_ms": statistics.median(hook_lat) if hook_lat else None,
            "webhook_p99_ms": pct(hook_lat, 99) if hook_lat else None, "engine_exit": rc,
            "engine_cpu_share": round(cpu_s / wall_s, 3)}


def big_park(n_sensors: int) -> str:
    sensors = "\n".join(
        f"          - {{id: s{i:03d}, name: Sensor {i}, name_zh: 传感器{i}, unit: \"%\", range: [0, 100], "
        f"normal: [20, 60], interval_s: 3600, limits: {{hh: 90, h: 80}}}}" for i in range(n_sensors))
    return f"""park: {{id: big, name: Big park, timezone: Asia/Shanghai}}
sites:
  - id: plant
    name: Plant
    assets:
      - id: unit
        name: Unit
        sensors:
{sensors}
"""


def bench_list(browser: Any, alarms: int = 1000) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="bench_console_list_"))
    park_file = root / "park.yaml"
    park_file.write_text(big_park(alarms // 2))
    park = parse_park(park_file.read_text(), str(park_file))
    stack = Stack(root / "stack", mqtt_port=free_port(), influx_port=free_port())
    stack.up()
    eng = Engine(stack, root, park_file=park_file)
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-list")
    pub.connect("127.0.0.1", stack.mqtt_port)
    pub.loop_start()
    now = int(time.time() * 1000)
    for ref in park:
        pub.publish(ref.topic, json.dumps({"value": 95.0, "ts": now}), qos=1).wait_for_publish()
    deadline = time.monotonic() + 60
    while eng.status()["counts"]["events"] < alarms and time.monotonic() < deadline:
        time.sleep(0.2)
    page = login(browser, eng.url)
    renders: list[float] = []
    phases: list[dict[str, int]] = []
    for _ in range(5):
        page.reload()
        page.wait_for_function(f"document.querySelectorAll('#active-table tbody tr').length >= {alarms}",
                               polling="raf", timeout=60_000)
        renders.append(page.evaluate("performance.now()"))
        phases.append(page.evaluate("""() => { const n = performance.getEntriesByType('navigation')[0];
          const r = Object.fromEntries(performance.getEntriesByType('resource').map(
            (e) => [new URL(e.name).pathname, Math.round(e.responseEnd)]));
          return {dom_ready: Math.round(n.domContentLoadedEventEnd), ...r}; }"""))
    # the list's own rendering, without the network: all rows from scratch (the page's renderActive)
    rerender = page.evaluate("""() => { const t0 = performance.now();
      document.querySelector('#active-table tbody').replaceChildren(); renderActive(); const t1 = performance.now();
      document.body.offsetHeight; return [t1 - t0, performance.now() - t1]; }""")
    # one event: which rows did the page touch?
    page.evaluate("""() => { window.__mut = {added: 0, removed: 0};
      for (const tr of document.querySelectorAll('#active-table tbody tr')) tr.__old = true;
      new MutationObserver((ms) => { for (const m of ms) { window.__mut.added += m.addedNodes.length;
        window.__mut.removed += m.removedNodes.length; } })
      .observe(document.querySelector('#active-table tbody'), {childList: true}); }""")
    first = park.sensors()[0]
    pub.publish(first.topic, json.dumps({"value": 85.0, "ts": int(time.time() * 1000)}), qos=1)
    page.wait_for_function("window.__mut.added > 0", timeout=30_000)
    page.wait_for_timeout(3000)  # the reconciling fetch after an event patches rows too: let it run
    kept = page.evaluate("[...document.querySelectorAll('#active-table tbody tr')].filter(t => t.__old).length")
    rows = page.evaluate("document.querySelectorAll('#active-table tbody tr').length")
    mut = page.evaluate("window.__mut")
    page.context.close()
    eng.stop()
    pub.loop_stop()
    stack.down()
    return {"alarms": alarms, "first_render_ms": [round(x) for x in renders],
            "first_render_median_ms": round(statistics.median(renders)), "phases_ms": phases[-1],
            "render_only_ms": {"script": round(rerender[0]), "layout": round(rerender[1])},
            "update_rows_added": mut["added"], "update_rows_removed": mut["removed"],
            "rows_after": rows, "rows_kept_as_same_nodes": kept}


SSE_CLIENTS = r"""
# n Server-Sent Events consoles on raw sockets in one selector loop: little CPU of their own on the shared cores
import selectors, socket, sys, threading
url, token, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
host, port = url.split("//")[1].split(":")
sel = selectors.DefaultSelector()
got, tail = {}, {}
for i in range(n):
    s = socket.create_connection((host, int(port)))
    s.sendall(f"GET /api/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ, i)
    got[i], tail[i] = 0, b""
print("ready", flush=True)
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.readline(), done.set()), daemon=True).start()
while not done.is_set():
    for key, _ in sel.select(0.2):
        data = tail[key.data] + key.fileobj.recv(1 << 20)
        got[key.data] += data.count(b"\ndata: {\"id\"")
        tail[key.data] = data[-16:]
print(min(got.values()), max(got.values()), flush=True)
"""


def bench_eval(seconds: float, consoles: int = 20, repeat: int = 2) -> dict[str, Any]:
    park = load_park()
    root = Path(tempfile.mkdtemp(prefix="bench_console_eval_"))
    stack = Stack(root / "stack", mqtt_port=free_port(), influx_port=free_port())
    stack.up()
    eng = Engine(stack, root)
    topics = [(r.topic, (r.sensor.normal[0] + r.sensor.normal[1]) / 2, r.sensor.normal[1] - r.sensor.normal[0])
              for r in park if r.key != PROBE]
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-eval")
    pub.connect("127.0.0.1", stack.mqtt_port)
    pub.loop_start()
    runs: list[dict[str, Any]] = []
    for i in range(repeat * 2):
        n = consoles if i % 2 else 0
        clients = None
        if n:
            clients = subprocess.Popen([sys.executable, "-c", SSE_CLIENTS, eng.url, eng.token, str(n)],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert clients.stdout is not None and clients.stdin is not None
            clients.stdout.readline()
            time.sleep(1)
        r0, e0 = eng.status()["counts"]["readings"], eng.status()["counts"]["events"]
        c0 = cpu_seconds(eng.proc.pid)
        gen = subprocess.Popen([sys.executable, "-c", LOADGEN, str(stack.mqtt_port), "60000", str(seconds),
                                json.dumps(topics)], stdout=subprocess.PIPE, text=True)
        t0 = time.monotonic()
        k = 0
        while gen.poll() is None:  # alarms toggle through the flood: events reach the consoles
            pub.publish(sensor_topic(PROBE), json.dumps({"value": 300.0 if k % 2 == 0 else 150.0,
                                                     "ts": int(time.time() * 1000)}), qos=1)
            k += 1
            time.sleep(0.05)
        offered = float(gen.communicate()[0].strip() or 0)
        dt = time.monotonic() - t0
        st = eng.status()["counts"]
        rate = (st["readings"] - r0) / dt
        while True:  # the backlog drains: then every reading of the run is evaluated and its CPU counted
            time.sleep(1)
            later = eng.status()["counts"]
            if later["readings"] == st["readings"]:
                break
            st = later
        cpu = cpu_seconds(eng.proc.pid) - c0
        run = {"consoles": n, "evaluated_per_s": round(rate), "offered_per_s": round(offered),
               "events": st["events"] - e0,
               "evaluated_per_cpu_s": round((st["readings"] - r0) / cpu) if cpu else None}
        if clients is not None:
            assert clients.stdin is not None and clients.stdout is not None
            clients.stdin.write("\n")
            clients.stdin.flush()
            run["events_per_console_min_max"] = clients.stdout.readline().split()
            clients.terminate()
        runs.append(run)
    eng.stop()
    pub.loop_stop()
    stack.down()
    none = [r["evaluated_per_s"] for r in runs if r["consoles"] == 0]
    some = [r["evaluated_per_s"] for r in runs if r["consoles"]]
    cpu_none = [r["evaluated_per_cpu_s"] for r in runs if r["consoles"] == 0]
    cpu_some = [r["evaluated_per_cpu_s"] for r in runs if r["consoles"]]
    return {"runs": runs, "wall_ratio_of_medians": round(statistics.median(some) / statistics.median(none), 3),
            "cpu_ratio_of_medians": round(statistics.median(cpu_some) / statistics.median(cpu_none), 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    add_latency_args(ap, probe_hz=4)
    ap.add_argument("--eval-seconds", type=float, default=10)
    ap.add_argument("--eval-repeat", type=int, default=3, help="pairs of runs without / with consoles")
    ap.add_argument("--only", default="latency,list,eval")
    a = ap.parse_args()
    from playwright.sync_api import sync_playwright

    only = set(a.only.split(","))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        if "latency" in only:
            print(json.dumps({"latency": bench_latency(browser, a.seconds, a.rate, a.probe_hz)}), flush=True)
        if "list" in only:
            print(json.dumps({"list": bench_list(browser)}), flush=True)
        browser.close()
    if "eval" in only:
        print(json.dumps({"eval": bench_eval(a.eval_seconds, repeat=a.eval_repeat)}), flush=True)


if __name__ == "__main__":
    main()
