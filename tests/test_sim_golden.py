"""The shipped scenarios' golden outcomes are consistent with their own signals.

A deliberately small reference evaluator (limit rules with deadband, out_of_range, stuck, no_data; no
regulatory averages, which are the alert engine's business) runs over each scenario's in-memory message
stream. It proves that the declared windows match the generated signal for the rules it knows, and that
no other alarm of those kinds appears anywhere on the site. The alert engine's own golden tests use the
same scenarios with the real engine.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import pytest

from simulators import Scenario, Simulator, list_scenarios
from simulators.scenario import resolve_sensors
from smartpark.decode import Decoder
from smartpark.park import Park, load_park

EVALUATED = {"ll", "l", "h", "hh", "out_of_range", "stuck", "no_data"}


@dataclass
class RefEvaluator:
    """Event-clock evaluation of the simple rules; returns (key, rule, event, ts_ms) tuples."""

    park: Park
    events: list[tuple[str, str, str, int]] = field(default_factory=list)
    active: set[tuple[str, str]] = field(default_factory=set)
    last_ts: dict[str, int] = field(default_factory=dict)
    last_sample: dict[str, tuple[int, float, int]] = field(default_factory=dict)  # ts, value, repeats
    window: dict[str, deque[tuple[int, float]]] = field(default_factory=dict)
    distinct: dict[str, dict[float, int]] = field(default_factory=dict)  # value -> count in the window
    checked_ms: int = 0

    def _set(self, key: str, rule: str, on: bool, ts: int) -> None:
        k = (key, rule)
        if on and k not in self.active:
            self.active.add(k)
            self.events.append((key, rule, "raised", ts))
        elif not on and k in self.active:
            self.active.discard(k)
            self.events.append((key, rule, "cleared", ts))

    def reading(self, key: str, value: float, ts: int, quality: str) -> None:
        sensor = self.park.get(key).sensor
        if ts - self.checked_ms >= 1000:  # no_data on the event clock, checked once per second
            self.checked_ms = ts
            for other, last in self.last_ts.items():
                iv = self.park.get(other).sensor.interval_s * 1000
                if ts - last >= 3 * iv:
                    self._set(other, "no_data", True, ts)
        self.last_ts[key] = ts
        self._set(key, "no_data", False, ts)
        self._set(key, "out_of_range", quality == "bad", ts)
        if quality == "bad":
            return
        db = sensor.deadband
        for rule, limit in sensor.limits.items():
            on = (key, rule) in self.active
            if rule in ("h", "hh"):
                self._set(key, rule, value > limit if not on else value >= limit - db, ts)
            else:
                self._set(key, rule, value < limit if not on else value <= limit + db, ts)
        if sensor.sample_cycle_s:  # analyzers: count identical *new* values, one per sample cycle
            prev = self.last_sample.get(key)
            if prev is None or ts - prev[0] >= sensor.sample_cycle_s * 1000:
                repeats = prev[2] + 1 if prev is not None and prev[1] == value else 1
                self.last_sample[key] = (ts, value, repeats)
                self._set(key, "stuck", repeats >= 4, ts)
        else:  # continuous sensors: zero variance over 10 minutes
            span = (sensor.stuck_s or 600) * 1000
            w = self.window.setdefault(key, deque())
            counts = self.distinct.setdefault(key, {})
            w.append((ts, value))
            counts[value] = counts.get(value, 0) + 1
            while w and w[0][0] < ts - span:
                _, old = w.popleft()
                counts[old] -= 1
                if not counts[old]:
                    del counts[old]
            flat = len(counts) == 1 and ts - w[0][0] >= span - sensor.interval_s * 1000
            self._set(key, "stuck", flat and len(w) > 2, ts)


def evaluate(park: Park, scn: Scenario, seed: int) -> tuple[Simulator, list[tuple[str, str, str, int]]]:
    sim = Simulator(park, scn, seed=seed)
    ev = RefEvaluator(park)
    dec = Decoder(park)
    for m in sim.messages():
        for r in dec.decode(m.topic, m.payload, m.ts_ms).readings:
            ev.reading(r.key, r.value, r.ts_ms, r.quality)
    return sim, ev.events


SCENARIOS = list_scenarios()


@pytest.mark.parametrize("scn", SCENARIOS, ids=[s.id[:4] for s in SCENARIOS])
def test_golden_windows_hold_for_the_simple_rules(scn: Scenario) -> None:
    """Every expected limit/health alarm is raised (and cleared) in its window; no other one is raised."""
    park = load_park()
    sim, events = evaluate(park, scn, seed=0)

    def t(ts: int) -> float:
        return (ts - sim.t0_ms) / 1000.0

    expected: set[tuple[str, str]] = set()
    for ex in scn.expect:
        if ex.rule not in EVALUATED:
            continue
        for key in resolve_sensors(park, ex.sensor):
            expected.add((key, ex.rule))
            raised = [t(ts) for k, r, e, ts in events if (k, r, e) == (key, ex.rule, "raised")]
            assert raised, f"{key} {ex.rule} never raised"
            assert ex.raise_s[0] <= raised[0] <= ex.raise_s[1], f"{key} {ex.rule} raised at {raised[0]}"
            if ex.clear_s is not None:
                cleared = [t(ts) for k, r, e, ts in events if (k, r, e) == (key, ex.rule, "cleared")]
                assert cleared, f"{key} {ex.rule} never cleared"
                assert ex.clear_s[0] <= cleared[0] <= ex.clear_s[1], f"{key} {ex.rule} cleared at {cleared[0]}"
            assert len(raised) == 1, f"{key} {ex.rule} raised {len(raised)} times (chatter): {raised}"
    unexpected = sorted({(k, r) for k, r, e, _ in events if e == "raised" and (k, r) not in expected})
    assert not unexpected, f"alarms outside the golden outcome: {unexpected}"
