"""Rollups of the readings (CONTRACT §10): ``reading_5m``, ``reading_1h``, ``reading_1d`` in retention policy
``rollup``, kept equal to the InfluxQL aggregation over ``raw`` also when readings arrive late.

Writers note each batch they wrote (its five-minute periods and its lines) in a :class:`Journal`; a
:class:`RollupRunner` aggregates the windows it has seen from their start itself (:class:`Windows`) and
recomputes the other touched periods from raw with :class:`Rollups`.
"""

from .compute import PERIODS, Agg, Rollups, day_start
from .journal import PERIOD_MS, Journal, touched_periods
from .runner import RollupRunner, journal_for
from .windows import Windows

__all__ = ["PERIODS", "PERIOD_MS", "Agg", "Journal", "RollupRunner", "Rollups", "Windows", "day_start",
           "journal_for", "touched_periods"]
