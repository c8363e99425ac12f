"""Where simulated traffic goes: MQTT (``publish``), InfluxDB history (``backfill``), and recordings.

* :func:`publish` sends messages with their original spacing scaled by ``speed`` (0: as fast as the broker
  takes them), QoS 0 or 1, and reconnects with full-jitter exponential backoff when the broker goes away:
  the batch in flight is sent again (QoS 1 is at-least-once; a reading written twice is one point).
* :func:`backfill` writes history through :class:`smartpark.influx.InfluxClient`, the collector's writer, in
  batches of about 5,000 lines, with the readings' historical timestamps.
* :func:`record` captures ``park/#`` into a gzip JSON-lines file with receive times; :func:`replay`
  republishes a recording with the original timing scaled.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import itertools
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt

from smartpark.config import parse_mqtt_url
from smartpark.errors import PartialWriteError, WriteError
from smartpark.influx import InfluxClient
from smartpark.mqtt import MqttRefused, Publisher
from smartpark.park import Park
from smartpark.timing import Backoff
from smartpark.topics import SUBSCRIPTION, is_service_topic

from .scenario import Scenario
from .simulator import Message, Simulator

log = logging.getLogger(__name__)

RECORDING_FORMAT = "smartpark-recording"
BATCH = 500  # messages awaited together: enough to keep the broker busy, bounded in flight



def mqtt_client(mqtt_url: str, *, client_id: str | None = None, v5: bool = True, inflight: int = 1000,
                **kw: Any) -> aiomqtt.Client:
    """An aiomqtt client for a CONTRACT §6 URL (mqtt:// or mqtts://, credentials in the URL)."""
    t = parse_mqtt_url(mqtt_url)
    client = aiomqtt.Client(
        t.host, t.port, username=t.username, password=t.password,
        identifier=client_id or f"smartpark-sim-{uuid.uuid4().hex[:8]}",
        protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
        tls_params=aiomqtt.TLSParameters() if t.tls else None,
        max_inflight_messages=inflight, **kw,
    )
    client.pending_calls_threshold = 4 * BATCH  # publish() keeps a whole batch in flight on purpose
    return client


class Paced:
    """Cut a time-ordered message stream into batches that are due now, sleeping until the next is due.

    The sleep ends early when ``stop`` is set, so that a paced run (a sparse feed at real time) still stops
    at once on SIGTERM.
    """

    def __init__(self, messages: Iterable[Message], speed: float, clock: Callable[[], float],
                 sleep: Callable[[float], Awaitable[None]] | None = None, stop: asyncio.Event | None = None) -> None:
        self.it: Iterator[Message] = iter(messages)
        self.speed = speed
        self.clock = clock
        self.stop = stop
        self.sleep = sleep or self._sleep
        self.origin: tuple[float, int] | None = None  # (wall time, ts_ms) of the first message
        self.head: Message | None = None
        self.done = False

    async def _sleep(self, seconds: float) -> None:
        if self.stop is None:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    def _due(self, m: Message) -> float:
        if self.origin is None:
            self.origin = (self.clock(), m.ts_ms)
        wall0, ts0 = self.origin
        return wall0 + (m.ts_ms - ts0) / 1000.0 / self.speed

    async def batch(self, size: int) -> list[Message]:
        out: list[Message] = []
        while len(out) < size:
            m = self.head if self.head is not None else next(self.it, None)
            self.head = None
            if m is None:
                self.done = True
                break
            if self.speed > 0:
                wait = self._due(m) - self.clock()
                if wait > 0:
                    if out:  # send what is due before sleeping
                        self.head = m
                        break
                    await self.sleep(wait)
                    if self.stop is not None and self.stop.is_set():
                        self.head = m
                        break
            out.append(m)
        return out


async def publish(messages: Iterable[Message], mqtt_url: str, *, speed: float = 1.0, qos: int = 1,
                  stop: asyncio.Event | None = None, client_id: str | None = None,
                  max_retries: int | None = None) -> int:
    """Publish messages to the broker; returns how many were acknowledged (QoS 1) or written (QoS 0).

    ``speed`` scales the messages' spacing (1: real time, 60: a minute per second, 0: no pacing).
    The messages' own ``ts`` stays in the payload: an accelerated run carries simulated time.
    When the broker goes away, the unacknowledged QoS 1 messages are sent again after reconnecting with
    full-jitter backoff (at-least-once: a reading stored twice is one point).
    """
    if qos not in (0, 1):
        raise ValueError("qos is 0 or 1")
    target = parse_mqtt_url(mqtt_url)  # a bad URL is a ConfigError before any I/O
    cid = client_id or f"smartpark-sim-{uuid.uuid4().hex[:8]}"
    paced = Paced(messages, speed, time.monotonic, stop=stop)
    taken = 0
    resend: list[tuple[str, bytes]] = []
    backoff = Backoff()
    failures = 0
    while True:
        pub = Publisher(target, cid)
        batch: list[tuple[str, bytes]] = []
        try:
            async with pub:
                backoff.reset()
                failures = 0
                if resend:
                    batch, resend = resend, []
                    await pub.send(batch, qos)
                    batch = []
                while not paced.done and not (stop is not None and stop.is_set()):
                    msgs = await paced.batch(BATCH)
                    if not msgs:
                        break
                    batch = [(m.topic, m.payload) for m in msgs]
                    taken += len(batch)
                    await pub.send(batch, qos)
                    batch = []
                await pub.flush()
                return taken
        except MqttRefused as exc:
            if not exc.retryable:  # only "server unavailable" (or busy) may heal by itself
                raise
            failures += 1
            if max_retries is not None and failures > max_retries:
                raise
        except (ConnectionError, OSError, TimeoutError) as exc:
            failures += 1
            if max_retries is not None and failures > max_retries:
                raise
            known = {id(x) for x in pub.unacked()}
            resend = pub.unacked() + [x for x in batch if id(x) not in known] if qos == 1 else []
            log.warning("broker connection lost (%s); reconnecting, %d messages to resend", exc, len(resend))
        await asyncio.sleep(backoff.next())


async def backfill(park: Park, client: InfluxClient, start_ms: int, end_ms: int, *, seed: int = 0,
                   scenario: Scenario | None = None, progress: Callable[[int, int, int], None] | None = None,
                   batch_lines: int = 5000, sites: list[str] | None = None, max_attempts: int = 8) -> int:
    """Write simulated history for [start_ms, end_ms) into InfluxDB; returns the readings written.

    ``progress(done_ms, total_ms, written)`` is called after every batch. Retryable write errors are
    retried with backoff (honouring Retry-After); lines InfluxDB rejects are counted out, not retried.
    """
    sim = Simulator(park, scenario, seed=seed, start_ms=start_ms, sites=sites)
    total = max(0, end_ms - start_ms)
    written = 0
    backoff = Backoff(base=0.2)
    loop = asyncio.get_running_loop()
    gen = sim.lines(total / 1000.0)
    done_ms = 0
    while True:
        lines = await loop.run_in_executor(None, next, gen, None)  # generate the next hour off the loop
        if lines is None:
            break
        for i in range(0, len(lines), batch_lines):
            batch = lines[i:i + batch_lines]
            for attempt in itertools.count(1):
                try:
                    await client.write(batch, precision="ms")
                    written += len(batch)
                    break
                except PartialWriteError as exc:
                    written += len(batch) - len(exc.rejected)
                    log.warning("InfluxDB rejected %d lines of a backfill batch", len(exc.rejected))
                    break
                except WriteError as exc:
                    if not exc.retryable or attempt >= max_attempts:
                        raise
                    await asyncio.sleep(exc.retry_after if exc.retry_after is not None else backoff.next())
            if progress is not None:
                progress(done_ms, total, written)
        done_ms = min(total, done_ms + 3_600_000)
        if progress is not None:
            progress(done_ms, total, written)
    return written


# --------------------------------------------------------------------------- record and replay

async def record(mqtt_url: str, path: str | Path, *, topic: str = SUBSCRIPTION, stop: asyncio.Event | None = None,
                 duration_s: float | None = None, count: int | None = None, qos: int = 1,
                 ready: asyncio.Event | None = None, on_message: Callable[[Message], None] | None = None) -> int:
    """Capture traffic into a gzip JSON-lines file: a header line, then one line per message with its
    receive time (``t``, epoch ms), topic, payload (UTF-8 text, or base64 when it is not) and flags.
    ``on_message`` sees every recorded message (a live display, or a test waiting for a marker).

    Runs until ``stop`` is set, ``duration_s`` passed or ``count`` messages arrived; returns the count.
    The file appears once the first subscription stands (``ready`` is set then). When the broker goes away
    the recorder reconnects with full-jitter backoff and keeps appending; the MQTT 5 session (stable client
    id, one hour expiry) lets the broker keep QoS 1 messages for it while it is away.
    """
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    deadline = None if duration_s is None else loop.time() + duration_s
    cid = f"smartpark-record-{uuid.uuid4().hex[:8]}"
    backoff = Backoff()
    out: Any = None
    n = 0

    def remaining() -> float | None:
        return None if deadline is None else max(0.0, deadline - loop.time())

    try:
        while not stop.is_set() and (deadline is None or loop.time() < deadline):
            try:
                async with mqtt_client(mqtt_url, client_id=cid, clean_start=False,
                                       properties=_session_properties()) as client:
                    await client.subscribe(topic, qos=qos)
                    backoff.reset()
                    if out is None:
                        out = gzip.open(path, "wt", encoding="utf-8", compresslevel=6)
                        out.write(json.dumps({"format": RECORDING_FORMAT, "version": 1, "topic": topic,
                                              "started_ms": time.time_ns() // 1_000_000}) + "\n")
                        out.flush()
                        if ready is not None:
                            ready.set()

                    async def consume(client: aiomqtt.Client = client, out: Any = out) -> None:
                        nonlocal n
                        async for msg in client.messages:
                            line = _record_line(msg)
                            out.write(json.dumps(line, ensure_ascii=False) + "\n")
                            n += 1
                            if on_message is not None:
                                on_message(Message(line["t"], line["topic"], _payload_bytes(msg)))
                            if count is not None and n >= count:
                                stop.set()
                                return

                    await _until(consume(), stop, remaining())
                    return n
            except aiomqtt.MqttError as exc:
                delay = backoff.next()
                log.warning("record: broker connection lost (%s); reconnecting in %.2fs", exc, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        return n
    finally:
        if out is not None:
            out.close()


def _session_properties() -> Any:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    return props


def _payload_bytes(msg: aiomqtt.Message) -> bytes:
    return bytes(msg.payload) if isinstance(msg.payload, (bytes, bytearray)) else str(msg.payload).encode()


def _record_line(msg: aiomqtt.Message) -> dict[str, Any]:
    payload = _payload_bytes(msg)
    line: dict[str, Any] = {"t": time.time_ns() // 1_000_000, "topic": str(msg.topic), "qos": msg.qos,
                            "retain": bool(msg.retain)}
    try:
        line["payload"] = payload.decode("utf-8")
    except UnicodeDecodeError:
        line["payload_b64"] = base64.b64encode(payload).decode()
    return line


async def _until(work: Coroutine[Any, Any, None], stop: asyncio.Event, limit_s: float | None) -> None:
    """Run ``work`` until it ends, ``stop`` is set or ``limit_s`` passes; its errors propagate."""
    task = asyncio.create_task(work, name="record-consume")
    waiter = asyncio.create_task(stop.wait(), name="record-stop")
    try:
        await asyncio.wait({task, waiter}, timeout=limit_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (task, waiter):
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
    if task.done() and not task.cancelled() and (exc := task.exception()) is not None:
        raise exc


def read_recording(path: str | Path, *, include_service: bool = False,
                   include_retained: bool = False) -> Iterator[Message]:
    """The messages of a recording, stamped with their receive time (``ts_ms``) for replay pacing.

    Alarm-state and service-status topics (``park/alarms``, ``park/_sys``) and retained messages belong to
    the services that were running and are skipped unless asked for.
    """
    with gzip.open(path, "rt", encoding="utf-8") as f:
        try:
            header = json.loads(f.readline() or "{}")
        except (EOFError, ValueError):
            header = {}
        if header.get("format") != RECORDING_FORMAT:
            raise ValueError(f"{path}: not a smartpark recording")
        while True:
            try:
                raw = f.readline()
            except EOFError:  # a recorder killed mid-write leaves a truncated stream: keep what is whole
                log.warning("%s ends early (the recorder did not stop cleanly); replaying what is complete", path)
                return
            if not raw:
                return
            if not raw.endswith("\n"):
                return  # a last line cut in half
            d = json.loads(raw)
            if not include_service and is_service_topic(d["topic"]):
                continue
            if not include_retained and d.get("retain"):
                continue
            payload = d["payload"].encode("utf-8") if "payload" in d else base64.b64decode(d["payload_b64"])
            yield Message(int(d["t"]), d["topic"], payload)


async def replay(path: str | Path, mqtt_url: str, *, speed: float = 1.0, qos: int = 1,
                 stop: asyncio.Event | None = None) -> int:
    """Republish a recording with its original timing divided by ``speed``; returns the messages sent."""
    return await publish(read_recording(path), mqtt_url, speed=speed, qos=qos, stop=stop)
