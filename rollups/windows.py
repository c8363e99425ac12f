"""Five-minute windows aggregated from the journal's readings, exactly as InfluxDB holds them in ``raw``.

A window may be computed here only if the runner has seen it from its first point on: it starts at or after
the horizon ``t0`` (since which the journal is known complete), and it has not been finished yet. Every
other reading sends its window to the raw recompute (InfluxQL), which is always right.

InfluxDB keeps one point per series and timestamp and merges the fields of later writes into it: a later
``value`` overwrites, a ``quality`` written once stays unless overwritten. A redelivered or resent reading is
journaled again; an open window therefore keeps, per series, ``{ts: value}`` (the journal's order is the
order InfluxDB answered the writes in, so the last value noted is the one stored) and the set of timestamps
that carry a ``quality`` (written only when it is not ``good``). ``good`` = timestamps without one.

A window is finished once the journal's data time (the newest reading seen) and the wall clock have both
passed its end by ``lateness_ms``; afterwards nothing of it is kept but the finish horizon, a single
number: a reading for a window that ended before it is late and goes to the raw recompute.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass

from .compute import Agg, Key
from .journal import PERIOD_MS

log = logging.getLogger(__name__)

NEG_INF = -(1 << 62)
Cell = tuple[dict[int, float], set[int]]  # one series in one window: value per ts, the ts with a quality


@dataclass(slots=True)
class WindowStats:
    readings: int = 0  # journaled readings folded into open windows
    finished: int = 0  # windows computed from the journal
    to_raw: int = 0  # windows sent to the raw recompute (before t0, late, poisoned, torn, over the bound)


class Windows:
    """The open windows: :meth:`fold` the journal's lines, :meth:`finish` what the horizon has passed."""

    def __init__(self, t0_ms: int, *, lateness_ms: int = 120_000, max_held: int = 2_000_000) -> None:
        self.t0 = t0_ms  # windows starting before it: raw
        self.lateness = lateness_ms
        self.max_held = max_held
        self.open: dict[int, dict[str, Cell]] = {}
        self.poisoned: set[int] = set()  # not ended yet, but already given to the raw recompute
        self.data_time = NEG_INF  # the newest reading journaled
        self.horizon = NEG_INF  # windows ending at or before it (+ lateness) are finished
        self.held = 0
        self.stats = WindowStats()
        self._keys: dict[str, Key] = {}

    def fold(self, lines: list[str], raw: set[int]) -> None:
        """Fold one journaled batch; windows that cannot be computed here are added to ``raw``.

        A line that does not read as a ``reading`` of a float ``value`` sends its batch's windows to raw
        (the caller catches :class:`ValueError`)."""
        opened = self.open
        data_time = self.data_time
        held = self.held
        try:
            for line in lines:
                sp = line.index(" ")
                last = line.rindex(" ")
                ts = int(line[last + 1:])
                w = ts // PERIOD_MS
                win = opened.get(w)
                if win is None:
                    if w * PERIOD_MS < self.t0 or (w + 1) * PERIOD_MS + self.lateness <= self.horizon:
                        raw.add(w)
                        continue
                    if w in self.poisoned:
                        raw.add(w)
                        continue
                    win = opened[w] = {}
                key = line[:sp]
                cell = win.get(key)
                if cell is None:
                    if not key.startswith("reading,"):
                        raise ValueError(f"not a reading: {line[:80]!r}")
                    cell = win[key] = ({}, set())
                values = cell[0]
                fields = line[sp + 1:last]
                comma = fields.find(",")
                if not fields.startswith("value="):
                    raise ValueError(f"no value first: {line[:80]!r}")
                value = float(fields[6:] if comma < 0 else fields[6:comma])
                if ts not in values:
                    held += 1
                values[ts] = value
                if comma >= 0 and ",quality=" in fields:
                    cell[1].add(ts)
                if ts > data_time:
                    data_time = ts
        finally:
            self.data_time = data_time
            self.held = held
        self.stats.readings += len(lines)
        if held > self.max_held:
            self._shed(raw)

    def poison(self, periods: Iterable[int], raw: set[int]) -> None:
        """These windows hold readings the journal does not have: raw recompute, nothing kept here."""
        for w in periods:
            raw.add(w)
            if (w + 1) * PERIOD_MS + self.lateness <= self.horizon or w * PERIOD_MS < self.t0:
                continue
            win = self.open.pop(w, None)
            if win is not None:
                self.held -= sum(len(c[0]) for c in win.values())
            self.poisoned.add(w)

    def _shed(self, raw: set[int]) -> None:
        """Over the memory bound: the oldest open windows go to the raw recompute."""
        oldest = sorted(self.open)
        log.warning("rollups: %d readings held in open windows (bound %d): the oldest go to the raw recompute",
                    self.held, self.max_held)
        for w in oldest:
            if self.held <= self.max_held // 2:
                break
            self.poison([w], raw)

    def finish(self, now_ms: int) -> dict[tuple[Key, int], Agg]:
        """Five-minute aggregates of every open window that data time and ``now_ms`` have passed."""
        horizon = max(self.horizon, min(self.data_time, now_ms))
        self.horizon = horizon
        due = [w for w in self.open if (w + 1) * PERIOD_MS + self.lateness <= horizon]
        out: dict[tuple[Key, int], Agg] = {}
        fsum = math.fsum
        for w in sorted(due):
            ts0 = w * PERIOD_MS
            for series, (values, bad) in self.open.pop(w).items():
                key = self._keys.get(series) or self._key(series)
                count = len(values)
                self.held -= count
                vs = values.values()
                out[key, ts0] = Agg(fsum(vs) / count, min(vs), max(vs), count, count - len(bad))
        self.stats.finished += len(due)
        self.poisoned = {w for w in self.poisoned if (w + 1) * PERIOD_MS + self.lateness > horizon}
        return out

    def _key(self, series: str) -> Key:
        tags = dict(t.split("=", 1) for t in series.split(",")[1:])
        key = self._keys[series] = (tags.get("site", ""), tags.get("asset", ""), tags.get("sensor", ""))
        return key
