"""``bench_hj212.py --callsums``: on the server's PYTHONPATH, before its tree. Wraps the functions a burst's
packets go through with ``time.thread_time_ns()`` (about 1 µs a call) and prints, every second in which any
ran, their CPU and calls to stderr as ``callsums: <name> <ms>/<calls>, ...`` (docs/benchmarks/hj212.md §9).
Not a profiler's sample: the CPU of each call, measured."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

SUMS: dict[str, list[int]] = {}
WRAPPED = (  # (module, class, method, label): plain functions only (a coroutine function's call only makes
    # the coroutine; its work runs later, outside the wrapper). Nested: "acks" includes their "9014 send"s.
    ("hj212.service", "_Connection", "data_received", "data_received"),
    ("hj212.service", "Listener", "ack", "acks"),
    ("hj212.service", "_Connection", "send", "9014 send"),
    ("hj212.feed", "EngineFeed", "publish_soon", "feed submit"),
    ("smartpark.mqtt.connection", "Connection", "data_received", "mqtt reads"),
    ("smartpark.mqtt.connection", "Connection", "send", "mqtt send"),
    ("aiohttp.http_writer", "StreamWriter", "_write", "aiohttp write"),
    ("aiohttp.http_writer", "StreamWriter", "_writelines", "aiohttp writelines"),
)


def _wrap(cls: type, name: str, label: str) -> None:
    f = getattr(cls, name)
    clock = time.thread_time_ns

    def timed(*a: Any, **k: Any) -> Any:
        t = clock()
        try:
            return f(*a, **k)
        finally:
            s = SUMS.get(label)
            if s is None:
                s = SUMS[label] = [0, 0]
            s[0] += clock() - t
            s[1] += 1

    setattr(cls, name, timed)


def _install() -> None:
    """Once every module is imported (the server imports them at start, before any logger connects)."""
    while not (all(hasattr(sys.modules.get(m), c) for m, c, _, _ in WRAPPED)
               and hasattr(sys.modules.get("hj212.service"), "Hj212Collector")):  # its module's last class
        time.sleep(0.01)
    for m, c, n, label in WRAPPED:
        _wrap(getattr(sys.modules[m], c), n, label)
    print("callsums: installed", file=sys.stderr, flush=True)
    while True:
        time.sleep(1.0)
        if SUMS:
            sums = dict(SUMS)
            SUMS.clear()
            print("callsums: " + ", ".join(f"{k} {v[0] / 1e6:.1f} ms/{v[1]}" for k, v in sorted(sums.items())),
                  file=sys.stderr, flush=True)


threading.Thread(target=_install, name="callsums", daemon=True).start()
