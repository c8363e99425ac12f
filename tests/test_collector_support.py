"""Helpers of the collector tests: the load (devstack/load.py, which the benchmarks use too) and what InfluxDB
holds of it."""

from __future__ import annotations

from typing import Any

from devstack.load import *  # noqa: F403  # the load's names, as the collector tests import them from here
from devstack.load import __all__ as _load_names

__all__ = [*_load_names, "stored"]


def stored(db: Any) -> set[tuple[str, int, float]]:
    """``(key, ts, value)`` of every reading in the test database ``db`` (a ``services.InfluxDB``)."""
    rows = db.query('SELECT "value" FROM "reading" GROUP BY "site", "asset", "sensor"')
    return {(f"{r['site']}/{r['asset']}/{r['sensor']}", int(r["time"]), float(r["value"])) for r in rows}
