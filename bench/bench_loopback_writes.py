"""What one 9014's write costs the server here: a small write to each of 5,000 established loopback TCP
sockets in one loop (as :meth:`hj212.service.Listener.ack` does for a durable batch), against the same number
of writes to one socket and a null system call (docs/benchmarks/hj212.md §9).

    .venv/bin/python bench/bench_loopback_writes.py [--connections 5000] [--rps-other-core]

The writer is pinned to core 0, the reader (a separate process, epoll) to core 1. On loopback the kernel does
the receiving socket's TCP work in the sender's system call, so a write here pays for its peer's receive as
well; ``--rps-other-core`` (root) steers the loopback's receive processing to core 1 for the run (Receive
Packet Steering, ``/sys/class/net/lo/queues/rx-0/rps_cpus``, restored afterwards), which leaves the writer
with the sender's half, as on a network.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import selectors
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

RPS = Path("/sys/class/net/lo/queues/rx-0/rps_cpus")
ANSWER = b"x" * 100  # about a 9014's size


def reader(port: int, n: int) -> None:
    os.sched_setaffinity(0, {1})
    sel = selectors.EpollSelector()
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        socks.append(s)
    print("ready", flush=True)
    while True:
        for key, _ in sel.select(1.0):
            if not key.fileobj.recv(65536):  # type: ignore[union-attr]
                return


@contextlib.contextmanager
def rps_on_core_1(enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    before = RPS.read_text().strip()
    RPS.write_text("2\n")
    try:
        yield
    finally:
        RPS.write_text(before + "\n")


def per_call_us(label: str, items: Sequence[socket.socket], fn: Callable[[socket.socket], object]) -> None:
    best = float("inf")
    for _ in range(3):
        t = time.thread_time_ns()
        for x in items:
            fn(x)
        best = min(best, (time.thread_time_ns() - t) / len(items) / 1000)
        time.sleep(0.3)  # the reader drains
    print(f"  {label:44s} {best:6.2f} us per call (best of 3, thread CPU time)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=5000)
    ap.add_argument("--rps-other-core", action="store_true")
    ap.add_argument("--reader", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if a.reader is not None:
        reader(a.reader, a.connections)
        return
    if hard < a.connections + 100:
        raise SystemExit(f"RLIMIT_NOFILE hard limit {hard} < {a.connections + 100}")
    os.sched_setaffinity(0, {0})
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8192)
    child = subprocess.Popen([sys.executable, __file__, "--connections", str(a.connections),
                              "--reader", str(srv.getsockname()[1])], stdout=subprocess.PIPE)
    conns: list[socket.socket] = []
    try:
        conns += [srv.accept()[0] for _ in range(a.connections)]
        assert child.stdout is not None
        child.stdout.readline()
        for s in conns:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as asyncio's and uvloop's transports
        with rps_on_core_1(a.rps_other_core):
            where = ("the loopback's receive processing on core 1 (RPS)" if a.rps_other_core
                     else "the loopback's receive processing in the sender's system call (default)")
            print(f"{a.connections:,} loopback connections, writer on core 0, reader on core 1; {where}:")
            per_call_us(f"write {len(ANSWER)} B to each socket once", conns, lambda s: s.send(ANSWER))
            per_call_us(f"write {len(ANSWER)} B to one socket, as often", [conns[0]] * len(conns),
                        lambda s: s.send(ANSWER))
            per_call_us("a null system call (getppid)", conns, lambda s: os.getppid())
    finally:
        for s in (srv, *conns):
            s.close()  # the reader sees its connections close and exits
        child.wait(30)


if __name__ == "__main__":
    main()
