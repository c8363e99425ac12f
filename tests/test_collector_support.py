"""Helpers of the collector tests: the load (devstack/load.py, which the benchmarks use too) and what InfluxDB
holds of it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from devstack.load import *  # noqa: F403  # the load's names, as the collector tests import them from here
from devstack.load import __all__ as _load_names

__all__ = [*_load_names, "stored", "write_across_a_type_conflict"]


def stored(db: Any) -> set[tuple[str, int, float]]:
    """``(key, ts, value)`` of every reading in the test database ``db`` (a ``services.InfluxDB``)."""
    rows = db.query('SELECT "value" FROM "reading" GROUP BY "site", "asset", "sensor"')
    return {(f"{r['site']}/{r['asset']}/{r['sensor']}", int(r["time"]), float(r["value"])) for r in rows}


def write_across_a_type_conflict(db: Any, tmp_path: Path) -> tuple[Any, list[str]]:
    """Eight readings of s000 alternating between two weeks' shards, one of which already holds a string
    ``value`` (a field type conflict for floats), written by the real collector's ``_write``: the collector
    and the lines sent."""
    from collector import Collector, Record
    from devstack.load import TS0, big_park, settings_for
    from smartpark.influx import InfluxClient

    park_path, park = big_park(tmp_path)
    week = 7 * 86_400_000
    db.write(f'reading,site=plant,asset=a00,sensor=s999 value="text" {TS0}')
    lines = [f"reading,asset=a00,sensor=s000,site=plant value={i}.5 {TS0 + (i % 2) * 2 * week + i}" for i in range(8)]
    settings = settings_for("mqtt://127.0.0.1:1", db.url, db.db, park_path, tmp_path)
    collector = Collector(settings, park)

    async def go() -> None:
        async with InfluxClient(settings.influx()) as client:
            await collector._write(client, Record("ms", lines))
    asyncio.run(go())
    return collector, lines
