"""CPU accounting of one (d) run: who uses the two cores while 200,000 snapshot readings go through.

    .venv/bin/python bench/collector_cpu_probe.py [--n 200000]

Prints wall time, CPU seconds of the collector, influxd, mosquitto and the mosquitto_pub publishers, and the
collector's own write time and batch count from its /metrics.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from bench_collector import snapshot_jobs
from collector_ceilings import count_points, publish_lines, wait_until_written

from devstack import SMARTPARK, Stack, free_port
from devstack.load import write_park

METRICS = ("smartpark_collector_write_seconds_sum", "smartpark_collector_write_seconds_count",
           "smartpark_collector_batch_readings_count")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().split()
    return (int(fields[13]) + int(fields[14])) / 100


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000)
    N = ap.parse_args().n
    tmp = Path(tempfile.mkdtemp(prefix="collector_probe_"))
    stack = Stack(tmp / "stack", mqtt_port=free_port(), influx_port=free_port())
    stack.up()
    park = write_park(tmp / "park.yaml")
    port = free_port()
    try:
        proc = subprocess.Popen([*SMARTPARK, "collect", "--mqtt-url", stack.mqtt_url,
                                 "--influx-url", stack.influx_url, "--influx-db", "d", "--park", str(park),
                                 "--state-dir", str(tmp), "--metrics-port", str(port)])
        while count_points(stack.influx_url, "d", "collector", "received") == 0:
            time.sleep(0.2)
        pids = {"collector": proc.pid, "influxd": stack.pid("influxd"), "mosquitto": stack.pid("mosquitto")}
        before = {k: cpu_seconds(p) for k, p in pids.items() if p}
        jobs = snapshot_jobs(N)
        children = os.times().children_user + os.times().children_system
        t0 = time.perf_counter()
        publish_lines(stack.mqtt_port, jobs)
        published = time.perf_counter() - t0
        publishers = os.times().children_user + os.times().children_system - children
        elapsed = wait_until_written(stack.influx_url, "d", N) - t0
        used = {k: cpu_seconds(p) - before[k] for k, p in pids.items() if p}
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert count_points(stack.influx_url, "d") == N
        print(f"wall {elapsed:.2f} s (publishing {published:.2f} s), {N / elapsed:,.0f} readings/s")
        print("CPU seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in used.items()) + f", publishers {publishers:.2f}")
        print("\n".join(line for line in text.splitlines() if line.startswith(METRICS)))
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    finally:
        stack.down()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
