"""Five-minute windows aggregated from the journal's readings, exactly as InfluxDB holds them in ``raw``.

A window may be computed here only if the runner has seen it from its first point on: it starts at or after
the horizon ``t0`` (since which the journal is known complete), and it has not been finished yet. Every
other reading sends its window to the raw recompute (InfluxQL), which is always right.

InfluxDB keeps one point per series and timestamp and merges the fields of later writes into it: a later
``value`` overwrites, a ``quality`` written once stays unless overwritten. A redelivered or resent reading is
journaled again; an open window therefore keeps every journaled reading, and its point takes per series and
timestamp the last value noted (the journal's order is the
order InfluxDB answered the writes in, so the last value noted is the one stored) and whether any write of
that timestamp carried a ``quality`` (written only when it is not ``good``). ``good`` = timestamps without one.

Readings are held as numpy arrays (series index, ts, value, has quality), one chunk per journaled batch and
window; a finished window is deduplicated per (series, ts), keeping the last value and any quality, and
aggregated per series, every window finished at once in a handful of array operations.

A window is finished once the journal's data time (the newest reading seen) and the wall clock have both
passed its end by ``lateness_ms``, and every series still reporting (within ``stale_ms`` of data time) has gone
on to a later window (streams catching up out of step with one another: one logger's backlog must not make
another's readings late) or the window was already due at the end of the previous turn (a sensor that
stopped holds windows back by one turn at most).
Afterwards nothing of it is kept but the finish horizon, a single number: a reading for a window that ended
before it is late and goes to the raw recompute.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Iterable

import numpy as np

from .compute import Agg, Key
from .journal import PERIOD_MS
from .parse import F64, I64, B, Series, parse

log = logging.getLogger(__name__)

NEG_INF = -(1 << 62)
Chunk = tuple[I64, I64, F64, B]  # series index, ts, value, has quality


class Windows:
    """The open windows: :meth:`fold` the journal's batches, :meth:`finish` what the horizon has passed."""

    def __init__(self, t0_ms: int, *, lateness_ms: int = 120_000, max_held: int = 2_000_000,
                 stale_ms: int = 86_400_000, reorder: int = 8) -> None:
        self.t0 = t0_ms  # windows starting before it: raw
        self.lateness = lateness_ms
        self.max_held = max_held
        self.stale = stale_ms  # a series silent for longer (in data time) no longer holds windows back
        self.open: dict[int, list[Chunk]] = {}
        self.poisoned: set[int] = set()  # not ended yet, but already given to the raw recompute
        self.data_time = NEG_INF  # the newest reading journaled
        self.horizon = NEG_INF  # windows ending at or before it (+ lateness) are finished
        self.held = 0
        self.series = Series()
        self.latest = np.full(0, NEG_INF, np.int64)  # per series, the latest window it has readings in
        self.deferred: set[int] = set()  # due at the end of a turn, held back by a series that stopped
        self._times: deque[int] = deque(maxlen=max(1, reorder))  # data time after each of the last batches

    def fold(self, body: bytes, count: int, raw: set[int]) -> None:
        """Fold one journaled batch (``count`` lines); windows that cannot be computed here go to ``raw``.
        Raises :class:`ValueError` when the batch does not read as ``reading`` lines (nothing is folded)."""
        ids, ts, values, quality = parse(body, count, self.series)
        if len(self.latest) < len(self.series.keys):
            grown = np.full(len(self.series.keys) + 64, NEG_INF, np.int64)
            grown[:len(self.latest)] = self.latest
            self.latest = grown
        w = ts // PERIOD_MS
        if count > 1 and (w[1:] < w[:-1]).any():
            order = np.argsort(w, kind="stable")
            ids, ts, values, quality, w = ids[order], ts[order], values[order], quality[order], w[order]
        cuts = [0, *(np.flatnonzero(w[1:] != w[:-1]) + 1).tolist(), count]
        late_after = self.horizon - self.lateness  # windows ending at or before it are finished
        for a, b in itertools.pairwise(cuts):
            win = int(w[a])
            chunks = self.open.get(win)
            if chunks is None:
                if win * PERIOD_MS < self.t0 or (win + 1) * PERIOD_MS <= late_after or win in self.poisoned:
                    raw.add(win)
                    continue
                chunks = self.open[win] = []
            part = ids[a:b]
            chunks.append((part, ts[a:b], values[a:b], quality[a:b]))
            self.latest[part] = np.maximum(self.latest[part], win)
            self.held += b - a
        self.data_time = max(self.data_time, int(ts.max()))
        self._times.append(self.data_time)
        if self.held > self.max_held:
            self._shed(raw)

    def poison(self, periods: Iterable[int], raw: set[int]) -> None:
        """These windows hold readings the journal does not have: raw recompute, nothing kept here."""
        for w in periods:
            raw.add(w)
            chunks = self.open.pop(w, None)
            if chunks is not None:
                self.held -= sum(len(c[0]) for c in chunks)
            if (w + 1) * PERIOD_MS + self.lateness > self.horizon and w * PERIOD_MS >= self.t0:
                self.poisoned.add(w)

    def _shed(self, raw: set[int]) -> None:
        """Over the memory bound: the oldest open windows go to the raw recompute."""
        log.warning("rollups: %d readings held in open windows (bound %d): the oldest go to the raw recompute",
                    self.held, self.max_held)
        for w in sorted(self.open):
            if self.held <= self.max_held // 2:
                break
            self.poison([w], raw)

    def finish(self, now_ms: int, *, turn_end: bool = False) -> dict[tuple[Key, int], Agg]:
        """Five-minute aggregates of every open window that data time and ``now_ms`` have passed (see the
        module's docstring); ``turn_end``: the last call of a turn.

        Within a turn, data time is taken as it was ``reorder`` batches earlier: collectors write several
        batches at once, so that in a catch-up (a batch spans hours of readings) they are journaled slightly
        out of order."""
        times = self._times
        data_time = self.data_time if turn_end else times[0] if len(times) == times.maxlen else NEG_INF
        horizon = max(self.horizon, min(data_time, now_ms))
        self.horizon = horizon
        # every series still reporting (a reading within ``stale_ms`` of data time) has gone past ``floor``
        latest = self.latest
        active = latest[latest >= (horizon - self.stale) // PERIOD_MS]
        floor = int(active.min()) if len(active) else 1 << 62
        due, held_back = [], []
        for w in self.open:
            if (w + 1) * PERIOD_MS + self.lateness <= horizon:
                if w < floor or w in self.deferred:
                    due.append(w)
                else:
                    held_back.append(w)
        if turn_end:
            self.deferred = set(held_back)
        self.poisoned = {w for w in self.poisoned if (w + 1) * PERIOD_MS + self.lateness > horizon}
        self.deferred.difference_update(due)
        if not due:
            return {}
        chunks = [(w, c) for w in due for c in self.open.pop(w)]
        self.held -= sum(len(c[0]) for _, c in chunks)
        return self._aggregate(chunks)

    def _aggregate(self, chunks: list[tuple[int, Chunk]]) -> dict[tuple[Key, int], Agg]:
        """Dedupe per (window, series, ts) keeping the last value noted and any quality; then per (window,
        series): sum, min, max, count, good."""
        wins = np.concatenate([np.full(len(c[0]), w, np.int64) for w, c in chunks])
        ids = np.concatenate([c[0] for _, c in chunks])
        ts = np.concatenate([c[1] for _, c in chunks])
        values = np.concatenate([c[2] for _, c in chunks])
        quality = np.concatenate([c[3] for _, c in chunks])
        w0 = int(wins.min())
        n_series = len(self.series.keys)
        group = (wins - w0) * n_series + ids  # (window, series)
        if int(group.max()) >= (1 << 62) // PERIOD_MS:
            raise ValueError("too many windows finished at once")  # not reached: a day is 288 windows
        key = group * PERIOD_MS + (ts - wins * PERIOD_MS)
        order = np.argsort(key, kind="stable")  # equal keys keep the journal's order
        key, values, quality = key[order], values[order], quality[order]
        new = np.empty(len(key), np.bool_)
        new[0] = True
        np.not_equal(key[1:], key[:-1], out=new[1:])
        starts = np.flatnonzero(new)
        ends = np.append(starts[1:], len(key)) - 1
        last = values[ends]  # the last value noted per (series, ts)
        bad = np.logical_or.reduceat(quality, starts)  # a quality written once stays
        grp = key[ends] // PERIOD_MS
        gnew = np.empty(len(grp), np.bool_)
        gnew[0] = True
        np.not_equal(grp[1:], grp[:-1], out=gnew[1:])
        gstarts = np.flatnonzero(gnew)
        counts = np.diff(np.append(gstarts, len(grp)))
        sums = np.add.reduceat(last, gstarts)
        mins = np.minimum.reduceat(last, gstarts)
        maxs = np.maximum.reduceat(last, gstarts)
        bads = np.add.reduceat(bad.astype(np.int64), gstarts)
        keys = self.series.keys
        groups = grp[gstarts]
        names = [keys[g] for g in (groups % n_series).tolist()]
        starts_ms = ((groups // n_series + w0) * PERIOD_MS).tolist()
        return dict(zip(zip(names, starts_ms, strict=True),
                        map(Agg, (sums / counts).tolist(), mins.tolist(), maxs.tolist(), counts.tolist(),
                            (counts - bads).tolist()), strict=True))
