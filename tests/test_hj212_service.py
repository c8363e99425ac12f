"""``smartpark hj212 serve`` against a real Mosquitto and a real InfluxDB: loggers over TCP, points in
InfluxDB, the alarm engine's alarm, and the 9014 only once the packet is durable."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiomqtt
import pytest
from services import Broker, InfluxDB

from alerts.service import AlertService
from collector.service import Collector
from devstack import SMARTPARK, Stack, free_port
from hj212.crypto import encrypt_cp
from hj212.frame import FrameReader, frame
from hj212.packet import Packet, encode, encode_cp, parse
from hj212.service import Hj212Collector
from rollups.journal import PERIOD_MS, parse_block
from smartpark.config import Settings
from smartpark.park import Park, parse_park

TZ = ZoneInfo("Asia/Shanghai")
CEMS = "32058300HW01CEMS00000001"
BOILER = "32058300EH01CEMS00000002"  # HJ 212-2025, SM4
OUTFALL = "32058300000103"
KEY = "5a3c9e21f07b46d88c1e02a4b6f3d975"

PARK_YAML = f"""\
park: {{id: hjpark, name: HJ 212 test park, timezone: Asia/Shanghai}}
sites:
  - id: plant
    name: Plant
    assets:
      - id: stack
        name: Stack CEMS
        hj212:
          - mn: "{CEMS}"
            pw: "123456"
            codes:
              a21026: {{sensor: so2, value: converted}}
              a19001: o2
          - mn: "{BOILER}"
            pw: "654321"
            sm4_key: "{KEY}"
            codes: {{a21002: nox}}
        sensors:
          - {{id: so2, name: SO2, unit: mg/m3, range: [0, 500], normal: [5, 40], interval_s: 30,
              limits: {{hh: 80, h: 60}}}}
          - {{id: o2, name: O2, unit: "%vol", range: [0, 21], normal: [8, 12], interval_s: 30}}
          - {{id: nox, name: NOx, unit: mg/m3, range: [0, 800], normal: [50, 150], interval_s: 30}}
      - id: outfall
        name: Outfall
        hj212:
          - mn: "{OUTFALL}"
            codes: {{w01018: cod, "011": cod_2005}}
        sensors:
          - {{id: cod, name: COD, unit: mg/L, range: [0, 200], normal: [15, 40], interval_s: 300}}
          - {{id: cod_2005, name: COD (2005 code), unit: mg/L, range: [0, 200], normal: [15, 40], interval_s: 300}}
"""
PARK = parse_park(PARK_YAML, "hjpark.yaml")


def now_s() -> int:
    return int(time.time())


def datatime(ts_s: int) -> str:
    return datetime.fromtimestamp(ts_s, TZ).strftime("%Y%m%d%H%M%S")


def packet(mn: str, cn: str, groups: list[dict[str, str]], *, pw: str = "123456", flag: int = 5, qn: str | None = None,
           key: str | None = None, **kw: Any) -> bytes:
    cp = tuple(tuple(g.items()) for g in groups)
    p = Packet(st="31", cn=cn, pw=pw, mn=mn, qn=qn or datetime.now(TZ).strftime("%Y%m%d%H%M%S%f")[:17], flag=flag,
               cp=() if key else cp, cp_text=encrypt_cp(encode_cp(cp), key) if key else None, **kw)
    return frame(encode(p))


def realtime(mn: str, ts_s: int, values: dict[str, tuple[float, str]], **kw: Any) -> bytes:
    groups = [{"DataTime": datatime(ts_s)}]
    groups += [{f"{c}-Rtd": f"{v:g}", f"{c}-ZsRtd": f"{v:g}", f"{c}-Flag": f} for c, (v, f) in values.items()]
    return packet(mn, "2011", groups, **kw)


class LoggerConn:
    """A data logger's TCP connection: send bytes, read the platform's answers as parsed packets."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.frames = FrameReader()
        self.answers: list[Packet] = []

    @classmethod
    async def open(cls, port: int) -> LoggerConn:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self, on_bytes: Callable[[], None] | None = None) -> Packet:
        """The next answer (within 30 s); ``on_bytes`` runs the moment its bytes arrive (same event loop as
        the server, so what it observes is what the server had done when it sent them)."""
        async with asyncio.timeout(30):
            while not self.answers:
                data = await self.reader.read(65536)
                assert data, "the platform closed the connection"
                if on_bytes is not None:
                    on_bytes()
                self.answers += [parse(f.segment) for f in self.frames.feed(data) if not isinstance(f, Exception)]
        return self.answers.pop(0)

    async def no_answer(self, within: float = 0.5) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                data = await self.reader.read(65536)
                assert not data, f"unexpected answer {data!r}"

    def close(self) -> None:
        self.writer.close()


def settings_for(mqtt_url: str, influx_url: str, db: str, state: Path) -> Settings:
    return Settings(mqtt_url=mqtt_url, influx_url=influx_url, influx_db=db, state_dir=str(state),
                    hj212_listen=f"127.0.0.1:{free_port()}", api_url=f"http://127.0.0.1:{free_port()}")


@contextlib.asynccontextmanager
async def serving(settings: Settings, park: Park = PARK, **kw: Any) -> AsyncIterator[Hj212Collector]:
    kw.setdefault("flush_interval", 0.1)
    svc = Hj212Collector(settings, park, **kw)
    stop = asyncio.Event()
    task = asyncio.create_task(svc.run(stop))
    while svc.listener is None or not svc.listener.ready.is_set():
        await asyncio.sleep(0.02)  # set by run() once the port is bound
        if task.done():
            task.result()
    try:
        yield svc
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def until(cond: Callable[[], Any], within: float = 30.0, what: str = "condition") -> Any:
    """Poll an outcome (not a clock); fail with ``what`` when it does not come ``within`` seconds."""
    deadline = time.monotonic() + within
    while not (value := cond()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.1)
    return value


class TestEndToEnd:
    """Logger -> InfluxDB with its flag -> the alarm engine's limit alarm -> 9014 after durability."""

    def test_reading_flag_alarm_and_ack_after_durability(self, broker: Broker, influx_db: InfluxDB,
                                                         tmp_path: Path) -> None:
        """SO2 over its hh limit (flag N) and O2 in maintenance (flag M): both stored with their flags, the
        engine raises so2/hh from the reading fed over MQTT, and at the moment the 9014's bytes arrive the
        collector has already written the points."""
        s = settings_for(broker.url, influx_db.url, influx_db.db, tmp_path)
        ts = now_s()

        async def main() -> None:
            engine = AlertService(s, PARK, clock="event", api=False)
            estop = asyncio.Event()
            etask = asyncio.create_task(engine.run(estop))
            await asyncio.wait_for(engine.ready.wait(), 30)
            async with aiomqtt.Client("127.0.0.1", broker.port, identifier="hj212-alarm-watch") as watch:
                await watch.subscribe("park/alarms/#", qos=1)
                async with serving(s) as svc:
                    logger = await LoggerConn.open(svc.listener.port)  # type: ignore[union-attr]  # running: its listener is up
                    written_at_ack: list[int] = []
                    await logger.send(realtime(CEMS, ts, {"a21026": (95.0, "N"), "a19001": (9.5, "M")}))
                    ack = await logger.answer(on_bytes=lambda: written_at_ack.append(svc.counters.written))
                    assert (ack.cn, ack.st, ack.mn, ack.pw, ack.flag) == ("9014", "91", CEMS, "123456", 4)
                    assert written_at_ack[0] >= 2  # both readings were in InfluxDB before the 9014 left

                    async def alarm() -> str:
                        async for m in watch.messages:
                            if m.topic.value == "park/alarms/plant/stack/so2/hh":
                                return str(json.loads(m.payload)["event"])
                        raise AssertionError("no alarm")
                    assert await asyncio.wait_for(alarm(), 30) == "raised"
                    logger.close()
            estop.set()
            await asyncio.wait_for(etask, 60)

        asyncio.run(main())
        rows = {r["sensor"]: r for r in influx_db.query('SELECT * FROM reading')}
        assert rows["so2"]["value"] == 95.0 and rows["so2"]["flag"] is None
        assert rows["o2"]["value"] == 9.5 and rows["o2"]["flag"] == "M" and rows["o2"]["quality"] == "bad"
        assert rows["so2"]["time"] == ts * 1000


class TestDurability:
    """The 9014 follows the collector's rule: InfluxDB, else the fsync'd spool; neither: no 9014."""

    def test_influx_down_then_spool_unwritable(self, stack_factory: Callable[..., Stack], tmp_path: Path) -> None:
        """InfluxDB stopped: the 9014 comes once the point is spooled, and the point reaches InfluxDB when it
        is back. Spool unwritable as well: no 9014 and no crash; writable again: the resent packet is acked."""
        stack = stack_factory()
        s = settings_for(stack.mqtt_url, stack.influx_url, "hj212dur", tmp_path)
        ts = now_s()

        async def main() -> None:
            async with serving(s, engine_feed=False) as svc:
                logger = await LoggerConn.open(svc.listener.port)  # type: ignore[union-attr]  # running: its listener is up
                await logger.send(realtime(CEMS, ts, {"a21026": (30.0, "N")}))
                assert (await logger.answer()).cn == "9014"
                assert svc.counters.written == 1
                stack.stop_influxd()
                await logger.send(realtime(CEMS, ts + 30, {"a21026": (31.0, "N")}))
                spooled_at_ack: list[int] = []
                assert (await logger.answer(on_bytes=lambda: spooled_at_ack.append(svc.counters.spooled))).cn == "9014"
                assert spooled_at_ack[0] >= 1 and svc.counters.written == 1
                # the next segment of the spool cannot be created: nothing is durable any more
                assert svc.spool is not None
                segment = svc.spool.dir / f"{svc.spool._seg + 1:010d}.seg"
                svc.spool._seg_size = svc.spool.segment_bytes  # the next append opens a new segment
                segment.mkdir()
                resend = realtime(CEMS, ts + 60, {"a21026": (32.0, "N")})
                await logger.send(resend)
                await until(lambda: svc.undelivered >= 1, what="the refused batch")
                await logger.no_answer()
                segment.rmdir()
                await logger.send(resend)  # the logger got no 9014: it resends
                assert (await logger.answer()).cn == "9014"
                stack.start_influxd()
                await until(lambda: svc.spool is not None and svc.spool.empty, 60, "the spool replay")
                logger.close()

        asyncio.run(main())
        rows = InfluxDB(stack.influx_url, "hj212dur").query("SELECT value FROM reading")
        assert [r["value"] for r in rows] == [30.0, 31.0, 32.0]


    def test_broker_down_no_ack(self, broker: Broker, influx_db: InfluxDB, tmp_path: Path) -> None:
        """The engine feed's broker away: the reading is stored but not acknowledged, since the engine did not
        get it; the resent packet is acknowledged once the broker is back."""
        s = settings_for(broker.url, influx_db.url, influx_db.db, tmp_path)
        ts = now_s()

        async def main() -> None:
            async with serving(s, feed_timeout=1.0) as svc:
                assert svc.feed is not None
                logger = await LoggerConn.open(svc.listener.port)  # type: ignore[union-attr]  # running: its listener is up
                broker.stop()
                packet_ = realtime(CEMS, ts, {"a21026": (40.0, "N")})
                await logger.send(packet_)
                await until(lambda: svc.feed is not None and svc.feed.failed >= 1, what="the failed publish")
                await logger.no_answer()
                assert svc.counters.written == 1  # stored all the same
                broker.start()
                while True:  # the logger resends until it gets its 9014 (the feed reconnects with backoff)
                    await logger.send(packet_)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(3):
                            assert (await logger.answer()).cn == "9014"
                            break
                logger.close()

        asyncio.run(main())


    def test_journal_stall_holds_the_batch_not_the_listener(self, broker: Broker, influx_db: InfluxDB,
                                                            tmp_path: Path) -> None:
        """The rollup journal's disk stops answering (here the journal is a FIFO that no one reads yet, so
        opening it blocks, as a hung NFS mount or a saturated disk does): the batch written to InfluxDB
        waits for its note, unacknowledged, while another logger is still answered; once the journal is
        written the 9014 comes. A journal noted on the event loop froze every connection instead."""
        s = settings_for(broker.url, influx_db.url, influx_db.db, tmp_path)
        journal = tmp_path / "rollups" / "journal"
        journal.parent.mkdir(parents=True)
        os.mkfifo(journal)
        released: list[float] = []
        noted: list[bytes] = []
        ts = now_s()

        def reader(after: float) -> None:  # the disk answers again after ``after`` seconds, whatever happened
            time.sleep(after)
            released.append(time.monotonic())
            with open(journal, "rb") as f:
                journal.unlink()  # later notes go to a plain file
                noted.append(f.read())

        async def main() -> None:
            async with serving(s, engine_feed=False) as svc:
                port = svc.listener.port  # type: ignore[union-attr]  # running: its listener is up
                a, b = await LoggerConn.open(port), await LoggerConn.open(port)
                release = asyncio.create_task(asyncio.to_thread(reader, 6.0))
                await a.send(realtime(CEMS, ts, {"a21026": (30.0, "N")}))
                await until(lambda: influx_db.query("SELECT value FROM reading"), what="the point in InfluxDB")
                heard: list[float] = []
                await b.send(packet(CEMS, "9015", [], flag=5))  # a heartbeat that asks for its 9014
                assert (await b.answer(on_bytes=lambda: heard.append(time.monotonic()))).cn == "9014"
                acked: list[float] = []
                assert (await a.answer(on_bytes=lambda: acked.append(time.monotonic()))).cn == "9014"
                await release
                assert heard[0] < released[0] < acked[0], "the heartbeat waited for the journal, or the 9014 did not"
                assert svc.counters.written == 1
                a.close()
                b.close()

        asyncio.run(main())
        block = parse_block(noted[0].strip())  # the batch's period (no runner yet: without its values)
        assert block is not None and block.periods == {ts * 1000 // PERIOD_MS}


class TestBatching:
    """A burst's tail is written as soon as the loggers have nothing more to send; a trickle still lingers."""

    def test_a_drained_burst_is_written_at_once_a_trickle_lingers(self, broker: Broker, influx_db: InfluxDB,
                                                                   tmp_path: Path) -> None:
        """Batches of 40 lines, and neither the batch age nor the idle timer writes anything for two minutes:
        one logger's two readings wait (a trickle: fewer lines than a quarter batch); then twelve more loggers
        send at once, and the batch (26 lines, the input drained) is written and acked at once, the first
        logger's packet with it. Before, the whole burst waited for the timers. The stop does not wait for
        them either (the listener wakes the pipeline: ``serving`` allows 60 s)."""
        s = settings_for(broker.url, influx_db.url, influx_db.db, tmp_path)
        ts = now_s()
        values = {"a21026": (30.0, "N"), "a19001": (10.0, "N")}  # two readings a packet

        async def main() -> None:
            async with serving(s, engine_feed=False, flush_interval=120.0, batch_size=40) as svc:
                svc.idle_flush = 120.0  # the idle timer too: only a drained burst may be written before 120 s
                port = svc.listener.port  # type: ignore[union-attr]  # running: its listener is up
                first = await LoggerConn.open(port)
                await first.send(realtime(CEMS, ts - 60, values))
                await until(lambda: svc.counters.received == 1, what="the first packet taken")
                await first.no_answer(1.0)
                assert not influx_db.query("SELECT value FROM reading")
                burst = [await LoggerConn.open(port) for _ in range(12)]
                for i, conn in enumerate(burst):
                    conn.writer.write(realtime(CEMS, ts - i, values))
                for conn in [first, *burst]:
                    assert (await conn.answer()).cn == "9014"  # within 30 s, not the timers' 120 s
                    conn.close()
                assert svc.counters.written == 26

        asyncio.run(main())
        assert len(influx_db.query("SELECT value FROM reading")) == 26


class TestPackets:
    """Each kind of packet over real TCP: stored, refused with its reason, or answered as the standard says."""

    def test_packet_kinds(self, broker: Broker, influx_db: InfluxDB, tmp_path: Path) -> None:
        s = settings_for(broker.url, influx_db.url, influx_db.db, tmp_path)
        ts = now_s() - 3600

        async def main() -> None:
            async with serving(s) as svc:
                port = svc.listener.port  # type: ignore[union-attr]  # running: its listener is up
                c = await LoggerConn.open(port)
                # split packet: two parts, one QN, reassembled; both parts acknowledged once durable
                qn = datetime.now(TZ).strftime("%Y%m%d%H%M%S%f")[:17]
                part1 = packet(CEMS, "2011", [{"DataTime": datatime(ts)}, {"a21026-ZsRtd": "20.5",
                                                                           "a21026-Flag": "N"}],
                               flag=7, qn=qn, pnum=2, pno=1)
                part2 = packet(CEMS, "2011", [{"a19001-Rtd": "10.5", "a19001-Flag": "N"}], flag=7, qn=qn, pnum=2,
                               pno=2)
                # two packets in one read: the first split part and a heartbeat
                heartbeat = packet(CEMS, "9015", [], flag=5)
                await c.send(part1 + heartbeat)
                hb = await c.answer()
                assert hb.cn == "9014" and svc.counters.written == 0  # heartbeat answered, nothing stored yet
                # the second part across 100 writes, after garbage
                await c.send(b"\x16\x03\x01 garbage\r\n")
                step = -(-len(part2) // 100)
                for i in range(0, len(part2), step):
                    await c.send(part2[i:i + step])
                acks = [await c.answer(), await c.answer()]
                assert [a.cn for a in acks] == ["9014", "9014"] and {a.qn for a in acks} == {qn}
                # minute data of the outfall (2005-era code too) -> hj212 measurement
                minute = packet(OUTFALL, "2051", [{"DataTime": datatime(ts - ts % 60)},
                                                  {"w01018-Avg": "35.2", "w01018-Min": "30.1", "w01018-Max": "40.0",
                                                   "w01018-Cou": "12.5", "w01018-Flag": "N"},
                                                  {"011-Avg": "33.0", "011-Flag": "C"},
                                                  {"w99999-Avg": "1"}], pw="x")
                await c.send(minute)
                assert (await c.answer()).cn == "9014"
                # HJ 212-2025 with SM4: decrypted and stored; the wrong key is refused
                boiler = realtime(BOILER, ts, {"a21002": (120.0, "N")}, pw="654321", key=KEY, flag=9)
                await c.send(boiler)
                b_ack = await c.answer()
                assert (b_ack.cn, b_ack.flag) == ("9014", 8)
                await c.send(realtime(BOILER, ts, {"a21002": (121.0, "N")}, pw="654321", key="0" * 32, flag=9))
                # refused: unknown MN, wrong PW, out of range is stored bad *and* dead-lettered (and acked)
                await c.send(realtime("NOSUCHMN0000001", ts, {"a21026": (1.0, "N")}))
                await c.send(realtime(CEMS, ts + 30, {"a21026": (1.0, "N")}, pw="000000"))
                await c.send(realtime(CEMS, ts + 60, {"a21026": (900.0, "T")}))
                assert (await c.answer()).cn == "9014"
                # time calibration request -> the platform sets the logger's clock (1012)
                await c.send(packet(CEMS, "1013", [], flag=5))
                t = await c.answer()
                assert t.cn == "1012" and abs(int(t.items()["SystemTime"][-2:]) - datetime.now(TZ).second) % 60 < 5
                await until(lambda: influx_db.count("dead_letter") >= 5, what="the dead letters")
                m = svc.hj212_metrics
                assert m.unmapped.labels(OUTFALL, "w99999")._value.get() == 1
                assert m.refused.labels("-", "unknown_mn")._value.get() == 1
                # as a scrape reads them: the per-logger families are the registry's view of plain counts
                sample = svc.metrics.registry.get_sample_value
                assert sample("smartpark_hj212_acks_total", {"mn": CEMS}) == 4  # heartbeat, two parts, out of range
                assert sample("smartpark_hj212_packets_total", {"mn": CEMS}) == m.loggers[CEMS][0] >= 5
                last = sample("smartpark_hj212_last_packet_timestamp_seconds", {"mn": CEMS})
                assert last is not None and abs(last - time.time()) < 60
                c.close()

        asyncio.run(main())
        readings = {(r["sensor"], r["time"]): r for r in influx_db.query("SELECT * FROM reading")}
        assert readings[("so2", ts * 1000)]["value"] == 20.5 and readings[("o2", ts * 1000)]["value"] == 10.5
        assert readings[("nox", ts * 1000)]["value"] == 120.0
        bad = readings[("so2", (ts + 60) * 1000)]
        assert bad["value"] == 900.0 and bad["quality"] == "bad" and bad["flag"] == "T"
        assert ("so2", (ts + 30) * 1000) not in readings
        period = {r["sensor"]: r for r in influx_db.query("SELECT * FROM hj212")}
        assert {k: period["cod"][k] for k in ("avg", "min", "max", "cou", "cn", "flag")} == \
            {"avg": 35.2, "min": 30.1, "max": 40.0, "cou": 12.5, "cn": "2051", "flag": None}
        assert period["cod_2005"]["avg"] == 33.0 and period["cod_2005"]["flag"] == "C"
        reasons = sorted(r["reason"] for r in influx_db.query("SELECT * FROM dead_letter"))
        assert reasons == ["hj212_auth", "hj212_decrypt", "hj212_frame", "out_of_range", "unknown_mn"]
        topics = {r["reason"]: r["topic"] for r in influx_db.query("SELECT * FROM dead_letter")}
        assert topics["hj212_auth"] == f"hj212/{CEMS}" and topics["unknown_mn"] == "hj212/NOSUCHMN0000001"

    def test_many_connections_opened_and_dropped(self, broker: Broker, influx_db: InfluxDB, tmp_path: Path) -> None:
        """1,000 connections opened and dropped (some mid-packet) leave the server serving the next logger."""
        s = settings_for(broker.url, influx_db.url, influx_db.db, tmp_path)

        async def main() -> None:
            async with serving(s, engine_feed=False) as svc:
                port = svc.listener.port  # type: ignore[union-attr]  # running: its listener is up
                half = realtime(CEMS, now_s(), {"a21026": (5.0, "N")})[:40]
                for start in range(0, 1000, 200):
                    conns = await asyncio.gather(*(LoggerConn.open(port) for _ in range(200)))
                    for i, c in enumerate(conns):
                        if (start + i) % 3 == 0:
                            c.writer.write(half)
                        c.close()
                    await asyncio.gather(*(c.writer.wait_closed() for c in conns), return_exceptions=True)
                await until(lambda: svc.hj212_metrics.connections._value.get() == 0, what="all closed")
                assert svc.listener is not None and svc.listener.connects == 1000
                c = await LoggerConn.open(port)
                await c.send(realtime(CEMS, now_s(), {"a21026": (6.0, "N")}))
                assert (await c.answer()).cn == "9014"
                c.close()

        asyncio.run(main())

    def test_a_good_packet_ends_the_count_of_garbage(self, broker: Broker, influx_db: InfluxDB,
                                                     tmp_path: Path) -> None:
        """Garbage without a '##' counts towards the 10,000-byte bound only until a good packet comes: a read
        that is one whole packet (taken by hj212._speedups.common_packet, past the frame reader) resets it, as
        a packet cut by the reader does. 9,000 bytes, a packet, 2,000 bytes, a packet: both acked, still open."""
        s = settings_for(broker.url, influx_db.url, influx_db.db, tmp_path)

        async def main() -> None:
            async with serving(s, engine_feed=False) as svc:
                port = svc.listener.port  # type: ignore[union-attr]  # running: its listener is up
                c = await LoggerConn.open(port)
                for i, garbage in enumerate((9_000, 2_000)):
                    await c.send(b"x" * garbage)
                    await asyncio.sleep(0.2)  # read on its own, before the packet
                    await c.send(realtime(CEMS, now_s() - 60 + i, {"a21026": (5.0 + i, "N")}))
                    assert (await c.answer()).cn == "9014"
                assert svc.counters.written >= 2
                # the garbage came in reads of its own: one with the packet would be a dead letter before '##'
                assert influx_db.count("dead_letter") == 0
                c.close()

        asyncio.run(main())

    def test_slow_logger_delays_no_other_and_idle_is_closed(self, broker: Broker, influx_db: InfluxDB,
                                                            tmp_path: Path) -> None:
        """A logger stuck half-way through a packet (and one sending endless garbage) does not hold back
        another logger's 9014; the stuck one is closed after the idle timeout, the garbage one at once."""
        s = settings_for(broker.url, influx_db.url, influx_db.db, tmp_path)

        async def main() -> None:
            async with serving(s, engine_feed=False, idle_timeout=1.0) as svc:
                port = svc.listener.port  # type: ignore[union-attr]  # running: its listener is up
                stuck, noisy, good = [await LoggerConn.open(port) for _ in range(3)]
                await stuck.send(realtime(CEMS, now_s(), {"a21026": (5.0, "N")})[:50])
                await noisy.send(b"x" * 12_000)
                await good.send(realtime(CEMS, now_s(), {"a21026": (6.0, "N")}))
                assert (await good.answer()).cn == "9014"
                async with asyncio.timeout(30):
                    assert await noisy.reader.read(100) == b""  # closed: no '##' in over 10,000 bytes
                    assert await stuck.reader.read(100) == b""  # closed after the idle timeout
                good.close()

        asyncio.run(main())


class TestDeadLetterOnce:
    """A reading out of its instrument range is stored as bad and dead-lettered once, by ``hj212 serve``
    (topic ``hj212/<MN>``, the packet), although the collector stores the engine feed's snapshot as well."""

    def test_out_of_range_is_one_dead_letter_with_the_collector_running(self, broker: Broker, influx_db: InfluxDB,
                                                                        tmp_path: Path) -> None:
        s = settings_for(broker.url, influx_db.url, influx_db.db, tmp_path)
        ts = now_s() - 600

        async def main() -> None:
            collector = Collector(s, PARK, flush_interval=0.1)
            cstop = asyncio.Event()
            ctask = asyncio.create_task(collector.run(cstop))
            await until(lambda: collector.source is not None and collector.source.connected.is_set(),
                        what="the collector's subscription")
            async with serving(s) as svc:
                c = await LoggerConn.open(svc.listener.port)  # type: ignore[union-attr]  # running: its listener is up
                await c.send(realtime(CEMS, ts, {"a21026": (900.0, "N"), "a19001": (10.0, "N")}))
                assert (await c.answer()).cn == "9014"
                # the collector took the fed snapshot (its two readings, SO2 as bad) and stored it too
                await until(lambda: collector.counters.written >= 2, what="the collector's copy of the readings")
                c.close()
            cstop.set()
            await asyncio.wait_for(ctask, 60)  # its last batch (and any dead letter in it) is written

        asyncio.run(main())
        letters = influx_db.query("SELECT * FROM dead_letter")
        assert [(r["reason"], r["topic"]) for r in letters] == [("out_of_range", f"hj212/{CEMS}")]
        assert "a21026-ZsRtd=900" in letters[0]["payload"]
        so2 = [r for r in influx_db.query("SELECT * FROM reading") if r["sensor"] == "so2"]
        assert [(r["value"], r["quality"], r["time"]) for r in so2] == [(900.0, "bad", ts * 1000)]


class TestBackpressure:
    """When the collector is behind, the listener stops reading (TCP backpressure) and loses nothing."""

    def test_reading_pauses_while_influxdb_hangs_then_every_packet_is_acked(
            self, stack_factory: Callable[..., Stack], tmp_path: Path) -> None:
        """InfluxDB frozen (SIGSTOP: writes hang, nothing spools): batches back up, the inbox of 3 fills and
        the connection's reading pauses, with no 9014; once InfluxDB runs again every packet is stored and
        acknowledged and reading resumes."""
        stack = stack_factory()
        s = settings_for(stack.mqtt_url, stack.influx_url, "hj212_backpressure", tmp_path)
        sent = 0

        async def main() -> None:
            nonlocal sent
            async with serving(s, engine_feed=False, max_pending=3, write_timeout=120.0) as svc:
                listener = svc.listener
                assert listener is not None
                logger = await LoggerConn.open(listener.port)
                t0 = now_s() - 600
                await logger.send(realtime(CEMS, t0, {"a21026": (5.0, "N")}))
                sent = 1
                assert (await logger.answer()).cn == "9014"
                pid = stack.pid("influxd")
                assert pid is not None
                os.kill(pid, signal.SIGSTOP)
                try:
                    while not listener.paused and sent < 40:
                        await logger.send(realtime(CEMS, t0 + sent, {"a21026": (5.0 + sent, "N")}))
                        sent += 1
                        await asyncio.sleep(0.15)  # longer than the flush interval: a batch each
                    assert listener.paused == 1, "reading did not pause while the collector was behind"
                    queued = listener.queued
                    for _ in range(3):  # sent, but not read while paused
                        await logger.send(realtime(CEMS, t0 + sent, {"a21026": (5.0 + sent, "N")}))
                        sent += 1
                    await logger.no_answer(0.3)
                    assert listener.queued == queued
                finally:
                    os.kill(pid, signal.SIGCONT)
                for _ in range(sent - 1):
                    assert (await logger.answer()).cn == "9014"
                await until(lambda: listener.paused == 0, what="reading resumed")
                logger.close()

        asyncio.run(main())
        assert InfluxDB(stack.influx_url, "hj212_backpressure").count("reading") == sent


class TestCommandLine:
    """``smartpark hj212 serve`` as a process, fed by ``smartpark hj212 simulate``; SIGTERM exits 0."""

    def test_serve_and_simulate(self, broker: Broker, influx_db: InfluxDB, tmp_path: Path) -> None:
        port = free_port()
        env = {**os.environ, "SMARTPARK_MQTT_URL": broker.url, "SMARTPARK_INFLUX_URL": influx_db.url,
               "SMARTPARK_INFLUX_DB": influx_db.db, "SMARTPARK_STATE_DIR": str(tmp_path),
               "SMARTPARK_HJ212_LISTEN": f"127.0.0.1:{port}"}
        serve = subprocess.Popen([*SMARTPARK, "hj212", "serve"], env=env,
                                 stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(OSError):
                    import socket
                    socket.create_connection(("127.0.0.1", port), 1).close()
                    break
                assert time.monotonic() < deadline and serve.poll() is None, "hj212 serve did not listen"
                time.sleep(0.1)
            sim = subprocess.run([*SMARTPARK, "hj212", "simulate", "--duration", "90s",
                                  "--speed", "0"], env=env, capture_output=True, text=True, timeout=120)
            assert sim.returncode == 0, sim.stderr
            sent, acked = (int(w) for w in sim.stderr.split() if w.isdigit())
            assert sent > 0 and acked == sent, sim.stderr
        finally:
            serve.send_signal(signal.SIGTERM)
            _, err = serve.communicate(timeout=60)
        assert serve.returncode == 0, err
        sensors = {r["sensor"] for r in influx_db.query("SELECT count(value) FROM reading GROUP BY sensor")}
        assert {"so2", "nox", "pm", "cod", "ph"} <= sensors

    @pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
    def test_address_in_use_is_one_line_and_exit_1(self, tmp_path: Path, loop: str) -> None:
        """A taken --hj212-listen address: exit 1 with one line naming it, no traceback (either event loop)."""
        import socket
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            r = subprocess.run([*SMARTPARK, "hj212", "serve", "--no-engine-feed", "--loop", loop,
                                "--hj212-listen", f"127.0.0.1:{port}", "--state-dir", str(tmp_path)],
                               capture_output=True, text=True, timeout=120)
        assert r.returncode == 1 and "Traceback" not in r.stderr
        assert f"cannot listen on 127.0.0.1:{port}" in r.stderr.strip().splitlines()[-1]
