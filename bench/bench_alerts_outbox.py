"""Alarm-engine benchmark: does a growing notification outbox slow evaluation? (CONTRACT §9)

The service path of one MQTT message (``AlertService.handle``: decode, evaluate, journal, events -> outbox) over
messages that each raise or clear two alarms (h and hh in turn, so every message makes two notifications), in
one process and one run, in four phases:

- ``none``: no destination at all (no outbox rows): the ceiling;
- ``down-empty``: one webhook destination that is down (connection refused), the outbox empty at the start;
- ``down-grown``: the same destination after ``--grown`` notifications piled up for it;
- ``none-again``: the ceiling once more, to see the drift of the shared machine within the run.

The destination's sender runs in the same event loop as evaluation (as in ``alerts run``), yielding between
batches of 2,000 messages; the result is each phase's messages/s as a ratio to ``none``.

    .venv/bin/python bench/bench_alerts_outbox.py [--messages 20000] [--grown 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from alerts.notify import Notification
from alerts.service import AlertService, wall_ms
from smartpark.config import Settings
from smartpark.park import parse_park
from smartpark.stack import free_port

PARK = parse_park("""
park: {id: b, name: Bench park, timezone: Asia/Shanghai}
sites:
  - id: plant
    name: Plant
    assets:
      - id: tank
        name: Tank
        sensors:
          - {id: level, name: Level, unit: "%", range: [0, 100], normal: [20, 60], interval_s: 10,
             limits: {hh: 90, h: 80}, deadband: 2}
""", "bench-park.yaml")
T0 = 1_772_416_800_000
TOPIC = "park/plant/tank/level"


def messages(n: int, start: int) -> list[bytes]:
    return [json.dumps({"value": 95 if k % 2 == 0 else 50, "ts": T0 + (start + k) * 1000}).encode()
            for k in range(n)]


async def phase(svc: AlertService, payloads: list[bytes]) -> float:
    """Messages/s through ``handle`` in batches of 2,000, the senders running between batches."""
    t = time.perf_counter()
    for i in range(0, len(payloads), 2000):
        for p in payloads[i:i + 2000]:
            svc.handle(TOPIC, p)
        svc.store.flush()
        svc.dispatcher.commit()  # as alerts run does before acknowledging a batch
        await asyncio.sleep(0)
    return len(payloads) / (time.perf_counter() - t)


async def run(n: int, grown: int) -> dict[str, float]:
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        down = f"http://127.0.0.1:{free_port()}/down"
        for name, hooks in (("none", []), ("down", [down]), ("none-again", [])):
            s = Settings(state_dir=str(Path(tmp) / name), influx_url="http://127.0.0.1:1")
            svc = AlertService(s, PARK, clock="event", api=False, webhooks=hooks)
            with svc.outbox:
                tasks = [asyncio.create_task(sn.run()) for sn in svc.pipeline.senders]
                await asyncio.sleep(0)
                if name == "down":
                    out["down-empty"] = await phase(svc, messages(n, 0))
                    dest = svc.pipeline.senders[0].dest
                    for i in range(0, grown, 10_000):  # the pile of a long outage, recorded as the engine does
                        svc.outbox.add([(dest, Notification("event", "plant", "high", "t", "b", None, f"g{j}"))
                                        for j in range(i, min(grown, i + 10_000))], wall_ms())
                    out["outbox_rows"] = svc.outbox.depth()
                    out["down-grown"] = await phase(svc, messages(n, n))
                    out["attempts"] = svc.pipeline.senders[0].counts["attempts"]
                else:
                    out[name] = await phase(svc, messages(n, 0))
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                svc.store.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--grown", type=int, default=200_000)
    args = ap.parse_args()
    r = asyncio.run(run(args.messages, args.grown))
    base = r["none"]
    for k in ("none", "down-empty", "down-grown", "none-again"):
        print(f"{k:12s} {r[k]:10,.0f} messages/s  {r[k] / base:5.2f} x")
    print(f"outbox rows pending in down-grown: {int(r['outbox_rows']):,}; sender attempts: {int(r['attempts'])}")


if __name__ == "__main__":
    main()
