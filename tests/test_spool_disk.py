"""The spool on a disk that says no (full, read-only, a short write): a failed or short write is a failure and
never an ack; the collector holds the batch, stops acking and keeps running while the broker keeps the rest;
once there is room again (InfluxDB back, the disk writable) every reading is stored."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from services import InfluxDB
from test_collector_support import TS0, CollectorThread, Publisher, big_park, settings_for, wait_connected, wait_for

import collector.spool as spool_module
from collector import Collector
from collector.spool import Record, Spool, SpoolError
from devstack import Stack


def snapshots(assets: int, per_asset: int, steps: int) -> tuple[list[tuple[str, bytes]], set[tuple[str, int, float]]]:
    """``steps`` snapshots of every asset of :func:`big_park`: the messages and the points they become."""
    messages: list[tuple[str, bytes]] = []
    points: set[tuple[str, int, float]] = set()
    for k in range(steps):
        ts = TS0 + k * 1000
        for a in range(assets):
            values = {f"s{s:03d}": round((k * 7 + a * 13 + s) % 1000 + 0.125, 3) for s in range(per_asset)}
            messages.append((f"park/plant/a{a:02d}", json.dumps({"ts": ts, "values": values}).encode()))
            points |= {(f"plant/a{a:02d}/{name}", ts, v) for name, v in values.items()}
    return messages, points


def stored(db: InfluxDB) -> set[tuple[str, int, float]]:
    rows = db.query('SELECT "value" FROM "reading" GROUP BY "site", "asset", "sensor"')
    return {(f"{r['site']}/{r['asset']}/{r['sensor']}", int(r["time"]), float(r["value"])) for r in rows}


def metric(collector: Collector, name: str) -> float:
    """A value of the collector's Prometheus registry, as /metrics shows it."""
    value = collector.metrics.registry.get_sample_value(name)
    assert value is not None, name
    return value


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs mounted for the test (root only), unmounted after."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root and mount(8)")
    where = tmp_path / "disk"
    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


class TestFullDisk:
    """A 2 MB file system under the spool, InfluxDB stopped, 40,000 readings sent."""

    def test_every_reading_stored_after_a_full_disk(self, small_disk: Path, stack_factory: Callable[..., Stack],
                                                    tmp_path: Path) -> None:
        """The spool fills the disk and then fails; the collector keeps running without acking what it could
        not make durable, the broker keeps the rest; InfluxDB back: all 40,000 readings are stored, once, and
        a restart on the same spool finds no torn record and adds nothing."""
        stack = stack_factory()
        db = InfluxDB(stack.influx_url, "disk")
        db.create()
        park_path, park = big_park(tmp_path)
        messages, points = snapshots(10, 50, 80)
        settings_ = settings_for(stack.mqtt_url, stack.influx_url, db.db, park_path, small_disk / "state")
        thread = CollectorThread(settings_, park, instance="disk", batch_size=1000)
        with thread as collector:
            wait_connected(collector)
            stack.stop_influxd()
            pub = Publisher(stack.mqtt_port)
            pub.publish(messages)
            pub.wait_acked()

            def full() -> bool:
                assert thread.error is None, thread.error
                return collector.spool is not None and collector.spool.error is not None

            wait_for(full, 60, "the spool to report the full disk")
            assert collector.spool is not None and "full" in str(collector.spool.error)
            assert metric(collector, "smartpark_collector_spool_errors_total") >= 1
            assert metric(collector, "smartpark_collector_spool_writable") == 0
            spooled = collector.counters.spooled
            assert spooled < len(points)  # the disk could not hold them all: the broker has the rest
            stack.start_influxd()
            # stored, and the spool drained (its last commit follows its last write by a moment)
            wait_for(lambda: thread.error is None and len(stored(db)) >= len(points)
                     and collector.spool is not None and collector.spool.empty, 180,
                     lambda: f"{len(stored(db))} of {len(points)} readings stored")
            pub.close()
        assert stored(db) == points
        assert db.count("dead_letter") == 0
        with CollectorThread(settings_, park, instance="disk", batch_size=1000) as again:
            wait_connected(again)
            assert again.spool is not None and again.spool.error is None and again.spool.empty
        assert stored(db) == points


def fill(path: Path) -> None:
    """Take every byte the file system has left."""
    with open(path, "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"x" * 4096)


def test_a_drained_spool_gives_a_full_disk_its_room_back(small_disk: Path) -> None:
    """The spool fills the disk, something else takes the last free bytes, then every record is replayed:
    the drained spool deletes its segment (the one it was appending to as well), so the disk has room again,
    the replay position is recorded, and a restart finds nothing to send twice. Before, the last segment
    stayed: the disk stayed full, and all its records came back after a restart."""
    where = small_disk / "spool"

    async def fill_then_drain() -> int:
        async with Spool(where, 10**8) as spool:
            n = 0
            with pytest.raises(SpoolError):
                while True:
                    await spool.append([Record("ms", [f"reading,site=s v={n}.{j} {j}" for j in range(2000)])])
                    n += 1
            fill(small_disk / "filler")
            assert len(spool) == n > 0
            while spool.peek() is not None:
                await spool.commit()
            assert not list(where.glob("*.seg"))
            assert (where / "cursor").read_text().split() != ["0", "0"]  # there was room to record it
            await spool.append([Record("ms", ["reading,site=s v=1 1"])])  # and to write again
            await spool.commit()
        return n

    assert asyncio.run(fill_then_drain()) > 1

    async def reopen() -> int:
        async with Spool(where, 10**8) as spool:
            return len(spool)

    assert asyncio.run(reopen()) == 0


def test_read_only_spool_dir_is_not_a_crash(small_disk: Path, stack_factory: Callable[..., Stack],
                                            tmp_path: Path) -> None:
    """A read-only spool directory: the collector starts, says so, stores directly while InfluxDB answers;
    with InfluxDB down it holds its batches unacked; writable again and InfluxDB back: every reading stored."""
    stack = stack_factory()
    db = InfluxDB(stack.influx_url, "ro")
    db.create()
    park_path, park = big_park(tmp_path)
    messages, points = snapshots(2, 50, 10)
    first, second = messages[:10], messages[10:]
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    settings_ = settings_for(stack.mqtt_url, stack.influx_url, db.db, park_path, small_disk / "state")
    thread = CollectorThread(settings_, park, instance="ro", batch_size=100)
    with thread as collector:
        wait_connected(collector)
        assert collector.spool is not None and "read-only" in str(collector.spool.error)
        pub = Publisher(stack.mqtt_port)
        pub.publish(first)
        wait_for(lambda: len(stored(db)) >= 500, 60, "the readings written directly")
        stack.stop_influxd()
        pub.publish(second)
        pub.wait_acked()
        wait_for(lambda: metric(collector, "smartpark_collector_spool_errors_total") >= 1, 60,
                 "a batch the spool refused")
        assert thread.error is None
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
        stack.start_influxd()
        wait_for(lambda: thread.error is None and len(stored(db)) >= len(points), 120,
                 lambda: f"{len(stored(db))} of {len(points)} readings stored")
        pub.close()
    assert stored(db) == points


def segment_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("*.seg"))


class TestShortWrite:
    """An injected short write (``os.write`` writing part of the batch, then the disk full)."""

    def test_short_write_is_a_failure_and_leaves_no_torn_record(self, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
        """The append raises, the segment is cut back to the records before it, the next append succeeds and a
        reopened spool holds exactly the records that were reported durable."""
        real_write = os.write
        calls: list[int] = []

        def short_then_full(fd: int, data: Any) -> int:
            calls.append(len(data))
            if len(calls) == 1:
                return real_write(fd, bytes(data)[: len(data) // 3])
            raise OSError(errno.ENOSPC, "No space left on device")

        async def run() -> None:
            async with Spool(tmp_path, 10_000_000) as spool:
                await spool.append([Record("ms", ["a 1", "b 2"])])
                size = segment_bytes(tmp_path)
                monkeypatch.setattr(spool_module.os, "write", short_then_full)
                with pytest.raises(SpoolError) as info:
                    await spool.append([Record("ms", [f"c {i}" for i in range(1000)])])
                assert info.value.errno == errno.ENOSPC
                assert "full" in str(spool.error)
                assert len(calls) == 2
                assert segment_bytes(tmp_path) == size
                monkeypatch.setattr(spool_module.os, "write", real_write)
                await spool.append([Record("ns", ["d 3"])])
                assert spool.error is None
                assert len(spool) == 2
            async with Spool(tmp_path, 10_000_000) as again:
                got = []
                while (rec := again.peek()) is not None:
                    got.append(rec)
                    await again.commit()
                assert got == [Record("ms", ["a 1", "b 2"]), Record("ns", ["d 3"])]

        asyncio.run(run())
