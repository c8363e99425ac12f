"""Each stage of the collector alone: the spool, the MQTT packet parser, the InfluxDB answer handling."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest
from test_collector_support import TS0, big_park, settings_for, write_across_a_type_conflict

from collector import Collector, MqttSource, Record, Spool
from smartpark.config import parse_mqtt_url
from smartpark.influx import InfluxClient
from smartpark.mqtt import MQTT5, MQTT311
from smartpark.mqtt.codec import publish_packet
from smartpark.mqtt.connection import Connection as _Connection


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def segments(path: Path) -> int:
    return len(list(path.glob("*.seg")))


def rec(i: int, n: int = 3) -> Record:
    return Record("ms", [f"reading,site=s value={i}.{j} {TS0 + j}" for j in range(n)])


class TestSpool:
    def test_records_come_back_in_order_and_survive_a_restart(self, tmp_path: Path) -> None:
        """Appended records are replayed oldest first, also by a new Spool on the same directory."""
        async def go() -> None:
            async with Spool(tmp_path, 10**6) as spool:
                for i in range(5):
                    await spool.append([rec(i)])
                assert spool.peek() == rec(0)
                await spool.commit()
                assert spool.peek() == rec(1)
            async with Spool(tmp_path, 10**6) as spool:
                assert len(spool) == 4
                got = []
                while (r := spool.peek()) is not None:
                    got.append(r)
                    await spool.commit()
                assert got == [rec(i) for i in range(1, 5)]
            async with Spool(tmp_path, 10**6) as spool:
                assert spool.empty and spool.pending_bytes == 0
        run(go())

    def test_event_lines_with_newlines_round_trip(self, tmp_path: Path) -> None:
        """Dead-letter lines may hold newlines inside string fields: a record keeps its lines intact."""
        r = Record("ns", ['dead_letter,reason=bad_json payload="a\nb",topic="t",detail="x" 1'])

        async def go() -> Record | None:
            async with Spool(tmp_path, 10**6) as spool:
                await spool.append([r])
            async with Spool(tmp_path, 10**6) as spool:
                return spool.peek()
        assert run(go()) == r

    @pytest.mark.parametrize("damage", ["short", "crc"])
    def test_torn_tail_after_kill_is_cut_and_the_rest_kept(self, tmp_path: Path, damage: str) -> None:
        """A record half written (kill -9) or with a bad CRC at the end is cut off; earlier records stay."""
        async def write() -> None:
            async with Spool(tmp_path, 10**6) as spool:
                await spool.append([rec(0), rec(1)])
        run(write())
        seg = next(tmp_path.glob("*.seg"))
        data = seg.read_bytes()
        if damage == "short":
            seg.write_bytes(data + data[:20])
        else:
            seg.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))

        async def read() -> list[Record]:
            async with Spool(tmp_path, 10**6) as spool:
                out = []
                while (r := spool.peek()) is not None:
                    out.append(r)
                    await spool.commit()
                return out
        assert run(read()) == ([rec(0), rec(1)] if damage == "short" else [rec(0)])

    def test_full_spool_makes_append_wait_until_replay_frees_space(self, tmp_path: Path) -> None:
        """When full, ``append`` waits (the collector stops acking) until a commit makes room."""
        async def go() -> None:
            one = len(json.dumps(rec(0).lines)) + 9
            async with Spool(tmp_path, int(one * 2.5)) as spool:
                await spool.append([rec(0)])
                await spool.append([rec(1)])
                third = asyncio.create_task(spool.append([rec(2)]))
                for _ in range(20):
                    await asyncio.sleep(0)
                assert not third.done() and len(spool) == 2
                await spool.commit()
                await asyncio.wait_for(third, 10)
                assert [spool.peek()] == [rec(1)] and len(spool) == 2
        run(go())

    def test_segments_rotate_and_consumed_ones_are_deleted(self, tmp_path: Path) -> None:
        """Segments roll over at their size and are deleted once every record in them is replayed, the one
        being appended to as well once the spool is drained; the next append starts a new one."""
        async def go() -> None:
            async with Spool(tmp_path, 10**7, segment_bytes=300) as spool:
                for i in range(10):
                    await spool.append([rec(i)])
                assert segments(tmp_path) >= 3
                while spool.peek() is not None:
                    await spool.commit()
                assert segments(tmp_path) == 0
                await spool.append([rec(10)])
                assert segments(tmp_path) == 1 and spool.peek() == rec(10)
            async with Spool(tmp_path, 10**7, segment_bytes=300) as spool:
                assert spool.peek() == rec(10) and len(spool) == 1
                await spool.commit()
                assert segments(tmp_path) == 0
            # a restart finds no segment at all, only the replay position: what it appends next must come after
            # that position, or the restart after it would take the new records for replayed ones
            async with Spool(tmp_path, 10**7, segment_bytes=300) as spool:
                assert len(spool) == 0
                await spool.append([rec(11)])
            async with Spool(tmp_path, 10**7, segment_bytes=300) as spool:
                assert spool.peek() == rec(11) and len(spool) == 1
        run(go())


class TestPacketParser:
    class _Sink:
        def __init__(self) -> None:
            self._inbox: list[Any] = []

        def received(self, messages: list[Any]) -> bool:
            self._inbox += messages
            return False

        def acked(self, acks: list[tuple[int, int]]) -> None:
            pass

        def lost(self) -> None:
            pass

    @pytest.mark.parametrize("version", [MQTT5, MQTT311])
    @pytest.mark.parametrize("size", [0, 10, 200, 20_000, 3_000_000])
    def test_publishes_split_at_any_byte_are_parsed_whole(self, version: int, size: int) -> None:
        """PUBLISH packets arriving one byte at a time, or many in one read, come out whole and in order."""
        async def go() -> list[Any]:
            sink = self._Sink()
            conn = _Connection(version, 7, sink)
            payloads = [bytes([65 + i]) * (size + i) for i in range(3)]
            stream = b"".join(publish_packet(f"park/t/{i}", p, version, qos=1, mid=100 + i)
                              for i, p in enumerate(payloads))
            if size <= 200:
                for i in range(len(stream)):
                    conn.data_received(stream[i:i + 1])
            else:
                for i in range(0, len(stream), 65536):
                    conn.data_received(stream[i:i + 65536])
            assert [(m.topic, m.payload, m.mid, m.qos, m.gen) for m in sink._inbox] == [
                (f"park/t/{i}", p, 100 + i, 1, 7) for i, p in enumerate(payloads)]
            return sink._inbox
        run(go())


class TestMqtt311:
    def test_subscriber_works_with_mqtt_3_1_1(self, broker: Any) -> None:
        """The 3.1.1 path (fallback): connect, subscribe, receive at QoS 1 and ack on a persistent session."""
        async def go() -> tuple[list[Any], int]:
            src = MqttSource(parse_mqtt_url(broker.url), "c311", "park/#", protocol=MQTT311)
            async with src:
                stop = asyncio.Event()
                task = asyncio.create_task(src.run(stop))
                await asyncio.wait_for(src.connected.wait(), 10)
                proc = await asyncio.create_subprocess_exec(
                    "mosquitto_pub", "-p", str(broker.port), "-q", "1", "-t", "park/x/y/z", "-m", "42")
                await proc.wait()
                got = await src.take(10, 10)
                acked = src.ack(got)
                stop.set()
                await task
            return got, acked
        got, acked = run(go())
        assert [(m.topic, m.payload, m.qos) for m in got] == [("park/x/y/z", b"42", 1)]
        assert acked == 1


class TestInfluxAnswers:
    def test_type_conflict_partial_write_keeps_good_points_and_dead_letters_bad(
            self, influx_db: Any, tmp_path: Path) -> None:
        """A 400 partial write that names no line (field type conflict) is bisected: good points are kept,
        the refused ones become ``bad_value`` dead letters."""
        # a string 'value' in the shard of week 0 makes every float 'value' there a type conflict
        collector, _ = write_across_a_type_conflict(influx_db, tmp_path)
        rows = influx_db.query('SELECT "value" FROM "reading" WHERE "sensor" = \'s000\'')
        assert sorted(r["value"] for r in rows) == [1.5, 3.5, 5.5, 7.5]
        dead = influx_db.query('SELECT * FROM "dead_letter"')
        assert len(dead) == 4 and {d["reason"] for d in dead} == {"bad_value"}
        assert all("conflict" in d["detail"] for d in dead)
        assert collector.counters.written == 4 and collector.counters.invalid == 4


def test_cli_refuses_bad_numbers_with_exit_2(tmp_path: Path) -> None:
    """Bad options are a usage error (exit 2, one line), checked before any I/O."""
    from cli import main
    assert main(["collect", "--batch-size", "0", "--state-dir", os.fspath(tmp_path)]) == 2


def test_batch_over_influxdb_body_limit_is_split(influx_db: Any, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """413 (body over InfluxDB's max-body-size, 25 MB in our stack) splits the batch until it fits; all points land."""
    park_path, park = big_park(tmp_path)
    pad = "x" * 60
    lines = [f'reading,asset=a00,sensor=s001,site=plant value={i}.0,quality="{pad}" {TS0 + i}' for i in range(260_000)]
    assert sum(len(x) + 1 for x in lines) > 25_000_000
    settings = settings_for("mqtt://127.0.0.1:1", influx_db.url, influx_db.db, park_path, tmp_path)
    collector = Collector(settings, park, write_timeout=60)

    async def go() -> None:
        # gzip off: InfluxDB applies its limit to the body as sent
        async with InfluxClient(settings.influx(), timeout=60, gzip_min_bytes=10**12) as db:
            await collector._write(db, Record("ms", lines))
    run(go())
    assert influx_db.count("reading", "value") == 260_000
    assert collector.counters.written == 260_000
    assert "lines (413); splitting it" in caplog.text
