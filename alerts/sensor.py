"""What the engine keeps per sensor (:class:`SensorState`): ``Engine.process`` touches only this object and
the sensor's alarms, so one reading costs a list index and attribute reads. Grouped by the rule that uses it."""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING

from smartpark.park import SensorRef

if TYPE_CHECKING:
    from .alarm import Alarm, PlantStateRt
    from .averages import Buckets

RECENT = 32  # timestamps remembered per sensor to recognise a redelivered reading


class SensorState:
    """Everything the engine keeps per sensor, with its alarms."""

    __slots__ = (
        "asset_states", "bad_ms", "bad_since", "bq", "bucket", "bucket_alarms", "custom", "exc", "exc_count",
        "exc_day_end", "hi", "hot", "instant", "last_seen", "last_ts", "limits", "lo", "nd", "nodata_ms", "oor",
        "qhi", "qlo", "recent", "ref", "roc", "roc_dq", "roc_rate", "roll", "roll_dq", "roll_n_need", "roll_sum",
        "stuck", "stuck_ms", "stuck_since", "stuck_v",
    )

    def __init__(self, ref: SensorRef) -> None:
        s = ref.sensor
        self.ref = ref
        # time: the newest evaluated, the last sign of life, the last original timestamps
        self.last_ts = -1
        self.last_seen: int | None = None
        self.recent: deque[int] = deque(maxlen=RECENT)
        # sensor health: no_data, out_of_range, bad_quality, stuck
        self.lo, self.hi = s.range
        self.nodata_ms = int(3 * s.interval_s * 1000)
        self.bad_ms = int((s.bad_quality_s or 3 * s.interval_s) * 1000)
        self.bad_since: int | None = None  # time of the first of the current run of bad readings
        self.bq: Alarm
        self.nd: Alarm
        self.oor: Alarm
        self.stuck: Alarm
        self.stuck_ms = int((s.stuck_s or (4 * s.sample_cycle_s if s.sample_cycle_s else max(600.0, 10 * s.interval_s)))
                            * 1000)
        self.stuck_v: float | None = None
        self.stuck_since = 0
        # limits ll l h hh: the quiet band outside which they are skipped, and whether one is active or pending
        self.limits: list[Alarm] = []
        self.qlo, self.qhi = -math.inf, math.inf
        self.hot = False
        # rate of change over the last minute
        self.roc: Alarm | None = None
        self.roc_rate = s.rate_per_min or 0.0
        self.roc_dq: deque[tuple[int, float]] = deque()
        # regulatory: instant, rolling 5-minute mean and its day's excursions, clock-hour/day/month buckets
        self.instant: Alarm | None = None
        self.roll: Alarm | None = None
        self.roll_dq: deque[tuple[int, float]] = deque()
        self.roll_sum = 0.0
        self.roll_n_need = 0
        self.exc: Alarm | None = None
        self.exc_count = 0
        self.exc_day_end = 0
        self.bucket: Buckets | None = None
        self.bucket_alarms: dict[str, Alarm] = {}
        # custom rules and plant states that read this sensor
        self.custom: list[Alarm] = []
        self.asset_states: list[PlantStateRt] = []
