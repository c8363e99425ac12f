"""Benchmark of ``smartpark collect`` against the ceilings of this machine, all measured in one run.

    .venv/bin/python bench/bench_collector.py [--n 200000] [--repeat 3] [--batch-size 5000] [--only c,d]

(a) broker ceiling: mosquitto_pub -> mosquitto_sub at QoS 1; (b) InfluxDB ceiling: batches of 5,000 points
over one connection; (c) ``smartpark collect`` end to end, single readings at QoS 1 until all are
queryable, msgs/s and peak RSS; (d) the same with snapshots of 20 readings, readings/s. Also the bare
subscribers (paho loop, aiomqtt, smartpark.mqtt) and the bare writers (aiohttp, httpx) for the measured
choices. Every figure is reported with its ratio to the ceilings of the same run (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from collector_ceilings import (
    TS0,
    bare_aiomqtt,
    bare_paho,
    bare_source,
    broker_ceiling,
    count_points,
    influx_ceiling,
    publish_lines,
    split_jobs,
    wait_until_written,
    writer_aiohttp,
    writer_httpx,
)

from devstack import SMARTPARK, Stack, free_port
from devstack.load import write_park
from smartpark.topics import reading_topic, snapshot_topic


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_collector(stack: Stack, park: Path, state: Path, db: str, n: int, jobs: list[tuple[str, list[str]]],
                  readings: int, batch_size: int, profile: str | None = None) -> dict[str, float]:
    """Start ``smartpark collect``, publish ``jobs``, wait until ``readings`` points are queryable."""
    cmd = [*SMARTPARK, "collect", "--mqtt-url", stack.mqtt_url, "--influx-url",
           stack.influx_url, "--influx-db", db, "--park", str(park), "--state-dir", str(state),
           "--instance", db, "--batch-size", str(batch_size)]
    proc = subprocess.Popen(cmd, stderr=open(state / f"{db}.log", "ab"))
    spy = None
    if profile:  # collapsed stacks of the collector until it exits
        spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-o", profile, "-f", "raw",
                                "-r", "200", "--pid", str(proc.pid)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        while count_points(stack.influx_url, db, "collector", "received") == 0:
            time.sleep(0.2)
            if proc.poll() is not None:
                raise RuntimeError(f"collector exited {proc.returncode}; see {state}/{db}.log")
        t0 = time.perf_counter()
        publish_lines(stack.mqtt_port, jobs)
        published = time.perf_counter() - t0
        # Waiting must not steal the CPU being measured: InfluxQL count() polls over the growing database
        # doubled influxd's CPU per point (bench/collector_cpu_probe.py). Poll InfluxDB's own write counter
        # instead (the same moment the ceiling (b) measures: its points are written), then confirm by query.
        try:
            elapsed = wait_until_written(stack.influx_url, db, readings) - t0
        except TimeoutError as exc:  # readings lost: reported below, with the count
            print(f"{db}: {exc}", flush=True)
            elapsed = float("nan")
        if count_points(stack.influx_url, db) < readings and elapsed == elapsed:
            # the counter ran ahead of the data (duplicates count twice): time the queries instead
            while count_points(stack.influx_url, db) < readings and time.perf_counter() - t0 < 600:
                time.sleep(0.02)
            elapsed = time.perf_counter() - t0
        rss = peak_rss_mb(proc.pid)
        time.sleep(1.5)  # let a straggler (a duplicate would be one) show up before counting for good
        got = count_points(stack.influx_url, db)
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
        if spy is not None:
            spy.wait(60)
    return {"rate": readings / elapsed, "seconds": elapsed, "publish_seconds": published, "points": got,
            "lost": readings - got, "peak_rss_mb": rss, "exit": rc, "messages": n}


def snapshot_jobs(n_readings: int, per_msg: int = 20, assets: int = 4) -> list[tuple[str, list[str]]]:
    msgs = n_readings // per_msg
    per_asset = msgs // assets
    jobs = []
    for a in range(assets):
        lines = [json.dumps({"ts": TS0 + i, "values": {f"s{s:03d}": round(1 + (i + s) % 900 * 0.5, 1)
                                                          for s in range(per_msg)}}) for i in range(per_asset)]
        jobs.append((snapshot_topic("plant", f"a{a:02d}"), lines))
    return jobs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=5000)
    ap.add_argument("--bare-n", type=int, default=100_000)
    ap.add_argument("--only", default="a,b,c,d,bare,writers")
    ap.add_argument("--profile", help="py-spy profiles of the first (c) and (d) runs: PREFIX.c.json, PREFIX.d.json")
    args = ap.parse_args()
    only = set(args.only.split(","))
    if args.n % 80:  # else (c) and (d) would publish fewer and wait for all n
        ap.error(f"--n {args.n}: the readings go to 4 publishers, in snapshots of 20 for (d): give a multiple of 80")
    tmp = Path(tempfile.mkdtemp(prefix="bench_collector_"))
    stack = Stack(tmp / "stack", mqtt_port=free_port(), influx_port=free_port())
    stack.up()
    park = write_park(tmp / "park.yaml")
    res: dict[str, object] = {"n": args.n, "repeat": args.repeat, "batch_size": args.batch_size,
                              "cpus": os.cpu_count(), "load": os.getloadavg()}
    try:
        def med(key: str, fn: Callable[..., float]) -> float:
            runs = [fn() for _ in range(args.repeat)]
            res[key + "_runs"] = [round(r) for r in runs]
            res[key] = median = statistics.median(runs)
            print(f"{key}: {median:,.0f} {res[key + '_runs']}", flush=True)
            return median

        a = med("a_broker_msgs_s", lambda: broker_ceiling(stack.mqtt_port, args.n)) if "a" in only else 1.0
        b = (med("b_influx_points_s", lambda: influx_ceiling(stack.influx_url, f"ceil{time.time_ns()}", args.n))
             if "b" in only else 1.0)
        def collect(kind: str, messages: int, jobs_for_run: Callable[[], list[tuple[str, list[str]]]],
                    rate_key: str, ceiling: float, ratio_key: str) -> None:
            """(c) or (d): ``repeat`` runs of ``smartpark collect``, each into a database of its own."""
            runs = []
            for r in range(args.repeat):
                profile = args.profile + f".{kind}.json" if args.profile and r == 0 else None
                runs.append(run_collector(stack, park, tmp, f"{kind}{r}_{time.time_ns()}", messages, jobs_for_run(),
                                          args.n, args.batch_size, profile))
                print(f"{kind}:", runs[-1], flush=True)
            res[f"{kind}_runs"] = runs
            res[rate_key] = rate = statistics.median(x["rate"] for x in runs)
            res[ratio_key] = rate / ceiling
            res[f"{kind}_lost_total"] = sum(x["lost"] for x in runs)
            res[f"{kind}_peak_rss_mb"] = max(x["peak_rss_mb"] for x in runs)

        if "c" in only:
            singles = [reading_topic("plant", f"a0{k}", f"s00{k}") for k in range(4)]
            collect("c", args.n, lambda: split_jobs(args.n, singles),
                    "c_collect_msgs_s", a, "c_ratio_to_a")
        if "d" in only:
            collect("d", args.n // 20, lambda: snapshot_jobs(args.n), "d_collect_readings_s", b, "d_ratio_to_b")
        if "bare" in only:
            def pub() -> None:
                publish_lines(stack.mqtt_port, split_jobs(args.bare_n, [f"bare/t{k}" for k in range(4)]))
            for name, fn in (("paho_loop", bare_paho), ("aiomqtt", bare_aiomqtt), ("collector_mqtt", bare_source)):
                rate = med(f"bare_{name}_msgs_s", lambda fn=fn: fn(stack.mqtt_port, args.bare_n, pub))
                res[f"bare_{name}_ratio_to_a"] = rate / a
        if "writers" in only:
            for name, writer in (("aiohttp", writer_aiohttp), ("httpx", writer_httpx)):
                rate = med(f"writer_{name}_points_s", lambda writer=writer, name=name: writer(
                    stack.influx_url, f"w{name}{time.time_ns()}", args.n))
                res[f"writer_{name}_ratio_to_b"] = rate / b
    finally:
        stack.down()
    print(json.dumps(res, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
