"""What Mosquitto's persistence settings cost and what a SIGKILL of the broker loses, measured in one run.

    .venv/bin/python bench/bench_broker_durability.py [--n 20000] [--backlog 50000] [--repeat 3]

For each setting (``persistence false`` as the baseline, ``autosave_interval`` in seconds, and
``autosave_on_changes`` with a count of changes), on a fresh broker of the local stack's configuration:

1. a persistent session subscribes to ``park/#`` at QoS 1 and goes offline, as the collector does when it
   stops (the broker is then restarted cleanly, so that the session is saved as on a long-running broker);
   ``--backlog`` messages are queued for it first (every save rewrites the whole queue, so the cost of a
   save grows with what is queued);
2. one QoS 1 publisher (``smartpark.mqtt.Publisher``) sends ``--n`` messages; the time until every PUBACK came gives
   the publish throughput, reported as a ratio to the baseline of the same round;
3. at once after the last PUBACK the broker is SIGKILLed and restarted; the session takes what survived
   (the worst case: with a time interval, whatever came in since the last save is lost).

Settings are run in rounds (each round every setting once, in turn), so that the machine's noise spreads over
all of them; the median of the rounds is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from devstack import Persistence, Stack, free_port  # noqa: E402
from smartpark.config import parse_mqtt_url  # noqa: E402
from smartpark.mqtt import Publisher  # noqa: E402
from smartpark.topics import SUBSCRIPTION, reading_topic  # noqa: E402

SETTINGS: dict[str, Persistence] = {
    "persistence false": Persistence(enabled=False),
    "autosave_interval 30 (s)": Persistence(on_changes=False, interval=30),
    "autosave_interval 5 (s)": Persistence(on_changes=False, interval=5),
    "autosave_interval 1 (s)": Persistence(on_changes=False, interval=1),
    "autosave_on_changes, interval 10000": Persistence(on_changes=True, interval=10000),
    "autosave_on_changes, interval 1000": Persistence(on_changes=True, interval=1000),
    "autosave_on_changes, interval 100": Persistence(on_changes=True, interval=100),
    "autosave_on_changes, interval 1": Persistence(on_changes=True, interval=1),
}
SESSION = "bench-collector"


def _subscribe_offline(port: int) -> None:
    """A persistent QoS 1 session on park/# that then disconnects: the broker queues for it."""
    subprocess.run(["mosquitto_sub", "-p", str(port), "-c", "-i", SESSION, "-q", "1", "-t", SUBSCRIPTION, "-E"],
                   check=True, timeout=30, capture_output=True)


def _publish(port: int, n: int, start: int) -> float:
    """``n`` QoS 1 messages through one connection (the simulators' publisher, 2,000 unacknowledged at most);
    seconds until every PUBACK was received. (``mosquitto_pub -l`` of mosquitto 2.0.11 drops lines at this
    rate: it is not used.)"""
    messages = [(reading_topic("bench", "a", "s"), f'{{"value": {i}.5, "ts": {1_764_201_600_000 + i}}}'.encode())
                for i in range(start, start + n)]

    async def go() -> float:
        t0 = time.perf_counter()
        async with Publisher(parse_mqtt_url(f"mqtt://127.0.0.1:{port}"), f"bench-pub-{start}") as pub:
            for i in range(0, n, 5000):
                await pub.send(messages[i:i + 5000], 1)
            await pub.flush()
        return time.perf_counter() - t0

    return asyncio.run(go())


def _drain(port: int, expected: int) -> int:
    """Messages the session receives after the restart: until ``expected`` came, or 3 s without one."""
    done = threading.Event()
    count = 0
    last = time.monotonic()

    def on_message(client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        nonlocal count, last
        count += 1
        last = time.monotonic()
        if count >= expected:
            done.set()

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=SESSION, clean_session=False,
                         protocol=paho.MQTTv311)
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        while not done.wait(0.5) and time.monotonic() - last < 3 + (10 if count == 0 else 0):
            pass
    finally:
        client.disconnect()
        client.loop_stop()
    return count


def one(name: str, persistence: Persistence, n: int, backlog: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-broker-") as tmp:
        stack = Stack(Path(tmp), mqtt_port=free_port(), influx_port=0, persistence=persistence)
        stack.start_mosquitto()
        try:
            _subscribe_offline(stack.mqtt_port)
            stack.stop_mosquitto()  # a clean stop saves the session, as a long-running broker has it saved
            stack.start_mosquitto()
            if backlog:
                _publish(stack.mqtt_port, backlog, 0)
            seconds = _publish(stack.mqtt_port, n, backlog)
            stack.stop_mosquitto(kill=True)
            stack.start_mosquitto()
            survived = _drain(stack.mqtt_port, backlog + n)
        finally:
            stack.stop_mosquitto(kill=True)
    return {"rate": n / seconds, "survived": survived, "queued": backlog + n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20_000, help="messages timed per run")
    ap.add_argument("--backlog", type=int, default=50_000, help="messages queued for the session before")
    ap.add_argument("--repeat", type=int, default=3, help="rounds")
    ap.add_argument("--only", default="", help="comma-separated substrings of the settings to run")
    args = ap.parse_args()
    chosen = {k: v for k, v in SETTINGS.items()
              if not args.only or any(s in k for s in args.only.split(","))}
    if "persistence false" not in chosen:
        chosen = {"persistence false": SETTINGS["persistence false"], **chosen}
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in chosen}
    for r in range(args.repeat):
        for name, p in chosen.items():
            res = one(name, p, args.n, args.backlog)
            runs[name].append(res)
            print(f"round {r + 1} {name:40s} {res['rate']:9.0f} msgs/s  survived {res['survived']:,.0f}"
                  f" of {res['queued']:,.0f}", flush=True)
    print(f"\nmosquitto, {args.n:,} QoS 1 messages timed, {args.backlog:,} queued before for an offline "
          f"persistent session; SIGKILL right after the last PUBACK; median of {args.repeat}")
    print(f"{'setting':40s} {'msgs/s':>9s} {'ratio':>6s}  {'survived SIGKILL (each round)'}")
    base = [x["rate"] for x in runs["persistence false"]]
    for name, rs in runs.items():
        ratios = [x["rate"] / b for x, b in zip(rs, base, strict=True)]
        surv = ", ".join(f"{x['survived']:,.0f}" for x in rs)
        print(f"{name:40s} {statistics.median(x['rate'] for x in rs):9.0f} {statistics.median(ratios):6.2f}"
              f"  {surv} of {rs[0]['queued']:,.0f}")


if __name__ == "__main__":
    main()
