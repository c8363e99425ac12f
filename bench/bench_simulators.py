"""Benchmark of the simulators: generation rate in memory, and publish rate against the broker's ceiling.

    .venv/bin/python bench/bench_simulators.py [--hours 24] [--messages 200000] [--repeat 3]

Generation (whole bundled park, no I/O):
  * ``lines``: InfluxDB line protocol, what backfill writes (target >= 1,000,000 readings/s);
  * ``messages``: MQTT (topic, payload) pairs, what publish sends;
  * reference in the same run: a bare list comprehension formatting the same number of precomputed
    (prefix, float, int) triples into lines, i.e. the cost of Python string building alone.

Publishing (a private Mosquitto on a free 127.0.0.1 port; a C ``mosquitto_sub -C N`` counts deliveries):
  * ceiling: the C client ``mosquitto_pub -l`` sending the same payloads, one process and four in parallel
    (the better of the two: the broker's intake with C publishers on this machine), QoS 1 and QoS 0;
  * ours: ``simulators.publish(speed=0)`` of the same simulated messages (pre-generated), and of a
    ``Simulator.messages()`` stream generated while publishing;
  each measured from the start of publishing until the subscriber has received all N messages.
  Figures are medians of ``--repeat`` runs; ratios are to the ceiling measured in the same run (the machine
  is shared and noisy).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devstack import Stack, free_port
from simulators import Simulator, publish
from smartpark.park import load_park
from smartpark.topics import SUBSCRIPTION, reading_topic

START = 1_764_201_600_000


def gen_rates(hours: float) -> dict[str, float]:
    park = load_park()
    out: dict[str, float] = {}
    t = time.perf_counter()
    n = sum(len(b.ts) for blocks in Simulator(park, seed=0, start_ms=START).blocks(hours * 3600) for b in blocks)
    out["numeric (arrays only)"] = n / (time.perf_counter() - t)
    t = time.perf_counter()
    n_lines = 0
    sample: list[str] = []
    for chunk in Simulator(park, seed=0, start_ms=START).lines(hours * 3600):
        n_lines += len(chunk)
        sample = chunk
    out["lines (backfill)"] = n_lines / (time.perf_counter() - t)
    t = time.perf_counter()
    n_msgs = sum(1 for _ in Simulator(park, seed=0, start_ms=START).messages(hours * 3600))
    out["messages (publish)"] = n_msgs / (time.perf_counter() - t)
    # reference: Python string building alone, on the same number of precomputed items
    triples = [(s.split(" value=")[0] + " value=", 1234.5 + i % 97, START + i) for i, s in
               enumerate((sample * (n_lines // max(1, len(sample)) + 1))[:n_lines])]
    t = time.perf_counter()
    ref = [f"{p}{v!r} {ts}" for p, v, ts in triples]
    out["reference: f-string formatting only"] = len(ref) / (time.perf_counter() - t)
    out["_readings"] = n_lines
    out["_messages"] = n_msgs
    return out


def _sub(port: int, n: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-t", SUBSCRIPTION, "-q", "0",
                             "-C", str(n)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)  # let the subscription stand (a benchmark, not a test)
    return proc


def ceiling(port: int, payloads: list[bytes], qos: int, procs: int) -> float:
    """Deliveries per second when ``procs`` C publishers (mosquitto_pub -l) share the payloads."""
    n = len(payloads)
    sub = _sub(port, n)
    parts = [b"\n".join(payloads[i::procs]) + b"\n" for i in range(procs)]
    t = time.perf_counter()
    pubs = [subprocess.Popen(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port),
                              "-t", reading_topic("bench", "x", f"p{i}"), "-q", str(qos), "-l"],
                             stdin=subprocess.PIPE) for i in range(procs)]
    for proc, part in zip(pubs, parts, strict=True):
        assert proc.stdin is not None
        proc.stdin.write(part)
        proc.stdin.close()
    for proc in pubs:
        proc.wait(60)
    sub.wait(60)
    return n / (time.perf_counter() - t)


def ours(url: str, port: int, msgs: list, qos: int, stream: bool = False) -> float:
    """Deliveries per second of simulators.publish; ``stream``: generate the messages on the fly too."""
    sub = _sub(port, len(msgs))
    t = time.perf_counter()
    source = itertools.islice(Simulator(load_park(), seed=0, start_ms=START).messages(), len(msgs)) if stream \
        else msgs
    sent = asyncio.run(publish(source, url, speed=0, qos=qos))
    sub.wait(60)
    assert sent == len(msgs)
    return len(msgs) / (time.perf_counter() - t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float, default=24)
    ap.add_argument("--messages", type=int, default=20_000)  # mosquitto_pub -l loses messages beyond ~30k at QoS 1
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    print(f"## Generation in memory (whole park, {args.hours:g} h simulated, median of {args.repeat})")
    runs = [gen_rates(args.hours) for _ in range(args.repeat)]
    ref = statistics.median(r["reference: f-string formatting only"] for r in runs)
    print(f"{int(runs[0]['_readings']):,} readings / {int(runs[0]['_messages']):,} messages per run")
    print("| path | rate (/s) | ratio to the reference |\n|---|---:|---:|")
    for key in runs[0]:
        if key.startswith("_"):
            continue
        rate = statistics.median(r[key] for r in runs)
        print(f"| {key} | {rate:,.0f} | {rate / ref:.2f} |")

    park = load_park()
    msgs = []
    for m in Simulator(park, seed=0, start_ms=START).messages():
        msgs.append(m)
        if len(msgs) >= args.messages:
            break
    payloads = [m.payload for m in msgs]
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(Path(tmp), mqtt_port=free_port(), influx_port=0)
        stack.start_mosquitto()
        try:
            print(f"\n## Publishing {len(msgs):,} simulated messages through Mosquitto (median of {args.repeat})")
            print("| QoS | 1 x mosquitto_pub -l (/s) | 4 x mosquitto_pub -l (/s) | ceiling = best (/s) "
                  "| simulators.publish (/s) | ratio | generate + publish (/s) | ratio |\n"
                  "|---|---:|---:|---:|---:|---:|---:|---:|")
            for qos in (1, 0):
                c1 = statistics.median(ceiling(stack.mqtt_port, payloads, qos, 1) for _ in range(args.repeat))
                c4 = statistics.median(ceiling(stack.mqtt_port, payloads, qos, 4) for _ in range(args.repeat))
                o = statistics.median(ours(stack.mqtt_url, stack.mqtt_port, msgs, qos) for _ in range(args.repeat))
                g = statistics.median(ours(stack.mqtt_url, stack.mqtt_port, msgs, qos, stream=True)
                                      for _ in range(args.repeat))
                c = max(c1, c4)
                print(f"| {qos} | {c1:,.0f} | {c4:,.0f} | {c:,.0f} | {o:,.0f} | {o / c:.2f} | {g:,.0f} | {g / c:.2f} |")
        finally:
            stack.stop_mosquitto()
    return 0


if __name__ == "__main__":
    sys.exit(main())
