"""Sensor models built from the park model's ``sim`` hints: the normal operation of every sensor.

Each sensor's signal is ``level(t) + noise`` where

* ``level(t)`` is a deterministic function of time, evaluated on whole numpy arrays of timestamps:
  the mean (``sim.mean`` / ``sim.setpoint`` / middle of the normal band) shaped by its ``pattern``
  (diurnal double peaks with weekend factor, seasonal and diurnal temperatures, sawtooth filter cake,
  fill/draw tank cycles, slow drift) and by the **couplings** between sensors of a site (below);
* ``noise`` is first-order (AR(1)) noise with the sensor's σ (absolute or % of the reading,
  ``sim.noise`` / ``noise_basis``) and time constant ``tau_s`` (white when the time constant is short
  against the reporting interval).

Normal operation stays inside the normal band, softly: values beyond the inner 80 % of the band are
squeezed smoothly into it, so noise never crosses an alarm limit (normal bands lie inside the limits) and
never repeats a value exactly (the ``stuck`` rule stays quiet).

Couplings (park_catalog.md §1.3, §2, §3), all through smooth drivers that are pure functions of time so
that every sensor can be evaluated on its own time grid:

* WWTP influent load (the flow's diurnal profile) -> blower power, air flow and header pressure rise,
  aerobic DO dips, anoxic ORP falls, one hour later;
* gas-turbine dispatch -> GT power, fuel gas flow, exhaust temperature, HRSG steam flow, stack temperature;
* incinerator combustion -> secondary-chamber temperature up with O2 and CO down, and the stack pollutants
  are reported at the 11 % O2 reference (``C * (21 - 11) / (21 - O2)``), so they move with the stack O2.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np

from smartpark.park import Park, Sensor, SensorRef

LevelFn = Callable[[np.ndarray], np.ndarray]
DAY = 86400.0
O2_REF = 11.0  # GB 18484-2020: incinerator stack concentrations are reported at 11 % O2


def nominal(sensor: Sensor) -> float:
    """The level a sensor sits at when nothing happens."""
    sim = sensor.sim
    for key in ("mean", "setpoint"):
        if isinstance(sim.get(key), (int, float)):
            return float(sim[key])
    if "low" in sim and "high" in sim:
        return (float(sim["low"]) + float(sim["high"])) / 2
    return (sensor.normal[0] + sensor.normal[1]) / 2


def noise_sigma(sensor: Sensor) -> tuple[float, bool]:
    """(σ, relative): relative means σ is a fraction of the reading."""
    sim = sensor.sim
    lo, hi = sensor.normal
    default = (hi - lo) / 40
    raw = sim.get("noise", default)
    sigma = float(raw) if isinstance(raw, (int, float)) else default
    if sim.get("noise_basis") == "percent":
        return sigma / 100.0, True
    return sigma, False


def decimals(sensor: Sensor) -> int:
    """Digits worth publishing: a tenth of the noise, at most 6."""
    sigma, rel = noise_sigma(sensor)
    abs_sigma = sigma * max(abs(nominal(sensor)), 1e-9) if rel else sigma
    if abs_sigma <= 0:
        abs_sigma = (sensor.normal[1] - sensor.normal[0]) / 100
    return int(min(6, max(0, math.ceil(-math.log10(abs_sigma / 10)))))


@dataclass(frozen=True)
class Clock:
    """Local time of the park (for diurnal and weekly patterns): a fixed UTC offset (no DST in China)."""

    offset_s: float

    @classmethod
    def for_park(cls, park: Park) -> Clock:
        tz = ZoneInfo(park.park.timezone)
        off = datetime(2026, 1, 1, tzinfo=tz).utcoffset()
        return cls(off.total_seconds() if off else 0.0)

    def hour(self, t: np.ndarray) -> np.ndarray:
        return ((t + self.offset_s) % DAY) / 3600.0

    def weekend(self, t: np.ndarray) -> np.ndarray:
        days = np.floor((t + self.offset_s) / DAY)
        return ((days + 3) % 7) >= 5  # 1970-01-01 was a Thursday (weekday 3)

    def year_phase(self, t: np.ndarray) -> np.ndarray:
        """Radians through the year, 0 at 1 January."""
        return 2 * np.pi * (((t + self.offset_s) / DAY) % 365.25) / 365.25


def _bumps(h: np.ndarray, peaks: list[float], width_h: float = 2.5) -> np.ndarray:
    d = np.abs(((h[..., None] - np.asarray(peaks, dtype=float)) + 12) % 24 - 12)
    return np.exp(-0.5 * (d / width_h) ** 2).sum(axis=-1)


def diurnal_profile(peaks: list[float]) -> Callable[[np.ndarray], np.ndarray]:
    """Hour of day -> [-1, 1], +1 at the peaks: a sum of Gaussian bumps scaled to the unit band."""
    grid = np.linspace(0, 24, 24 * 12, endpoint=False)
    b = _bumps(grid, peaks)
    lo, hi = float(b.min()), float(b.max())
    span = hi - lo if hi > lo else 1.0
    return lambda h: 2 * (_bumps(h, peaks) - lo) / span - 1


class Drivers:
    """Smooth, seeded, grid-free signals of about unit amplitude: the hidden causes behind couplings."""

    PERIODS = (1900.0, 4300.0, 11100.0, 26300.0)

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __call__(self, name: str, t: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 7919, sum(ord(c) * 31 ** i for i, c in enumerate(name)) % 2**31])
        phases = rng.uniform(0, 2 * np.pi, len(self.PERIODS))
        out = np.zeros_like(t, dtype=float)
        for p, ph in zip(self.PERIODS, phases, strict=True):
            out += np.sin(2 * np.pi * t / p + ph)
        return out / 2.0


def _pattern_level(ref: SensorRef, clock: Clock) -> LevelFn:
    """The level of a sensor from its own pattern, before couplings."""
    s = ref.sensor
    sim = s.sim
    mean = nominal(s)
    pattern = sim.get("pattern", "constant")
    if pattern in ("diurnal",) or ("peaks_h" in sim and pattern not in ("seasonal", "diurnal_seasonal")):
        prof = diurnal_profile([float(p) for p in sim.get("peaks_h", [10, 20])])
        lag = float(sim.get("lag_vs_flow_h", sim.get("lag_vs_influent_h", 0.0)) or 0.0) * 3600
        weekend = float((sim.get("weekly") or {}).get("weekend_factor", 1.0))
        rel = sim.get("amplitude_rel")
        amp_abs = sim.get("amplitude_abs")

        def diurnal(t: np.ndarray) -> np.ndarray:
            shape = prof(clock.hour(t - lag))
            base = mean * (1 + float(rel) * shape) if rel is not None else mean + float(amp_abs or 0) * shape
            if weekend != 1.0:
                base = np.where(clock.weekend(t - lag), base * weekend, base)
            return base
        return diurnal
    if pattern == "seasonal":
        tmin, tmax = float(sim.get("annual_min_c", mean - 5)), float(sim.get("annual_max_c", mean + 5))
        min_month = float(sim.get("annual_min_month", 1))
        damp = float(sim.get("diurnal_amplitude_c", 0.0))
        phase_min = 2 * np.pi * (min_month - 0.5) / 12

        def seasonal(t: np.ndarray) -> np.ndarray:
            season = (tmin + tmax) / 2 - (tmax - tmin) / 2 * np.cos(clock.year_phase(t) - phase_min)
            return season + damp * np.cos(2 * np.pi * (clock.hour(t) - 15) / 24)
        return seasonal
    if pattern == "diurnal_seasonal":
        ann = float(sim.get("annual_amplitude_c", sim.get("annual_amplitude", 0.0)))
        damp = float(sim.get("diurnal_amplitude_c", sim.get("diurnal_amplitude", 0.0)))
        peak = float(sim["peak_h"]) if "peak_h" in sim else float(sim.get("trough_h", 15)) + 12
        # keep the swing inside the normal band: the catalog's amplitudes describe the year, not a day
        room = (s.normal[1] - s.normal[0]) / 2 * 0.6
        scale = min(1.0, room / max(ann + damp, 1e-9))

        def diurnal_seasonal(t: np.ndarray) -> np.ndarray:
            summer = -np.cos(clock.year_phase(t) - 2 * np.pi * 0.5 / 12)
            return mean + scale * (ann * summer + damp * np.cos(2 * np.pi * (clock.hour(t) - peak) / 24))
        return diurnal_seasonal
    if pattern == "sawtooth":
        lo, hi, period = float(sim.get("low", s.normal[0])), float(sim.get("high", s.normal[1])), \
            float(sim.get("period_s", 1800))
        return lambda t: lo + (hi - lo) * ((t % period) / period)
    if pattern == "fill_draw":
        fill, draw = float(sim.get("fill_rate_pct_per_h", 15)), float(sim.get("draw_rate_pct_per_h", 5))
        lo_l, hi_l = mean - 15, mean + 15
        t_fill, t_draw = (hi_l - lo_l) / fill * 3600, (hi_l - lo_l) / draw * 3600
        period = t_fill + t_draw

        def fill_draw(t: np.ndarray) -> np.ndarray:
            x = t % period
            return np.where(x < t_fill, lo_l + fill * x / 3600, hi_l - draw * (x - t_fill) / 3600)
        return fill_draw
    if pattern == "slow_drift":
        per_day = float(sim.get("drift_per_day", 0.0))
        return lambda t: mean + per_day * 2 * np.sin(2 * np.pi * t / (12 * DAY))
    return lambda t: np.full(np.shape(t), mean, dtype=float)


def level_functions(park: Park, seed: int) -> list[LevelFn]:
    """Per sensor (by ``ref.index``): the deterministic level, patterns and couplings included."""
    clock = Clock.for_park(park)
    drive = Drivers(seed)
    own = [_pattern_level(ref, clock) for ref in park]
    fns: list[LevelFn] = list(own)
    by_key = {ref.key: ref for ref in park}

    def rel_dev(key: str) -> LevelFn:
        """Relative deviation of a sensor's own level from its nominal (its load profile)."""
        ref = by_key[key]
        mean = nominal(ref.sensor)
        return lambda t: own[ref.index](t) / mean - 1

    def couple(key: str, fn: Callable[[np.ndarray, np.ndarray], np.ndarray], cause: LevelFn) -> None:
        if key in by_key:
            base = fns[by_key[key].index]

            def coupled(t: np.ndarray, base: LevelFn = base) -> np.ndarray:
                return fn(base(t), cause(t))
            fns[by_key[key].index] = coupled

    # --- WWTP: influent load drives aeration, one hour later (DO control lags the load)
    if "wwtp/influent/flow" in by_key:
        load = rel_dev("wwtp/influent/flow")

        def load_1h(t: np.ndarray) -> np.ndarray:
            return load(t - 3600)
        couple("wwtp/blowers/power", lambda b, d: b * (1 + 0.8 * d), load_1h)
        couple("wwtp/blowers/airflow", lambda b, d: b * (1 + 0.8 * d), load_1h)
        couple("wwtp/blowers/pressure", lambda b, d: b + 4 * d, load_1h)
        couple("wwtp/bio_a2o/do_aer", lambda b, d: b - 0.8 * d, load_1h)
        couple("wwtp/bio_a2o/orp_anox", lambda b, d: b - 60 * d, load_1h)

    # --- energy hub: GT dispatch drives fuel, exhaust and steam
    def gt(t: np.ndarray) -> np.ndarray:
        return 0.06 * drive("gt1_dispatch", t)
    couple("energy_hub/gt1/power", lambda b, d: b * (1 + d), gt)
    couple("energy_hub/gt1/gas_flow", lambda b, d: b * (1 + d), gt)
    couple("energy_hub/gt1/exhaust_temp", lambda b, d: b + 60 * d, gt)
    couple("energy_hub/hrsg1/steam_flow", lambda b, d: b * (1 + d), gt)
    couple("energy_hub/hrsg1/stack_temp", lambda b, d: b + 80 * d, gt)
    couple("energy_hub/mp_header/export_flow", lambda b, d: b * (1 + 0.5 * d), gt)

    # --- incinerator: combustion quality couples SCC temperature, O2 and CO; stack at 11 % O2 reference
    def comb(t: np.ndarray) -> np.ndarray:
        return drive("hw_combustion", t)
    couple("hw_center/scc/temp", lambda b, d: b + 10 * d, comb)
    couple("hw_center/scc/o2", lambda b, d: b - 0.5 * d, comb)
    couple("hw_center/stack_cems/co", lambda b, d: b - 3 * d, comb)
    if "hw_center/stack_cems/o2" in by_key:
        o2_ref = by_key["hw_center/stack_cems/o2"]
        o2_mean = nominal(o2_ref.sensor)

        def stack_o2(t: np.ndarray) -> np.ndarray:
            return o2_mean + 0.6 * drive("hw_stack_o2", t)
        fns[o2_ref.index] = stack_o2

        def o2_factor(t: np.ndarray) -> np.ndarray:
            # measured concentrations are steadier than the O2; the reference correction carries the O2 swing
            return (21 - o2_mean) / (21 - stack_o2(t))
        for name in ("pm", "co", "so2", "nox", "hcl", "hf"):
            couple(f"hw_center/stack_cems/{name}", lambda b, f: b * f, o2_factor)
    return fns


class SensorTable:
    """The per-sensor constants the generator needs, as arrays indexed by ``ref.index``."""

    def __init__(self, park: Park, seed: int) -> None:
        refs = park.sensors()
        self.refs = refs
        self.n = len(refs)
        self.level = level_functions(park, seed)
        self.interval_ms = np.array([max(1, round(r.sensor.interval_s * 1000)) for r in refs], dtype=np.int64)
        self.cycle_ms = np.array([round((r.sensor.sample_cycle_s or 0) * 1000) for r in refs], dtype=np.int64)
        sig = [noise_sigma(r.sensor) for r in refs]
        self.sigma = np.array([s for s, _ in sig])
        self.relative = np.array([rel for _, rel in sig])
        taus = []
        for r in refs:
            sim = r.sensor.sim
            tau = sim.get("reversion_s", sim.get("tau_s", 0))
            taus.append(float(tau) if isinstance(tau, (int, float)) else 0.0)
        self.tau = np.array(taus)
        self.nominal = np.array([nominal(r.sensor) for r in refs])
        self.decimals = [decimals(r.sensor) for r in refs]
        lo = np.array([r.sensor.normal[0] for r in refs])
        hi = np.array([r.sensor.normal[1] for r in refs])
        margin = 0.05 * (hi - lo)
        self.band_lo, self.band_hi = lo + margin, hi - margin


def squeeze(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Identity in the inner 80 % of [lo, hi]; beyond, a smooth tanh into the rest, never reaching lo or hi."""
    c, h = (lo + hi) / 2, (hi - lo) / 2
    d = x - c
    inner = 0.8 * h
    out = np.abs(d) - inner
    soft = c + np.sign(d) * (inner + 0.2 * h * np.tanh(np.maximum(out, 0) / (0.2 * h)))
    return np.where(out > 0, soft, x)


def ar1(e: np.ndarray, a: float, x0: float) -> np.ndarray:
    """x[k] = a x[k-1] + sqrt(1 - a²) e[k], vectorised in blocks (cumulative sums stay finite per block)."""
    n = len(e)
    if n == 0:
        return e
    if a < 0.1:
        return e.copy()
    b = math.sqrt(1 - a * a)
    block = max(1, int(30 / -math.log(a)))
    out = np.empty(n)
    state = x0
    for s in range(0, n, block):
        seg = e[s:s + block] * b
        k = np.arange(1, len(seg) + 1)
        pw = a ** k
        out[s:s + len(seg)] = pw * (state + np.cumsum(seg / pw))
        state = float(out[s + len(seg) - 1])
    return out
