"""Incident shapes: the registry of what a scenario's timeline event can do to a sensor's signal.

A shape is compiled once per scenario onto a 1-second grid of scenario time (``-warmup_s .. duration_s``),
so that the per-tick generator only has to index arrays. Each sensor touched by a scenario gets a
:class:`Trace` of aligned arrays:

``value``   absolute value (NaN: no override, the base signal of the park model shows through)
``offset``  added to the base signal (drift)
``quiet``   no noise added (flat-lined analyzers, out-of-range codes: their published value repeats exactly)
``drop``    no message at all (dropout)
``noise``   multiplier of the sensor's noise σ (an event's ``noise:`` key, from its start to the end of the run)

Adding a shape touches only this module: write ``_shape_<name>(ctx, ev)`` and list it in :data:`SHAPES`
with the parameters it needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Trace:
    """Per-second override arrays of one sensor over the scenario's run (index 0 = t=-warmup_s)."""

    value: np.ndarray
    offset: np.ndarray
    quiet: np.ndarray
    drop: np.ndarray
    noise: np.ndarray
    spikes: list[tuple[float, float]] = field(default_factory=list)  # (scenario t, value): one reading

    @classmethod
    def empty(cls, n: int) -> Trace:
        return cls(np.full(n, np.nan), np.zeros(n), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool), np.ones(n))


@dataclass
class ShapeContext:
    """What a shape function may read: the grid, the sensor's nominal level and the other traces (for lag)."""

    t0: float  # scenario time of index 0 (= -warmup_s)
    n: int
    nominal: float  # base level of the sensor (park model sim.mean / setpoint / middle of normal)
    trace: Trace
    traces: dict[str, Trace]
    nominals: dict[str, float]
    range_: tuple[float, float]

    def index(self, t: float) -> int:
        return int(np.clip(round(t - self.t0), 0, self.n))

    def current(self, t: float) -> float:
        """The value the sensor shows just before scenario time ``t`` (override or nominal level)."""
        i = self.index(t) - 1
        if 0 <= i < self.n and not np.isnan(self.trace.value[i]):
            return float(self.trace.value[i])
        return self.nominal

    def times(self, start: float, end: float | None = None) -> tuple[int, int, np.ndarray]:
        """(i0, i1, dt) for the grid slice [start, end): dt = seconds since ``start``."""
        i0 = self.index(start)
        i1 = self.n if end is None else max(i0, self.index(end))
        dt = (np.arange(i0, i1) + self.t0) - start
        return i0, i1, dt


@dataclass(frozen=True)
class ShapeSpec:
    fn: Callable[[ShapeContext, dict[str, Any], float], None]
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    doc: str = ""


def _end(ev: dict[str, Any], t: float) -> float | None:
    d = ev.get("duration_s")
    return None if d is None else t + float(d)


def _set(ctx: ShapeContext, i0: int, i1: int, values: np.ndarray | float) -> None:
    ctx.trace.value[i0:i1] = values


def _step(ctx: ShapeContext, ev: dict[str, Any], t: float) -> None:
    i0, i1, _ = ctx.times(t, _end(ev, t))
    _set(ctx, i0, i1, float(ev["to"]))


def _ramp(ctx: ShapeContext, ev: dict[str, Any], t: float) -> None:
    start = float(ev.get("from", ctx.current(t)))
    to, dur = float(ev["to"]), float(ev["duration_s"])
    i0, i1, dt = ctx.times(t, None if ev.get("hold_s") is None else t + dur + float(ev["hold_s"]))
    frac = np.clip(dt / dur, 0.0, 1.0) if dur > 0 else np.ones_like(dt)
    _set(ctx, i0, i1, start + (to - start) * frac)


def _pulse(ctx: ShapeContext, ev: dict[str, Any], t: float) -> None:
    i0, i1, _ = ctx.times(t, t + float(ev["duration_s"]))
    _set(ctx, i0, i1, float(ev["to"]))
    if "from" in ev:  # back to the stated level afterwards rather than to the base signal
        j0, j1, _ = ctx.times(t + float(ev["duration_s"]), None)
        _set(ctx, j0, j1, float(ev["from"]))


def _first_order(ctx: ShapeContext, ev: dict[str, Any], t: float) -> None:
    """``toward`` with time constant ``tau_s``; ``until_s`` (scenario time) or ``hold_s`` ends it, then ``then``."""
    start = float(ev.get("from", ctx.current(t)))
    toward, tau = float(ev["toward"]), float(ev["tau_s"])
    end: float | None = None
    if ev.get("until_s") is not None:
        end = float(ev["until_s"])
    elif ev.get("hold_s") is not None:
        end = t + float(ev["hold_s"])
    elif ev.get("duration_s") is not None:
        end = t + float(ev["duration_s"])
    i0, i1, dt = ctx.times(t, end)
    _set(ctx, i0, i1, toward + (start - toward) * np.exp(-dt / tau))
    then = ev.get("then")
    if then is not None and end is not None:
        apply_shape(ctx, dict(then), end)


def _flatline(ctx: ShapeContext, ev: dict[str, Any], t: float) -> None:
    value = float(ev["value"]) if "value" in ev else round(ctx.current(t), 3)
    i0, i1, _ = ctx.times(t, _end(ev, t))
    _set(ctx, i0, i1, value)
    ctx.trace.quiet[i0:i1] = True


def _dropout(ctx: ShapeContext, ev: dict[str, Any], t: float) -> None:
    i0, i1, _ = ctx.times(t, _end(ev, t))
    ctx.trace.drop[i0:i1] = True


def _lag(ctx: ShapeContext, ev: dict[str, Any], t: float) -> None:
    """First-order lag of another sensor's override (its nominal level where it has none), plus ``offset``."""
    src = ctx.traces.get(str(ev["of"]))
    nominal = ctx.nominals.get(str(ev["of"]), ctx.nominal)
    i0, i1, _ = ctx.times(t, _end(ev, t))
    x = np.full(i1 - i0, nominal) if src is None else np.where(np.isnan(src.value[i0:i1]), nominal, src.value[i0:i1])
    x = x + float(ev.get("offset", 0.0))
    a = float(np.exp(-1.0 / float(ev["tau_s"])))
    y = np.empty_like(x)
    state = float(ev.get("from", x[0] if len(x) else nominal))
    for k in range(len(x)):  # once per scenario, on the 1 s grid: a plain loop is fine here
        state = a * state + (1 - a) * x[k]
        y[k] = state
    _set(ctx, i0, i1, y)


def _dip(ctx: ShapeContext, ev: dict[str, Any], t: float) -> None:
    """Sudden drop by ``depth`` recovering exponentially within ``recovery_s`` (grid frequency after a trip)."""
    start = float(ev.get("from", ctx.current(t)))
    rec = float(ev["recovery_s"])
    i0, i1, dt = ctx.times(t, t + 2 * rec)
    _set(ctx, i0, i1, start - float(ev["depth"]) * np.exp(-dt / (rec / 3)))


def _pulse_then_drop(ctx: ShapeContext, ev: dict[str, Any], t: float) -> None:
    """Linear rise to ``peak`` at ``peak_at_s``, then first order toward ``then_to`` (drum swell and shrink)."""
    start = float(ev.get("from", ctx.current(t)))
    peak, at, then_to = float(ev["peak"]), float(ev["peak_at_s"]), float(ev["then_to"])
    tau = float(ev.get("tau_s", 60.0))
    i0, i1, dt = ctx.times(t, _end(ev, t))
    rise = start + (peak - start) * np.clip(dt / at, 0, 1)
    fall = then_to + (peak - then_to) * np.exp(-np.maximum(dt - at, 0) / tau)
    _set(ctx, i0, i1, np.where(dt <= at, rise, fall))


def _spike(ctx: ShapeContext, ev: dict[str, Any], t: float) -> None:
    ctx.trace.spikes.append((t, float(ev["value"])))


def _drift(ctx: ShapeContext, ev: dict[str, Any], t: float) -> None:
    i0, i1, dt = ctx.times(t, None)
    dur = ev.get("duration_s")
    span = dt if dur is None else np.minimum(dt, float(dur))
    ctx.trace.offset[i0:i1] += float(ev["rate_per_h"]) * span / 3600.0


def _out_of_range(ctx: ShapeContext, ev: dict[str, Any], t: float) -> None:
    lo, hi = ctx.range_
    value = float(ev.get("value", hi + 0.25 * (hi - lo)))
    i0, i1, _ = ctx.times(t, _end(ev, t))
    _set(ctx, i0, i1, value)
    ctx.trace.quiet[i0:i1] = True


def _garbage(ctx: ShapeContext, ev: dict[str, Any], t: float) -> None:
    """Handled by the simulator (extra raw messages); nothing to draw on the signal."""


def _note(ctx: ShapeContext, ev: dict[str, Any], t: float) -> None:
    """Documentation only."""


SHAPES: dict[str, ShapeSpec] = {
    "step": ShapeSpec(_step, ("to",), ("from", "duration_s"), "jump to `to` (and hold, or for duration_s)"),
    "ramp": ShapeSpec(_ramp, ("to", "duration_s"), ("from", "hold_s"), "linear to `to` over duration_s, then hold"),
    "pulse": ShapeSpec(_pulse, ("to", "duration_s"), ("from",), "`to` for duration_s, then back"),
    "first_order": ShapeSpec(_first_order, ("toward", "tau_s"),
                             ("from", "until_s", "hold_s", "duration_s", "then"),
                             "exponential approach toward `toward`; `then` follows at until_s / after hold_s"),
    "exp_decay": ShapeSpec(_first_order, ("toward", "tau_s"), ("from", "until_s", "hold_s", "duration_s", "then"),
                           "alias of first_order for decays"),
    "flatline": ShapeSpec(_flatline, (), ("value", "duration_s"), "published value repeats exactly (stuck sensor)"),
    "stuck": ShapeSpec(_flatline, (), ("value", "duration_s"), "alias of flatline"),
    "dropout": ShapeSpec(_dropout, ("duration_s",), (), "no messages at all"),
    "lag": ShapeSpec(_lag, ("of", "tau_s"), ("offset", "from", "duration_s"), "first-order lag of another sensor"),
    "dip": ShapeSpec(_dip, ("depth", "recovery_s"), ("from",), "sudden drop recovering within recovery_s"),
    "pulse_then_drop": ShapeSpec(_pulse_then_drop, ("peak", "peak_at_s", "then_to"), ("from", "tau_s", "duration_s"),
                                 "rise to a peak, then settle lower (swell and shrink)"),
    "spike": ShapeSpec(_spike, ("value",), (), "one reading at `value`"),
    "drift": ShapeSpec(_drift, ("rate_per_h",), ("duration_s",), "slow additive drift of the base signal"),
    "out_of_range": ShapeSpec(_out_of_range, (), ("value", "duration_s"), "a value outside the instrument range"),
    "garbage": ShapeSpec(_garbage, (), ("kind", "count", "every_s"), "malformed payloads (dead letters)"),
    "note": ShapeSpec(_note, (), (), "a remark on the timeline, no effect"),
}

# parameters every event may carry besides its shape's own
COMMON_KEYS = ("t_s", "sensor", "shape", "note", "clock", "noise")

GARBAGE_KINDS = ("bad_json", "bad_value", "bad_ts", "too_large", "unknown_sensor")


def apply_shape(ctx: ShapeContext, ev: dict[str, Any], t: float) -> None:
    if ev.get("noise") is not None:
        ctx.trace.noise[ctx.index(t):] = float(ev["noise"])
    SHAPES[str(ev["shape"])].fn(ctx, ev, t)
