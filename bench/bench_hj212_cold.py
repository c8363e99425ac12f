"""What a burst's packets cost when each is from another logger: the listener's fast path, cold and warm.

    .venv/bin/python bench/bench_hj212_cold.py [--rounds 15] [--tree DIR ...]

In a burst, 5,000 loggers each send one packet: each packet reads its own logger's objects (its spec, key set,
MN, topic, sensors, metrics, the connection), none of them in the cache. This runs the listener's real
``Listener._realtime`` (after ``common_packet``, as ``_Connection.data_received`` calls them; the items kept
in the inbox, then their acks counted) over 5,000 packets of 5,000 distinct loggers round-robin ("5,000
loggers"), and over 5,000 packets of one logger ("one logger"), with 64 MiB of memory written before each
round so that both start cold. The difference is what the per-logger data cost. Each tree (``--tree``; by
default this checkout) runs in its own process pinned to core 0; the rounds alternate the two cases and the
median and best per packet are reported (thread CPU time). docs/benchmarks/hj212.md §10.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r'''
import gc, random, statistics, sys, time, types
tree, rounds = sys.argv[1], int(sys.argv[2])
sys.path.insert(0, tree)
from zoneinfo import ZoneInfo
from prometheus_client import CollectorRegistry
import hj212.service
from hj212.decode import LoggerMap, PacketDecoder
from hj212.frame import common_packet
from hj212.service import Hj212Metrics, Listener
from hj212.simulate import realtime_packet
from smartpark.park import parse_park
sys.path.insert(0, sys.argv[3])
from bench_hj212 import load_park_yaml  # after the tree's modules: it puts this checkout on the path
assert hj212.service.__file__.startswith(tree), hj212.service.__file__

N = 5000
park = parse_park(load_park_yaml(N))
svc = types.SimpleNamespace(loggers=LoggerMap(park), packets=PacketDecoder(park),
                            hj212_metrics=Hj212Metrics(CollectorRegistry()))
listener = Listener(svc, "127.0.0.1", 0, max_pending=10**9)  # the inbox never fills: no connection is paused
loggers = list(svc.loggers.by_mn.values())
rnd, tz = random.Random(1), ZoneInfo("Asia/Shanghai")
ts = int(time.time() * 1000) - 60_000
def packets(of):
    return [realtime_packet(of(i), ts, {c: round(rnd.uniform(1, 100), 3) for c in of(i).codes}, tz) for i in range(N)]
cases = {"one logger": packets(lambda i: loggers[0]), "5,000 loggers": packets(lambda i: loggers[i])}
gc.collect(); gc.freeze(); gc.set_threshold(100_000, 20, 10)  # as hj212 serve does
junk = bytearray(64 << 20)

def run(data_list):
    for i in range(0, len(junk), 64):  # evict the caches
        junk[i] = (junk[i] + 1) & 255
    t = time.thread_time_ns()
    for data in data_list:
        assert listener._realtime(None, *common_packet(data))
    inbox = listener._inbox
    for item in [inbox.popleft() for _ in range(len(inbox))]:
        svc.hj212_metrics.acked(item.mn, item.answers)
    return (time.thread_time_ns() - t) / len(data_list) / 1000

times = {k: [] for k in cases}
for _ in range(rounds):
    for k, v in cases.items():
        times[k].append(run(v))
print(f"{tree}: " + "; ".join(f"{k} median {statistics.median(v):.2f} us, best {min(v):.2f} us a packet"
                              for k, v in times.items()), flush=True)
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--tree", type=Path, action="append", default=[], metavar="DIR",
                    help="a checkout to measure (repeatable; default: this one)")
    a = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for tree in a.tree or [ROOT]:
        subprocess.run(["taskset", "-c", "0", sys.executable, "-c", CHILD, str(tree.resolve()), str(a.rounds),
                        str(ROOT / "bench")], check=True, env=env)


if __name__ == "__main__":
    main()
