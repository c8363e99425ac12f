"""Ceilings the collector is measured against, and bare clients for the measured choices.

(a) broker: ``mosquitto_pub -l`` -> ``mosquitto_sub`` at QoS 1 (the C clients); (b) InfluxDB: line
protocol batches of 5,000 points over one keep-alive connection; bare subscribers (paho's own loop,
aiomqtt, smartpark.mqtt.MqttSource) and bare writers (aiohttp, httpx) at the same job.
"""

from __future__ import annotations

import asyncio
import gzip
import http.client
import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit
from urllib.request import urlopen

from smartpark.schema import COLLECTOR, DEAD_LETTER, READING

TS0 = 1_764_201_600_000
PUB_CHUNK = 50_000  # mosquitto_pub -l at QoS 1 silently stops after ~34,500 lines in 2.0.11: stay below


def reading_lines(n: int, start: int = 0) -> list[str]:
    return [json.dumps({"value": round(10 + (i % 1000) * 0.01, 2), "ts": TS0 + i}) for i in range(start, start + n)]


def publish_lines(port: int, jobs: list[tuple[str, list[str]]]) -> None:
    """Publish with ``mosquitto_pub -l -q 1``: one invocation per (topic, lines), at most 50,000 lines each,
    up to 4 at a time (distinct topics keep per-topic order)."""
    procs: list[subprocess.Popen[bytes]] = []
    for topic, lines in jobs:
        for i in range(0, len(lines), PUB_CHUNK):
            while len([p for p in procs if p.poll() is None]) >= 4:
                time.sleep(0.01)
            p = subprocess.Popen(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-t", topic,
                                  "-l"], stdin=subprocess.PIPE)
            threading.Thread(target=_feed, args=(p, "\n".join(lines[i:i + PUB_CHUNK]) + "\n"), daemon=True).start()
            procs.append(p)
    for p in procs:
        if p.wait() != 0:
            raise RuntimeError(f"mosquitto_pub exited {p.returncode}")


def _feed(p: subprocess.Popen[bytes], text: str) -> None:
    assert p.stdin is not None
    p.stdin.write(text.encode())
    p.stdin.close()


def split_jobs(n: int, topics: list[str]) -> list[tuple[str, list[str]]]:
    """``n`` reading payloads spread over ``topics`` (distinct ts per topic)."""
    per = n // len(topics)
    return [(t, reading_lines(per, k * per)) for k, t in enumerate(topics)]


def broker_ceiling(port: int, n: int) -> float:
    """(a) msgs/s from mosquitto_pub to mosquitto_sub at QoS 1 through the broker."""
    sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-t", "ceil/#",
                            "-C", str(n), "-i", f"ceil-{time.time_ns()}"], stdout=subprocess.DEVNULL)
    time.sleep(0.5)  # let it subscribe (the benchmark may wait; tests may not)
    jobs = split_jobs(n, [f"ceil/t{k}" for k in range(4)])
    t0 = time.perf_counter()
    publish_lines(port, jobs)
    sub.wait(600)
    return n / (time.perf_counter() - t0)


def influx_ceiling(url: str, db: str, n: int, batch: int = 5000) -> float:
    """(b) points/s of line-protocol batches of ``batch`` points over one keep-alive HTTP connection."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
    _query(conn, f'CREATE DATABASE "{db}"')
    bodies = []
    for b in range(0, n, batch):
        bodies.append("\n".join(f"reading,asset=a{i % 10},sensor=s{i % 500},site=ceil value={i * 0.5} {TS0 + i}"
                                for i in range(b, min(n, b + batch))).encode())
    t0 = time.perf_counter()
    for body in bodies:
        conn.request("POST", f"/write?db={db}&precision=ms", body=body)
        resp = conn.getresponse()
        resp.read()
        if resp.status != 204:
            raise RuntimeError(f"InfluxDB answered {resp.status}")
    return n / (time.perf_counter() - t0)


def _query(conn: http.client.HTTPConnection, q: str) -> None:
    from urllib.parse import urlencode
    conn.request("POST", "/query", body=urlencode({"q": q}),
                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    conn.getresponse().read()


def count_points(url: str, db: str, measurement: str = READING, field: str = "value", where: str = "") -> int:
    import urllib.parse
    import urllib.request
    q = urllib.parse.urlencode({"db": db, "q": f'SELECT count("{field}") FROM "{measurement}"'
                                              + (f" WHERE {where}" if where else "")})
    try:
        doc = json.loads(urllib.request.urlopen(f"{url}/query?{q}", timeout=30).read())
        return int(doc["results"][0]["series"][0]["values"][0][1])
    except (KeyError, IndexError, OSError):
        return 0


def points_written_ok(url: str, db: str) -> int:
    """InfluxDB's own count of points it has written into ``db`` (``writePointsOk`` of its shards, /debug/vars).

    A point counts once it is in the cache and the WAL, which is when InfluxDB answers 204 and a query sees it.
    Reading the counter costs influxd a few hundred µs; an InfluxQL ``count()`` over the growing database
    costs it milliseconds to tens of milliseconds, CPU taken from the run being measured.
    """
    doc = json.loads(urlopen(f"{url}/debug/vars", timeout=30).read())
    return sum(int(v["values"].get("writePointsOk", 0)) for k, v in doc.items()
               if k.startswith("shard:") and (v.get("tags") or {}).get("database") == db)


def wait_until_written(url: str, db: str, readings: int, poll: float = 0.02, timeout: float = 600) -> float:
    """Wait until ``readings`` reading points are in ``db``; return the ``perf_counter`` time they were seen.

    Polls InfluxDB's write counter (cheap) and subtracts the collector's own points (status, dead letters),
    counted with two small queries once the total is high enough. The time is taken after the counter is
    read, never before. The caller confirms with a full count (duplicates would make the counter run ahead).
    """
    deadline = time.perf_counter() + timeout
    while True:
        total = points_written_ok(url, db)
        now = time.perf_counter()
        if now > deadline:
            raise TimeoutError(f"{total} points in {db} after {timeout} s, expected {readings}")
        if total >= readings:
            other = count_points(url, db, COLLECTOR, "received") + count_points(url, db, DEAD_LETTER, "detail")
            if total - other >= readings:
                return now
        time.sleep(poll)


# ------------------------------------------------------------------------------------ bare subscribers

def bare_paho(port: int, n: int, publish: Callable[[], None]) -> float:
    """paho-mqtt 2.x's own network loop (thread), QoS 1, auto ack, counting messages and nothing else."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion
    got = 0
    done = threading.Event()
    ready = threading.Event()

    def on_message(c: object, u: object, m: object) -> None:
        nonlocal got
        got += 1
        if got >= n:
            done.set()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bare-paho-{time.time_ns()}")
    client.on_message = on_message
    client.on_subscribe = lambda *a: ready.set()
    client.connect("127.0.0.1", port)
    client.subscribe("bare/#", qos=1)
    client.loop_start()
    ready.wait(10)
    t0 = time.perf_counter()
    publish()
    done.wait(600)
    rate = n / (time.perf_counter() - t0)
    client.disconnect()
    client.loop_stop()
    return rate


def bare_aiomqtt(port: int, n: int, publish: Callable[[], None]) -> float:
    """aiomqtt 2.x ``async for`` at QoS 1 (it acks automatically), counting messages."""
    import aiomqtt

    async def go() -> float:
        async with aiomqtt.Client("127.0.0.1", port, identifier=f"bare-aio-{time.time_ns()}") as client:
            await client.subscribe("bare/#", qos=1)
            t0 = time.perf_counter()
            pub = asyncio.get_running_loop().run_in_executor(None, publish)
            got = 0
            async for _ in client.messages:
                got += 1
                if got >= n:
                    break
            await pub
            return n / (time.perf_counter() - t0)
    return asyncio.run(go())


def bare_source(port: int, n: int, publish: Callable[[], None]) -> float:
    """smartpark.mqtt.MqttSource: take batches, ack each batch in one write."""
    from smartpark.config import parse_mqtt_url
    from smartpark.mqtt import MqttSource

    async def go() -> float:
        src = MqttSource(parse_mqtt_url(f"mqtt://127.0.0.1:{port}"), f"bare-src-{time.time_ns()}", "bare/#",
                         clean_start=True, receive_maximum=20_000)
        async with src:
            stop = asyncio.Event()
            task = asyncio.create_task(src.run(stop))
            await src.connected.wait()
            t0 = time.perf_counter()
            pub = asyncio.get_running_loop().run_in_executor(None, publish)
            got = 0
            while got < n:
                msgs = await src.take(5000, 1.0)
                got += len(msgs)
                src.ack(msgs)
            rate = n / (time.perf_counter() - t0)
            await pub
            stop.set()
            await task
            return rate
    return asyncio.run(go())


# ------------------------------------------------------------------------------------ bare writers

def _bodies(n: int, batch: int, tag: str) -> Iterator[list[str]]:
    for b in range(0, n, batch):
        yield [f"reading,asset=a{i % 10},sensor=s{i % 500},site={tag} value={i * 0.25} {TS0 + i}"
               for i in range(b, min(n, b + batch))]


def writer_aiohttp(url: str, db: str, n: int, batch: int = 5000) -> float:
    """smartpark.influx.InfluxClient (aiohttp, keep-alive, gzip level 1)."""
    from smartpark.config import parse_influx_url
    from smartpark.influx import InfluxClient

    async def go() -> float:
        async with InfluxClient(parse_influx_url(url, db, None)) as client:
            await client.ensure_database()
            bodies = list(_bodies(n, batch, "aiohttp"))
            t0 = time.perf_counter()
            for lines in bodies:
                await client.write(lines)
            return n / (time.perf_counter() - t0)
    return asyncio.run(go())


def writer_httpx(url: str, db: str, n: int, batch: int = 5000) -> float:
    """httpx.AsyncClient with the same body, gzip level 1 and keep-alive."""
    import httpx

    async def go() -> float:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            await client.post("/query", data={"q": f'CREATE DATABASE "{db}"'})
            bodies = list(_bodies(n, batch, "httpx"))
            t0 = time.perf_counter()
            for lines in bodies:
                body = gzip.compress("\n".join(lines).encode(), compresslevel=1)
                r = await client.post("/write", params={"db": db, "precision": "ms"}, content=body,
                                      headers={"Content-Encoding": "gzip"})
                if r.status_code != 204:
                    raise RuntimeError(r.text)
            return n / (time.perf_counter() - t0)
    return asyncio.run(go())
