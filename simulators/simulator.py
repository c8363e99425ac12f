"""The simulator: the park's readings (CONTRACT §2) over time, with a scenario's incident drawn on top.

Time advances in chunks of one hour of simulated time. In each chunk every sensor's timestamps, levels,
noise and scenario overrides are computed as numpy arrays (one vector per sensor, no loop per reading);
only the final formatting of payloads or line protocol touches each reading.

Determinism: the random streams are keyed by (seed, sensor index, chunk number) (analyzers: by sample
number), never by wall time, so the same park, scenario, seed and start give byte-identical output.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from smartpark.park import Park, SensorRef
from smartpark.points import reading_prefix
from smartpark.topics import snapshot_topic

from .model import SensorTable, ar1, squeeze
from .scenario import Compiled, Scenario

CHUNK_MS = 3_600_000


class Message(NamedTuple):
    """One MQTT message: the simulated time it belongs to, its topic and payload bytes."""

    ts_ms: int
    topic: str
    payload: bytes


@dataclass(slots=True)
class Block:
    """The readings of one sensor in one chunk: timestamps (ms) and values, as arrays."""

    index: int
    ts: np.ndarray
    values: np.ndarray


class Simulator:
    """``Simulator(park, scenario, seed, start_ms).messages(duration_s)`` -> time-ordered :class:`Message`.

    With a scenario, ``start_ms`` is the time of t=-warmup_s (default: the scenario's fixed day and clock
    time), the run lasts warmup_s + duration_s and only the scenario's site is simulated unless ``sites``
    says otherwise. Without one, ``start_ms`` defaults to now (whole second) and the whole park runs.
    ``sensors`` (keys) narrows the run further, e.g. to a scenario's incident sensors.
    """

    def __init__(self, park: Park, scenario: Scenario | None = None, seed: int = 0, start_ms: int | None = None,
                 snapshots: bool = False, sites: list[str] | None = None,
                 sensors: list[str] | None = None) -> None:
        self.park = park
        self.scenario = scenario
        self.seed = int(seed)
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.snapshots = snapshots
        if start_ms is None:
            start_ms = scenario.default_start_ms(park) if scenario else (time.time_ns() // 1_000_000_000) * 1000
        self.start_ms = int(start_ms)
        if sites is None and scenario is not None:
            sites = [scenario.site]
        self.table = SensorTable(park, self.seed)
        wanted = set(sensors) if sensors else None
        self.refs: list[SensorRef] = [r for r in park if (sites is None or r.site in sites)
                                      and (wanted is None or r.key in wanted)]
        self.compiled: Compiled | None = None
        self.t0_ms = self.start_ms
        if scenario is not None:
            self.compiled = Compiled(scenario, park, {r.key: float(self.table.nominal[r.index]) for r in park})
            self.t0_ms = self.start_ms + int(scenario.warmup_s * 1000)
        self._topic = [r.topic for r in park]
        self._state: dict[int, float] = {}  # AR(1) state per sensor across chunks

    # ------------------------------------------------------------------ duration
    def run_ms(self, duration_s: float | None) -> int | None:
        if duration_s is not None:
            return round(duration_s * 1000)
        if self.scenario is not None:
            return round(self.scenario.run_s * 1000)
        return None

    # ------------------------------------------------------------------ numeric core
    def blocks(self, duration_s: float | None = None) -> Iterator[list[Block]]:
        """Per chunk, the readings of every simulated sensor as arrays (what backfill and messages format)."""
        for _c0, _c1, blocks in self._chunks(duration_s):
            yield blocks

    def _chunks(self, duration_s: float | None) -> Iterator[tuple[int, int, list[Block]]]:
        run = self.run_ms(duration_s)
        end = None if run is None else self.start_ms + run
        self._state.clear()
        chunk = 0
        while end is None or self.start_ms + chunk * CHUNK_MS < end:
            c0 = self.start_ms + chunk * CHUNK_MS
            c1 = c0 + CHUNK_MS if end is None else min(c0 + CHUNK_MS, end)
            yield c0, c1, [b for ref in self.refs if (b := self._block(ref, chunk, c0, c1)) is not None]
            chunk += 1

    def _block(self, ref: SensorRef, chunk: int, c0: int, c1: int) -> Block | None:
        tb = self.table
        i = ref.index
        iv = int(tb.interval_ms[i])
        k0 = -((self.start_ms - c0) // iv)  # ceil((c0 - start) / iv)
        k1 = -((self.start_ms - c1) // iv)
        if k1 <= k0:
            return None
        ts = self.start_ms + np.arange(k0, k1, dtype=np.int64) * iv
        cyc = int(tb.cycle_ms[i])
        if cyc > 0:  # analyzer: a new value once per sample cycle, published as a staircase
            j = (ts - self.start_ms) // cyc
            js = np.unique(j)
            sample_ts = self.start_ms + js * cyc
            z = np.array([np.random.default_rng([self.seed, i, 1, int(x)]).standard_normal() for x in js])
            vals_s = self._values(ref, sample_ts, z)
            values = vals_s[np.searchsorted(js, j)]
        else:
            z = np.random.default_rng([self.seed, i, 0, chunk]).standard_normal(len(ts))
            tau = float(tb.tau[i])
            if tau > 0:
                a = float(np.exp(-iv / 1000.0 / tau))
                z = ar1(z, a, self._state.get(i, 0.0))
                self._state[i] = float(z[-1])
            values = self._values(ref, ts, z)
        if self.compiled is not None and ref.key in self.compiled.traces:
            trace = self.compiled.traces[ref.key]
            keep = ~trace.drop[self.compiled.index((ts - self.t0_ms) / 1000.0)]
            for t_s, v in trace.spikes:
                at = self.t0_ms + int(t_s * 1000)
                k = -((self.start_ms - at) // iv)
                if k0 <= k < k1:
                    values[k - k0] = v
            if not keep.all():
                ts, values = ts[keep], values[keep]
        return Block(i, ts, np.round(values, tb.decimals[i]))

    def _values(self, ref: SensorRef, ts: np.ndarray, z: np.ndarray) -> np.ndarray:
        tb = self.table
        i = ref.index
        t = ts / 1000.0
        level = tb.level[i](t)
        sigma = tb.sigma[i]
        noise = z * sigma * (np.abs(level) if tb.relative[i] else 1.0)
        values = squeeze(level + noise, tb.band_lo[i], tb.band_hi[i])
        if self.compiled is None or ref.key not in self.compiled.traces:
            return values
        trace = self.compiled.traces[ref.key]
        idx = self.compiled.index((ts - self.t0_ms) / 1000.0)
        scale = trace.noise[idx]
        if (scale != 1.0).any():
            values = squeeze(level + noise * scale, tb.band_lo[i], tb.band_hi[i])
        ov = trace.value[idx]
        has = ~np.isnan(ov)
        if has.any():
            ov_noise = z * sigma * scale * (np.abs(ov) if tb.relative[i] else 1.0)
            lo, hi = ref.sensor.range
            # a noisy override stays inside the instrument (out_of_range events are quiet and exact)
            ov_val = np.where(trace.quiet[idx], ov, np.clip(ov + ov_noise, lo, hi))
            values = np.where(has, ov_val, values)
        return values + trace.offset[idx]

    # ------------------------------------------------------------------ messages
    def messages(self, duration_s: float | None = None) -> Iterator[Message]:
        """Time-ordered messages: readings (or snapshots) and the scenario's garbage payloads."""
        garbage = self._garbage()
        for c0, c1, blocks in self._chunks(duration_s):
            msgs = (self._snapshot_messages(blocks) if self.snapshots else self._reading_messages(blocks)) \
                if blocks else []
            extra = [g for g in garbage if c0 <= g.ts_ms < c1]
            if extra:  # stable: at equal times the readings come first
                msgs = list(heapq.merge(msgs, extra, key=lambda m: m.ts_ms))
            yield from msgs

    def _order(self, blocks: list[Block]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ts = np.concatenate([b.ts for b in blocks])
        idx = np.concatenate([np.full(len(b.ts), b.index, dtype=np.int32) for b in blocks])
        vals = np.concatenate([b.values for b in blocks])
        order = np.lexsort((idx, ts))
        return ts[order], idx[order], vals[order]

    def _reading_messages(self, blocks: list[Block]) -> list[Message]:
        ts, idx, vals = self._order(blocks)
        topics = self._topic
        return [Message(t, topics[i], b'{"value": %r, "ts": %d}' % (v, t))
                for t, i, v in zip(ts.tolist(), idx.tolist(), vals.tolist(), strict=True)]

    def _snapshot_messages(self, blocks: list[Block]) -> list[Message]:
        ts, idx, vals = self._order(blocks)
        refs = self.park.sensors()
        asset_topics = [snapshot_topic(r.site, r.asset) for r in refs]
        out: list[Message] = []
        cur_key: tuple[int, str] | None = None
        entries: list[str] = []
        for t, i, v in zip(ts.tolist(), idx.tolist(), vals.tolist(), strict=True):
            ref = refs[i]
            key = (t, asset_topics[i])
            if key != cur_key:
                if cur_key is not None:
                    out.append(_snapshot(cur_key, entries))
                cur_key, entries = key, []
            entries.append(f'"{ref.sensor.id}": {v!r}')
        if cur_key is not None:
            out.append(_snapshot(cur_key, entries))
        # readings of one asset at one instant may be interleaved with other assets: keep time order stable
        out.sort(key=lambda m: m.ts_ms)
        return out

    def _garbage(self) -> list[Message]:
        if self.compiled is None:
            return []
        keys = {r.key for r in self.refs}
        out = []
        for n, (t_s, key, kind) in enumerate(self.compiled.garbage):
            if key not in keys:
                continue
            ts = self.t0_ms + int(t_s * 1000)
            ref = self.park.get(key)
            out.append(Message(ts, *garbage_payload(ref, kind, ts, n, float(self.table.nominal[ref.index]))))
        return out

    # ------------------------------------------------------------------ line protocol
    def lines(self, duration_s: float | None = None, *, quality_bad_outside_range: bool = True) -> Iterator[list[str]]:
        """Per chunk, InfluxDB line protocol of the readings (millisecond precision), as the collector writes them.

        Garbage payloads are not readings and are left out; values outside the instrument range carry
        ``quality="bad"`` as the collector stores them (CONTRACT §3).
        """
        prefixes = [reading_prefix(r) for r in self.park]
        ranges = [r.sensor.range for r in self.park]
        for blocks in self.blocks(duration_s):
            out: list[str] = []
            for b in blocks:
                p = prefixes[b.index]
                lo, hi = ranges[b.index]
                vl = b.values.tolist()
                tl = b.ts.tolist()
                out += [f"{p}{v!r} {t}" for v, t in zip(vl, tl, strict=True)]
                if quality_bad_outside_range and len(vl) and (b.values.min() < lo or b.values.max() > hi):
                    bad = np.flatnonzero((b.values < lo) | (b.values > hi))
                    base = len(out) - len(vl)
                    for k in bad.tolist():
                        out[base + k] = f'{p}{vl[k]!r},quality="bad" {tl[k]}'
            yield out


def _snapshot(key: tuple[int, str], entries: list[str]) -> Message:
    t, topic = key
    return Message(t, topic, f'{{"ts": {t}, "values": {{{", ".join(entries)}}}}}'.encode())


def garbage_payload(ref: SensorRef, kind: str, ts: int, n: int, nominal: float) -> tuple[str, bytes]:
    """A deterministic malformed message of the given dead-letter kind (CONTRACT §3)."""
    if kind == "bad_json":
        return ref.topic, b'{"value": %r, "ts": %d' % (nominal, ts)
    if kind == "bad_value":
        return ref.topic, b'{"value": "n/a", "ts": %d}' % ts
    if kind == "bad_ts":
        return ref.topic, b'{"value": %r, "ts": "yesterday %d"}' % (nominal, n)
    if kind == "too_large":
        return ref.topic, b'{"value": %r, "ts": %d, "pad": "%s"}' % (nominal, ts, b"x" * (70 * 1024))
    if kind == "unknown_sensor":
        return f"{ref.topic}_ghost", b'{"value": %r, "ts": %d}' % (nominal, ts)
    raise ValueError(f"unknown garbage kind {kind!r}")
