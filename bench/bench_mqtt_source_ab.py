"""The MQTT subscriber against another version of itself, alternated on one private Mosquitto.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_mqtt_source_ab.py --other /tmp/old/smartpark/mqtt.py [--n 50000]

``--other`` is the module file of the other version (e.g. from ``git archive <commit> | tar -x -C /tmp/old``);
it is loaded beside this tree's ``smartpark.mqtt``. Each run fills a persistent session with ``--n`` QoS 1
messages (``mosquitto_pub -l``) while its subscriber is away, then the subscriber drains it, acking every
batch: this process's CPU time per message (the figure that carries over) and the wall-clock rate. The two
take turns, and which goes first alternates (the first of a pair measured slower in both orders).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "bench")]

from collector_ceilings import publish_lines, split_jobs  # noqa: E402

import smartpark.mqtt  # noqa: E402
from devstack import Stack, free_port  # noqa: E402
from smartpark.config import parse_mqtt_url  # noqa: E402


def load_other(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location("smartpark.mqtt_other", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def drain(mod: Any, port: int, client_id: str, n: int) -> tuple[float, float]:
    async def go(fill: bool) -> tuple[float, float]:
        src = mod.MqttSource(parse_mqtt_url(f"mqtt://127.0.0.1:{port}"), client_id, "bare/#",
                             receive_maximum=20_000)
        async with src:
            stop = asyncio.Event()
            task = asyncio.create_task(src.run(stop))
            await src.connected.wait()
            result = (0.0, 0.0)
            if not fill:
                c0, t0 = time.process_time(), time.perf_counter()
                got = 0
                while got < n:
                    msgs = await src.take(5000, 1.0)
                    got += len(msgs)
                    src.ack(msgs)
                result = ((time.process_time() - c0) / n * 1e6, n / (time.perf_counter() - t0))
            stop.set()
            await task
            return result
    asyncio.run(go(True))  # the persistent session exists, the broker queues for it
    publish_lines(port, split_jobs(n, [f"bare/t{k}" for k in range(4)]))
    return asyncio.run(go(False))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--other", required=True, help="module file of the other version of smartpark.mqtt")
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=4)
    args = ap.parse_args()
    versions = {"this tree": smartpark.mqtt, "other": load_other(args.other)}
    res: dict[str, list[tuple[float, float]]] = {name: [] for name in versions}
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(Path(tmp), mqtt_port=free_port(), influx_port=0)
        stack.start_mosquitto()
        try:
            for r in range(args.repeat):
                order = list(versions.items())
                for name, mod in order if r % 2 else order[::-1]:  # who goes first alternates too
                    res[name].append(drain(mod, stack.mqtt_port, f"ab-{r}-{len(res[name])}-{name[0]}", args.n))
                    print(f"{name} run {r}: {res[name][-1][0]:.2f} CPU-µs/msg, {res[name][-1][1]:,.0f} msgs/s",
                          flush=True)
        finally:
            stack.stop_mosquitto()
    for name, runs in res.items():
        print(f"{name}: median {statistics.median(x[0] for x in runs):.2f} CPU-µs/msg, "
              f"{statistics.median(x[1] for x in runs):,.0f} msgs/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
