"""A small park in the park's time zone (Asia/Shanghai) with regulated sensors, and a day of its readings, for the
rollup and report tests."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from smartpark.config import Settings
from smartpark.influx import InfluxClient

TZ = ZoneInfo("Asia/Shanghai")
# 2026-11-20 00:00 in Beijing = 2026-11-19 16:00 UTC: the day the tests look at
DAY0 = int(datetime(2026, 11, 20, tzinfo=TZ).timestamp() * 1000)
HOUR = 3_600_000

PARK = """\
park: {id: test_park, name: Test park, timezone: Asia/Shanghai}
sites:
  - id: wwtp
    name: Wastewater plant
    name_zh: 污水处理厂
    assets:
      - id: effluent
        name: Effluent
        name_zh: 出水
        sensors:
          - id: cod
            name: Chemical oxygen demand
            name_zh: 化学需氧量
            unit: mg/L
            range: [0, 500]
            normal: [15, 40]
            interval_s: 60
            limits: {hh: 50, h: 40}
            regulatory:
              - {limit: 50, averaging: 24h, source: "GB 18918-2002 class 1A"}
          - id: nh3_n
            name: Ammonia nitrogen
            name_zh: 氨氮
            unit: mg/L
            range: [0, 100]
            normal: [0.5, 4]
            interval_s: 60
            regulatory:
              - {limit: 5, averaging: 24h, source: "GB 18918-2002 class 1A"}
          - id: flow
            name: Flow
            unit: m3/h
            range: [0, 2000]
            normal: [100, 900]
            interval_s: 60
  - id: hw_center
    name: Incineration center
    name_zh: 危废焚烧中心
    assets:
      - id: scc
        name: Secondary chamber
        name_zh: 二燃室
        sensors:
          - id: temp
            name: Temperature
            name_zh: 温度
            unit: °C
            range: [0, 1600]
            normal: [1100, 1250]
            interval_s: 60
            regulatory:
              - {limit: 1100, averaging: 5min, comparator: min, source: "GB 18484-2020 Table 1"}
      - id: stack_cems
        name: Stack CEMS
        sensors:
          - id: so2
            name: Sulphur dioxide
            name_zh: 二氧化硫
            unit: mg/m3
            range: [0, 1000]
            normal: [10, 80]
            interval_s: 60
            regulatory:
              - {limit: 100, averaging: 1h, source: "GB 18484-2020 Table 3"}
              - {limit: 80, averaging: 24h, source: "GB 18484-2020 Table 3"}
"""


def write_park(tmp_path: Path) -> Path:
    path = tmp_path / "park.yaml"
    path.write_text(PARK, encoding="utf-8")
    return path


@dataclass(frozen=True)
class Point:
    site: str
    asset: str
    sensor: str
    ts: int
    value: float
    quality: str = "good"

    def line(self) -> str:
        q = "" if self.quality == "good" else f',quality="{self.quality}"'
        return f"reading,asset={self.asset},sensor={self.sensor},site={self.site} value={self.value!r}{q} {self.ts}"


def a_day(seed: int = 7, start: int = DAY0 - 2 * HOUR, end: int = DAY0 + 26 * HOUR) -> list[Point]:
    """Readings every minute from 22:00 the day before to 02:00 the day after (Beijing), with what a plant
    has: cod silent 01:00-06:00 (fewer than 20 valid hours), nh3_n bad for half of 09:00 and uncertain in
    10:00, an so2 exceedance hour 14:00, furnace dips below 1100 °C around 03:00."""
    rng = random.Random(seed)
    out: list[Point] = []
    for ts in range(start, end, 60_000):
        h = (ts - DAY0) // HOUR
        if not 1 <= h < 6:
            out.append(Point("wwtp", "effluent", "cod", ts, round(30 + rng.uniform(-8, 8) + (25 if h == 20 else 0), 3)))
        q = "bad" if h == 9 and (ts // 60_000) % 2 else "uncertain" if h == 10 else "good"
        out.append(Point("wwtp", "effluent", "nh3_n", ts, round(2 + rng.uniform(-1, 1), 3), q))
        out.append(Point("wwtp", "effluent", "flow", ts, round(500 + rng.uniform(-100, 100), 2)))
        dip = 3 * HOUR <= ts - DAY0 < 3 * HOUR + 20 * 60_000
        out.append(Point("hw_center", "scc", "temp", ts, round((1060 if dip else 1150) + rng.uniform(-20, 20), 1)))
        so2 = 40 + rng.uniform(-10, 10) + (90 if h == 14 else 0)
        out.append(Point("hw_center", "stack_cems", "so2", ts, round(so2, 2)))
    return out


def settings(url: str, db: str, state: Path, park: Path | None = None, **kw: Any) -> Settings:
    return Settings(influx_url=url, influx_db=db, state_dir=str(state), park=str(park) if park else None, **kw)


async def write_points(s: Settings, points: Iterable[Point], rp: str | None = None) -> None:
    lines = [p.line() for p in points]
    async with InfluxClient(s.influx()) as db:
        for i in range(0, len(lines), 5000):
            await db.write(lines[i:i + 5000], rp=rp)


T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class RunnerRig:
    """The real collector (in a thread: real mosquitto, real influxd) writing and journaling readings, and a
    rollup runner in this process turning over the same state directory, its clock passed in."""

    def __init__(self, broker_url: str, broker_port: int, influx_url: str, db: str, tmp_path: Path,
                 **runner_kw: Any) -> None:
        from test_collector_support import CollectorThread, Publisher, wait_connected

        from rollups import RollupRunner
        from smartpark.park import load_park

        self.park_path = write_park(tmp_path)
        self.park = load_park(self.park_path)
        self.settings = Settings(mqtt_url=broker_url, influx_url=influx_url, influx_db=db,
                                 park=str(self.park_path), state_dir=str(tmp_path / "state"))
        self.runner_kw = runner_kw
        self._new_runner = lambda: RollupRunner(self.settings, self.park, warm_h=0, **runner_kw)
        self.runner = self.start_runner()
        self.thread = CollectorThread(self.settings, self.park, flush_interval=0.2)
        collector = self.thread.__enter__()
        self.collector = collector
        wait_connected(collector)
        self.pub = Publisher(broker_port)
        self.sent = 0
        self.raw_rows = 0  # five-minute groups the runner read from raw over every turn

    def start_runner(self) -> Any:
        """A runner as after a (re)start: its horizon set from what raw holds now."""
        runner = self._new_runner()

        async def go() -> None:
            async with InfluxClient(self.settings.influx()) as db:
                await db.ensure_database()
                await runner.start(db, await db.ensure_retention())

        run(go())
        self.runner = runner
        return runner

    def publish(self, points: Iterable[Point]) -> None:
        """Publish readings (QoS 1) and wait until the collector has written them all."""
        import json

        from test_collector_support import wait_for

        batch = list(points)
        self.pub.publish((f"park/{p.site}/{p.asset}/{p.sensor}",
                          json.dumps({"value": p.value, "ts": p.ts, "quality": p.quality}).encode()) for p in batch)
        self.pub.wait_acked()
        self.sent += len(batch)
        wait_for(lambda: self.collector.counters.written >= self.sent, 60, "the readings written")

    def turn(self, now_ms: int | None = None) -> int:
        """One runner turn; returns the points it wrote."""
        from rollups import Rollups

        async def go() -> int:
            async with InfluxClient(self.settings.influx()) as db:
                rollups = Rollups(db, await db.ensure_retention(), "Asia/Shanghai")
                points = await self.runner.turn(rollups, now_ms)
                self.raw_rows += rollups.raw_rows
                return points

        return run(go())

    def close(self) -> None:
        self.pub.close()
        self.thread.__exit__(None, None, None)
