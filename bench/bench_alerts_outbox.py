"""Alarm-engine benchmark: does a growing notification outbox slow evaluation? (CONTRACT §9)

The service path of one MQTT message (``AlertService.handle``: decode, evaluate, journal with its fsync,
events -> outbox) over messages that each raise or clear two alarms (h and hh in turn: every message makes two
notifications, an alarm storm), in two services of one process side by side:

- ``none``: no destination at all (no outbox rows): the ceiling;
- ``down``: one webhook destination that is down (connection refused, its sender running in the same event
  loop, as in ``alerts run``), whose outbox grows by what it evaluates plus ``--grown`` / ``--rounds`` rows
  per round (the pile of a long outage, recorded as the engine records them).

They take turns, ``--chunk`` messages each per round (in batches of 2,000, committed as before an ack), so
both see the same machine; each round's ratio is ``down`` / ``none`` messages/s, reported by outbox size.

    .venv/bin/python bench/bench_alerts_outbox.py [--rounds 12] [--chunk 4000] [--grown 240000]

``--store`` instead measures the choice of store: durable commits/s of one notification row each, SQLite WAL
with ``synchronous=FULL`` and ``NORMAL`` against an append-only file with an fsync per line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from alerts.notify import Notification
from alerts.service import AlertService, wall_ms
from devstack import free_port
from devstack.parks import one_tank_level
from smartpark.config import Settings
from smartpark.park import parse_park
from smartpark.topics import reading_topic

PARK = parse_park(one_tank_level("{id: b, name: Bench park, timezone: Asia/Shanghai}"), "bench-park.yaml")
T0 = 1_772_416_800_000
TOPIC = reading_topic("plant", "tank", "level")


def messages(n: int, start: int) -> list[bytes]:
    return [json.dumps({"value": 95 if k % 2 == 0 else 50, "ts": T0 + (start + k) * 1000}).encode()
            for k in range(n)]


async def phase(svc: AlertService, payloads: list[bytes]) -> tuple[float, float]:
    """Messages/s through ``handle`` in batches of 2,000, the senders running between batches, and the CPU
    microseconds per message (the fsync waits of the journal, noisy on a shared disk, are not CPU)."""
    t, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(payloads), 2000):
        for p in payloads[i:i + 2000]:
            svc.handle(TOPIC, p)
        svc.store.flush()
        svc.dispatcher.commit()  # as alerts run does before acknowledging a batch
        await asyncio.sleep(0)
    return len(payloads) / (time.perf_counter() - t), (time.process_time() - cpu) * 1e6 / len(payloads)


Round = tuple[int, tuple[float, float], tuple[float, float]]


async def run(rounds: int, chunk: int, grown: int) -> list[Round]:
    """Per round: pending rows in the down outbox at the start, then (messages/s, CPU µs per message) of none
    and of down."""
    out: list[Round] = []
    with tempfile.TemporaryDirectory() as tmp:
        down = f"http://127.0.0.1:{free_port()}/down"
        svcs = [AlertService(Settings(state_dir=str(Path(tmp) / name), influx_url="http://127.0.0.1:1"), PARK,
                             clock="event", api=False, webhooks=hooks)
                for name, hooks in (("none", []), ("down", [down]))]
        none, slow = svcs
        with none.outbox, slow.outbox:
            tasks = [asyncio.create_task(sn.run()) for sn in slow.pipeline.senders]
            dest = slow.pipeline.senders[0].dest
            for r in range(rounds):
                depth = slow.outbox.depth()
                rate_none = await phase(none, messages(chunk, r * chunk))
                rate_down = await phase(slow, messages(chunk, r * chunk))
                out.append((depth, rate_none, rate_down))
                base = r * (grown // rounds)
                for i in range(0, grown // rounds, 10_000):
                    slow.outbox.add([(dest, Notification("event", "plant", "high", "t", "b", None, f"g{base + j}"))
                                     for j in range(i, min(grown // rounds, i + 10_000))], wall_ms())
            attempts = slow.pipeline.senders[0].counts["attempts"]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for svc in svcs:
                svc.store.close()
    print(f"sender attempts toward the destination that is down: {attempts}")
    return out


def store_choice(n: int = 2000) -> None:
    import os
    import sqlite3

    row = json.dumps({"event": {"id": "a/b/c/hh", "message": "x" * 200}, "title": "t", "body": "b" * 200})
    with tempfile.TemporaryDirectory() as tmp:
        for sync in ("FULL", "NORMAL"):
            db = sqlite3.connect(Path(tmp) / f"{sync}.sqlite", isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={sync}")
            db.execute("CREATE TABLE n (id TEXT PRIMARY KEY, dest TEXT, status TEXT, next_at INT, payload TEXT)")
            t = time.perf_counter()
            for i in range(n):
                db.execute("BEGIN")
                db.execute("INSERT OR IGNORE INTO n VALUES (?, ?, ?, ?, ?)", (f"id{i}", "d", "pending", i, row))
                db.execute("COMMIT")
            print(f"SQLite WAL synchronous={sync}: {n / (time.perf_counter() - t):,.0f} commits/s")
            db.close()
        with (Path(tmp) / "journal.jsonl").open("a") as f:
            t = time.perf_counter()
            for _ in range(n):
                f.write(row + "\n")
                f.flush()
                os.fsync(f.fileno())
            print(f"append-only file, fsync per line: {n / (time.perf_counter() - t):,.0f} appends/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--chunk", type=int, default=4000)
    ap.add_argument("--grown", type=int, default=240_000)
    ap.add_argument("--store", action="store_true", help="measure the choice of store instead")
    args = ap.parse_args()
    if args.store:
        store_choice()
        return
    rows = asyncio.run(run(args.rounds, args.chunk, args.grown))
    print(f"{'pending':>9} {'none msg/s':>11} {'down msg/s':>11} {'ratio':>6} {'none CPU µs':>12} "
          f"{'down CPU µs':>12} {'CPU ratio':>10}")
    for depth, (a, ca), (b, cb) in rows:
        print(f"{depth:9,d} {a:11,.0f} {b:11,.0f} {b / a:6.2f} {ca:12.0f} {cb:12.0f} {ca / cb:10.2f}")
    half = len(rows) // 2
    for name, part in (("first half", rows[:half]), ("second half", rows[half:])):
        print(f"median, {name} (pending {part[0][0]:,} to {part[-1][0]:,}): rate ratio "
              f"{statistics.median(b[0] / a[0] for _, a, b in part):.2f}, CPU ratio (none/down) "
              f"{statistics.median(a[1] / b[1] for _, a, b in part):.2f}")


if __name__ == "__main__":
    main()
