"""Rollups of the readings (CONTRACT §10): ``reading_5m``, ``reading_1h``, ``reading_1d`` in retention policy
``rollup``, kept equal to the InfluxQL aggregation over ``raw`` also when readings arrive late.

Writers note the five-minute periods they touched in a :class:`Journal`; a :class:`RollupRunner` recomputes
them with :class:`Rollups`.
"""

from .compute import PERIODS, Agg, Rollups, day_start
from .journal import PERIOD_MS, Journal, touched_periods
from .runner import RollupRunner, journal_for

__all__ = ["PERIODS", "PERIOD_MS", "Agg", "Journal", "RollupRunner", "Rollups", "day_start", "journal_for",
           "touched_periods"]
