"""The regulatory averages: which readings count and when an average is valid. One definition, imported by the
alert engine (what it judges), the compliance report (what it prints) and the dashboards (what operators see).

- A reading is *valid* (it counts in an average) unless its quality is ``bad`` or it carries an HJ 212 data flag
  other than ``N`` (normal) and ``S`` (set value): quality ``uncertain`` counts; a flag ``F M D C T B`` (stopped,
  maintenance, fault, calibration, over range, communication) does not, whatever quality came with it. The
  decoder gives a flagged reading without a quality the quality of its flag (CONTRACT §2), so both are stored.
- Five-minute mean (GB 18484-2020 3.9, furnace temperature): the mean of the valid readings in the five minutes
  up to each valid reading, with at least ``min_valid`` (default 75 %) of the readings expected there.
- Hourly mean (HJ 75-2017): the mean of a clock hour's valid readings, valid with ``min_valid`` (default 75 %:
  45 of 60 minutes) of the hour's expected readings; the ``min_valid`` of the sensor's 1 h entry, if any.
- Daily mean (GB 18484-2020 3.18/3.19, also used for GB 18918): the mean of the valid hours' means of a natural
  day in the park's time zone, valid with at least 20 valid hours, or ``min_valid`` of the day's hours when the
  24 h entry says so.
- Monthly mean: the mean of the valid days' means of a calendar month, valid with at least 27 valid days (25 in
  February, as GB 3095-2012 asks of a monthly mean), or ``min_valid`` of the month's days.
"""

from __future__ import annotations

import math

from .park import Regulatory, Sensor

VALID_FLAGS = frozenset({None, "N", "S"})
DEFAULT_MIN_VALID = 0.75
DAY_VALID_HOURS = 20
FIVE_MIN_MS = 300_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000


def is_valid(quality: str | None, flag: str | None) -> bool:
    """Whether a reading counts in a regulatory average."""
    return quality != "bad" and flag in VALID_FLAGS


def entry(sensor: Sensor, averaging: str) -> Regulatory | None:
    """The sensor's regulatory entry with that averaging, if any."""
    return next((r for r in sensor.regulatory if r.averaging == averaging), None)


def violates(reg: Regulatory, v: float, margin: float = 0.0) -> tuple[bool, float]:
    """Whether ``v`` breaks the regulatory limit (by ``margin`` inside it), and the limit it is judged by."""
    lim = reg.limit
    if reg.comparator == "max":
        return v > lim - margin, float(lim)  # type: ignore[operator, arg-type]  # a number for max and min
    if reg.comparator == "min":
        return v < lim + margin, float(lim)  # type: ignore[operator, arg-type]  # a number for max and min
    lo, hi = lim  # type: ignore[misc]  # a [lo, hi] pair for a range
    return (v < lo + margin or v > hi - margin), float(lo if v < (lo + hi) / 2 else hi)


def readings_needed(sensor: Sensor, window_ms: int, min_valid: float | None) -> int:
    """Valid readings that make a valid average over ``window_ms``: ``min_valid`` (75 %) of those expected."""
    share = min_valid or DEFAULT_MIN_VALID
    return max(1, math.ceil(share * window_ms / 1000 / sensor.interval_s - 1e-9))


def five_min_need(sensor: Sensor) -> int:
    reg = entry(sensor, "5min")
    return readings_needed(sensor, FIVE_MIN_MS, reg.min_valid if reg else None)


def hour_need(sensor: Sensor) -> int:
    reg = entry(sensor, "1h")
    return readings_needed(sensor, HOUR_MS, reg.min_valid if reg else None)


def day_need(sensor: Sensor, hours: int = 24) -> int:
    """Valid hours that make a valid day of ``hours`` hours (23 or 25 where the zone has DST)."""
    reg = entry(sensor, "24h")
    return math.ceil(reg.min_valid * hours - 1e-9) if reg and reg.min_valid else DAY_VALID_HOURS


def month_need(sensor: Sensor, month: int, days: int) -> int:
    """Valid days that make a valid calendar month (``month`` 1..12) of ``days`` days."""
    reg = entry(sensor, "monthly")
    if reg and reg.min_valid:
        return math.ceil(reg.min_valid * days - 1e-9)
    return 25 if month == 2 else 27
