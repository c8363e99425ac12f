"""Helpers of the collector tests: the load (devstack/load.py, which the benchmarks use too) and what InfluxDB
holds of it."""

from __future__ import annotations

from typing import Any

from devstack.load import (
    TS0,
    CollectorThread,
    Publisher,
    big_park,
    readings,
    replay_process,
    settings_for,
    wait_connected,
    wait_for,
    write_park,
)

__all__ = ["TS0", "CollectorThread", "Publisher", "big_park", "readings", "replay_process", "settings_for",
           "stored", "wait_connected", "wait_for", "write_park"]


def stored(db: Any) -> set[tuple[str, int, float]]:
    """``(key, ts, value)`` of every reading in the test database ``db`` (a ``services.InfluxDB``)."""
    rows = db.query('SELECT "value" FROM "reading" GROUP BY "site", "asset", "sensor"')
    return {(f"{r['site']}/{r['asset']}/{r['sensor']}", int(r["time"]), float(r["value"])) for r in rows}
