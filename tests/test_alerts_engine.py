"""Unit tests of the alarm engine: every rule type on an injected clock, tables of readings -> events."""

from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from alerts_helpers import LEVEL

from alerts import Engine, ManualClock, parse_rules
from alerts.events import AlarmEvent
from devstack.parks import asset, park_yaml, site
from smartpark.decode import Reading
from smartpark.errors import ConfigError, UsageError
from smartpark.park import parse_park

PARK = park_yaml(site(
    "plant", "Plant",
    asset("tank", "Tank", LEVEL,
          "{id: temp, name: Temp, unit: degC, range: [0, 200], normal: [20, 60], interval_s: 10, "
          "limits: {h: 80}, deadband: 1, on_delay_s: 30, off_delay_s: 20}",
          "{id: press, name: Pressure, unit: kPa, range: [0, 1000], normal: [100, 200], interval_s: 10, "
          "rate_per_min: 50, priority: {roc: high}}"),
    asset("furnace", "Furnace",
          "{id: temp, name: SCC temperature, unit: degC, range: [0, 1600], normal: [1120, 1200], interval_s: 5, "
          "regulatory: [{limit: 1100, averaging: 5min, comparator: min, source: GB 18484}]}",
          "{id: feed, name: Feed, unit: t/h, range: [0, 6], normal: [3, 5], interval_s: 10}"),
    asset("cems", "CEMS",
          "{id: nox, name: NOx, unit: mg/m3, range: [0, 1000], normal: [100, 250], interval_s: 60, "
          "regulatory: [{limit: 300, averaging: 1h, source: GB 18484}, "
          "{limit: 250, averaging: 24h, source: GB 18484}]}",
          "{id: ph, name: pH, unit: pH, range: [0, 14], normal: [6, 9], interval_s: 60, deadband: 0.1, "
          "regulatory: [{limit: [6, 9], averaging: instant, comparator: range, source: GB 8978}]}",
          "{id: nh3, name: NH3-N analyzer, unit: mg/L, range: [0, 100], normal: [0.5, 5], interval_s: 300, "
          "sample_cycle_s: 900}")))
park = parse_park(PARK, "park.yaml")
TZ = ZoneInfo("Asia/Shanghai")
T0 = int(datetime(2026, 3, 2, 10, 0, tzinfo=TZ).timestamp() * 1000)  # a clock hour in the park's zone


def R(key: str, value: float, t_s: float, quality: str = "good") -> Reading:
    return Reading(park.get(key), float(value), T0 + int(t_s * 1000), quality)


def engine(rules: str | None = None, sites: list[str] | None = None) -> Engine:
    rs = parse_rules(rules, park, "rules.yaml") if rules else None
    return Engine(park, rs, ManualClock(T0), sites=sites)


def run(e: Engine, key: str, series: list[tuple[float, float]]) -> list[tuple[float, str, str]]:
    """Feed (t_s, value) pairs; return (t_s, rule, event) for every event."""
    out: list[AlarmEvent] = []
    for t, v in series:
        out += e.process(R(key, v, t))
    return [((ev.ts - T0) / 1000, ev.rule, ev.event) for ev in out]


class TestLimits:
    """hh/h/l/ll with deadband and on/off delays."""

    @pytest.mark.parametrize(("values", "expected"), [
        # rising through h and hh, then back: cleared only beyond the deadband
        ([50, 81, 91, 89, 79, 77], [(1, "h", "raised"), (2, "hh", "raised"), (5, "h", "cleared"),
                                    (4, "hh", "cleared")]),
        # on the limit is not above it; within the deadband stays raised
        ([80, 80.5, 78.5, 78.0], [(1, "h", "raised"), (3, "h", "cleared")]),
        ([50, 9, 4, 6, 7.5, 12.5], [(1, "l", "raised"), (2, "ll", "raised"), (4, "ll", "cleared"),
                                    (5, "l", "cleared")]),
    ])
    def test_deadband(self, values: list[float], expected: list[tuple[int, str, str]]) -> None:
        """A limit raises when crossed and clears only once back by the deadband (no chattering)."""
        e = engine()
        got = run(e, "plant/tank/level", [(i * 10, v) for i, v in enumerate(values)])
        assert sorted(got) == sorted((i * 10.0, r, ev) for i, r, ev in expected)

    def test_on_and_off_delay(self) -> None:
        """on_delay_s 30: a short excursion raises nothing; a long one raises 30 s after it began; off_delay 20."""
        e = engine()
        series = [(0, 50), (10, 85), (20, 85), (30, 50),  # 20 s above: no alarm
                  (40, 85), (50, 85), (60, 85), (70, 85),  # raised at 70 = 40 + 30
                  (80, 70), (90, 70), (100, 70)]           # cleared at 100 = 80 + 20
        assert run(e, "plant/tank/temp", series) == [(70.0, "h", "raised"), (100.0, "h", "cleared")]

    def test_delay_expires_on_tick(self) -> None:
        """A delay completes on the clock even when no further reading arrives."""
        e = engine()
        assert run(e, "plant/tank/temp", [(0, 85)]) == []
        assert [x for x in e.tick(T0 + 29_000) if x.sensor == "temp" and x.asset == "tank"] == []
        ev = e.tick(T0 + 31_000)
        assert [(x.rule, x.event, x.ts) for x in ev if x.rule == "h"] == [("h", "raised", T0 + 30_000)]

    def test_event_payload(self) -> None:
        """Events carry the CONTRACT §5 fields, a bilingual message and a unique nanosecond point."""
        e = engine()
        (ev,) = run_events(e, "plant/tank/level", [(0, 95)])[-1:]
        d = ev.to_dict()
        assert d["id"] == "plant/tank/level/hh" and d["priority"] == "high" and d["state"] == "UNACK"
        assert d["value"] == 95.0 and d["limit"] == 90.0 and d["operator"] is None
        assert "液位" in d["message"] and "High-high" in d["message"]
        line = ev.to_line()
        assert line.startswith("alarm,asset=tank,priority=high,rule=hh,sensor=level,site=plant ")
        assert line.endswith(str(ev.ts_ns)) and ev.ts_ns // 1_000_000 == ev.ts


def run_events(e: Engine, key: str, series: list[tuple[float, float]]) -> list[AlarmEvent]:
    out: list[AlarmEvent] = []
    for t, v in series:
        out += e.process(R(key, v, t))
    return out


class TestHealth:
    """no_data, stuck, out_of_range, rate of change."""

    def test_no_data(self) -> None:
        """Raised at 3 x interval after the last reading (not before), cleared by the next reading."""
        e = engine(sites=["plant"])
        for k in ("plant/tank/level", "plant/tank/temp", "plant/tank/press", "plant/furnace/temp",
                  "plant/furnace/feed"):
            e.process(R(k, 50, 0))
        assert [x for x in e.tick(T0 + 30_000) if x.sensor == "level"] == []
        ev = [x for x in e.tick(T0 + 30_001) if x.id == "plant/tank/level/no_data"]
        assert [(x.event, x.ts, x.priority) for x in ev] == [("raised", T0 + 30_000, "low")]
        assert [x.event for x in e.process(R("plant/tank/level", 50, 40)) if x.rule == "no_data"] == ["cleared"]

    def test_unseen_sensors_are_due_from_the_first_time_known(self) -> None:
        """A sensor never heard of is late 3 intervals after the engine first learns the time."""
        e = engine(sites=["plant"])
        e.process(R("plant/tank/level", 50, 0))
        assert {x.id for x in e.tick(T0 + 31_000) if x.rule == "no_data"} >= {"plant/tank/temp/no_data"}

    def test_stuck_continuous(self) -> None:
        """A continuous sensor flat for max(600 s, 10 intervals) is stuck; a change clears it."""
        e = engine()
        series = [(t, 42.0) for t in range(0, 610, 10)] + [(610, 42.5)]
        assert run(e, "plant/tank/level", series) == [(600.0, "stuck", "raised"), (610.0, "stuck", "cleared")]

    def test_stuck_analyzer_is_cycle_aware(self) -> None:
        """An analyzer repeats each value for a sample cycle (staircase); stuck only after 4 cycles."""
        e = engine()
        stair = [(t, 1.0 + (t // 900) * 0.1) for t in range(0, 5400, 300)]  # new value every 900 s
        assert run(e, "plant/cems/nh3", stair) == []
        flat = [(5400 + t, 0.82) for t in range(0, 4000, 300)]
        assert run(e, "plant/cems/nh3", flat) == [(5400 + 3600.0, "stuck", "raised")]

    def test_zero_is_a_stopped_machine(self) -> None:
        """A value of 0 or on the range bound for a long time is not a stuck sensor."""
        e = engine()
        assert run(e, "plant/furnace/feed", [(t, 0.0) for t in range(0, 1500, 10)]) == []

    def test_out_of_range_suppresses_limits(self) -> None:
        """Outside the instrument range is a sensor fault: out_of_range, and no hh although 120 > 90."""
        e = engine()
        got = run_events(e, "plant/tank/level", [(0, 50)])
        got += e.process(Reading(park.get("plant/tank/level"), 120.0, T0 + 10_000, "bad"))
        got += e.process(R("plant/tank/level", 50, 20))
        assert [(x.rule, x.event) for x in got] == [("out_of_range", "raised"), ("out_of_range", "cleared")]

    def test_rate_of_change(self) -> None:
        """A change of more than rate_per_min within a minute raises roc with the park's priority."""
        e = engine()
        series = [(t, 100.0) for t in range(0, 70, 10)] + [(70, 120.0), (80, 170.0), (90, 172.0)]
        series += [(t, 172.0) for t in range(100, 200, 10)]
        got = run_events(e, "plant/tank/press", series)
        assert [(x.rule, x.event, x.priority) for x in got if x.rule == "roc"] == [
            ("roc", "raised", "high"), ("roc", "cleared", "high")]
        assert got[0].ts == T0 + 80_000


class TestFutureTimestamps:
    """With the wall clock, a reading stamped far ahead of this machine's clock is a clock fault of its sensor or
    gateway: it is evaluated at its arrival, and it holds back none of the sensor's later readings."""

    KEY = "plant/tank/level"

    @staticmethod
    def wall() -> tuple[Engine, ManualClock]:
        clock = ManualClock(T0)
        clock.max_ahead_ms = 300_000  # as WallClock: 5 minutes of tolerated skew
        return Engine(park, None, clock), clock

    def test_far_future_reading_is_evaluated_at_arrival(self, caplog: pytest.LogCaptureFixture) -> None:
        e, clock = self.wall()
        raised = e.process(R(self.KEY, 95, 3 * 3600))  # stamped 3 h ahead
        assert {(x.rule, x.event, x.ts) for x in raised} == {("h", "raised", T0), ("hh", "raised", T0)}
        clock.set(T0 + 10_000)
        cleared = e.process(R(self.KEY, 50, 10))  # the next honest reading is not held back
        assert {(x.rule, x.event, x.ts) for x in cleared} == {("h", "cleared", T0 + 10_000),
                                                             ("hh", "cleared", T0 + 10_000)}
        clock.set(T0 + 20_000)
        assert e.process(R(self.KEY, 50, 7200)) == []
        assert e.future_readings == 2
        assert caplog.text.count("ahead of this machine's clock") == 1  # once per sensor
        assert "10800 s ahead" in caplog.text

    def test_small_skew_is_evaluated_at_arrival_too(self) -> None:
        """Within the tolerance a reading is no clock fault (not counted), but it is not judged ahead of now."""
        e, clock = self.wall()
        raised = e.process(R(self.KEY, 85, 120))  # 2 min ahead: within the tolerance
        assert [(x.rule, x.event, x.ts) for x in raised] == [("h", "raised", T0)]
        assert e.future_readings == 0
        clock.set(T0 + 3600_000)  # an hour later, +1 h is no longer the future
        assert [(x.rule, x.event, x.ts) for x in e.process(R(self.KEY, 50, 3600))] == [
            ("h", "cleared", T0 + 3600_000)]
        assert e.future_readings == 0

    def test_event_clock_judges_a_late_reading_at_the_newest_time(self) -> None:
        """The event clock (replays) has no 'ahead': the newest reading is the time, and a reading after it
        that is older is judged at that time rather than ignored; the same reading again is a redelivery."""
        e = engine()
        assert {x.ts for x in e.process(R(self.KEY, 95, 3 * 3600))} == {T0 + 3 * 3600_000}
        assert {(x.rule, x.event, x.ts) for x in e.process(R(self.KEY, 50, 10))} == {
            ("h", "cleared", T0 + 3 * 3600_000), ("hh", "cleared", T0 + 3 * 3600_000)}
        assert e.process(R(self.KEY, 95, 10)) == []  # the same timestamp again: a redelivery
        assert e.process(R(self.KEY, 95, 3 * 3600)) == []
        assert e.future_readings == 0

    @pytest.mark.parametrize("wall", [True, False])
    def test_a_reading_290_s_ahead_does_not_blind_the_sensor(self, wall: bool) -> None:
        """One reading stamped 290 s ahead (inside the tolerance), then five real readings above HH: the
        first of them raises, with either clock, as it does for an engine that never saw the early one."""
        def feed(e: Engine, clock: ManualClock | None, early: bool) -> list[tuple[str, str]]:
            got = []
            for k, t in enumerate(range(0, 100, 10)):
                if clock is not None:
                    clock.set(T0 + t * 1000)
                evs = e.process(R(self.KEY, 50, t))
                if early and k == 3:
                    evs += e.process(R(self.KEY, 50, t + 290))
                got += [(x.rule, x.event) for x in evs]
            for t in range(100, 150, 10):
                if clock is not None:
                    clock.set(T0 + t * 1000)
                got += [(x.rule, x.event) for x in e.process(R(self.KEY, 95, t))]
            return got

        def fresh() -> tuple[Engine, ManualClock | None]:
            return self.wall() if wall else (engine(), None)

        reference = feed(*fresh(), early=False)
        assert sorted(reference) == [("h", "raised"), ("hh", "raised")]
        assert feed(*fresh(), early=True) == reference

    def test_redelivered_and_too_late_readings_are_ignored(self) -> None:
        e = engine()
        for t in range(0, 400, 10):  # 40 readings: more than the engine remembers per sensor
            e.process(R(self.KEY, 50, t))
        assert e.process(R(self.KEY, 95, 390)) == []  # redelivery of the newest
        assert e.process(R(self.KEY, 95, 200)) == []  # redelivery of one it still remembers
        assert e.process(R(self.KEY, 95, 15)) == []  # older than all it remembers: too late to judge
        assert [x.rule for x in e.process(R(self.KEY, 95, 385))] == ["h", "hh"]  # late, new: judged

    @pytest.mark.parametrize("wall", [True, False])
    def test_history_from_the_future_does_not_warm_the_averages(self, wall: bool) -> None:
        """A stored future reading read back at start would stay at the head of the 5-minute window."""
        e, _ = self.wall() if wall else (engine(), None)
        key = "plant/furnace/temp"
        e.warm(R(key, 0, 3 * 3600))
        got = [r for r in run(e, key, [(t, 1110.0) for t in range(0, 300, 5)]) if r[1] == "reg_5min"]
        assert [event for *_, event in got] == ([] if wall else ["raised"])  # 0 would drag the mean below 1100


class TestBadQuality:
    """A bad reading is a sign of life for no_data, never judged against limits; bad for longer than
    3 x interval_s (or bad_quality_s) raises the low-priority health alarm bad_quality."""

    KEY = "plant/tank/level"

    def test_three_hours_of_bad_readings_at_95_raise_bad_quality_only(self) -> None:
        e = engine()
        got = []
        for t in range(0, 3 * 3600, 10):
            e.clock.set(T0 + t * 1000)  # type: ignore[attr-defined]  # engine() gives it a ManualClock
            got += [(x.rule, x.event, x.ts, x.priority) for x in e.process(R(self.KEY, 95, t, "bad"))]
            got += [(x.rule, x.event, x.ts, x.priority) for x in e.tick(T0 + t * 1000 + 5000)
                    if x.sensor == "level"]
        assert got == [("bad_quality", "raised", T0 + 30_000, "low")]  # 3 x 10 s after the first bad one
        cleared = e.process(R(self.KEY, 50, 3 * 3600))
        assert [(x.rule, x.event) for x in cleared] == [("bad_quality", "cleared")]

    def test_good_readings_in_between_restart_the_count(self) -> None:
        e = engine()
        got = []
        for t in range(0, 600, 10):
            q = "good" if t % 30 == 0 else "bad"  # never bad for longer than 20 s
            got += [x.rule for x in e.process(R(self.KEY, 50, t, q))]
        assert got == []

    def test_uncertain_is_evaluated(self) -> None:
        e = engine()
        assert [x.rule for x in e.process(R(self.KEY, 95, 0, "uncertain"))] == ["h", "hh"]

    def test_bad_quality_s_overrides(self) -> None:
        p = parse_park(PARK.replace("limits: {hh: 90, h: 80, l: 10, ll: 5}, deadband: 2}",
                                    "limits: {hh: 90, h: 80, l: 10, ll: 5}, deadband: 2, bad_quality_s: 100}"),
                       "park.yaml")
        e = Engine(p, None, ManualClock(T0))
        ref = p.get(self.KEY)
        got = []
        for t in range(0, 200, 10):
            got += [(x.rule, x.ts) for x in e.process(Reading(ref, 95.0, T0 + t * 1000, "bad"))]
        assert got == [("bad_quality", T0 + 110_000)]  # first reading after more than 100 s of bad ones

    def test_bad_quality_survives_dump_and_load(self) -> None:
        e = engine()
        for t in range(0, 30, 10):
            e.process(R(self.KEY, 95, t, "bad"))
        e2 = engine()
        e2.load(e.dump())
        assert [x.rule for x in e2.process(R(self.KEY, 95, 40, "bad"))] == ["bad_quality"]

class TestRegulatory:
    """Averages as the standards define them, only when enough valid data exist."""

    def test_rolling_5min_and_validity(self) -> None:
        """GB 18484: the 5-minute mean (not the reading) below 1100; needs 75 % of the window's readings."""
        e = engine()
        key = "plant/furnace/temp"
        # a sparse start: readings every 30 s below 1100 are not enough for a valid 5-min mean
        assert [r for r in run(e, key, [(t, 1050) for t in range(0, 300, 30)]) if r[1] == "reg_5min"] == []
        e = engine()
        series = [(t, 1150.0) for t in range(0, 300, 5)] + [(t, 1050.0) for t in range(300, 900, 5)]
        series += [(t, 1150.0) for t in range(900, 1500, 5)]
        got = [r for r in run(e, key, series) if r[1] == "reg_5min"]
        # the mean of 60 values falls below 1100 once more than half are 1050 (450 s), is back at 1100 at 1045 s
        assert got == [(450.0, "reg_5min", "raised"), (1045.0, "reg_5min", "cleared")]

    def test_excursions_per_natural_day(self) -> None:
        """More than 5 five-minute excursions in one natural day raise reg_5min_excursions; midnight clears."""
        e = engine()
        key = "plant/furnace/temp"
        series: list[tuple[float, float]] = []
        for k in range(7):
            base = k * 1800
            series += [(base + t, 1150.0) for t in range(0, 900, 5)] + [(base + t, 1000.0) for t in range(900, 1800, 5)]
        got = [r for r in run(e, key, series) if r[1] == "reg_5min_excursions"]
        assert len(got) == 1 and got[0][2] == "raised"
        midnight = datetime(2026, 3, 3, 0, 0, tzinfo=TZ).timestamp() * 1000
        ev = e.tick(int(midnight) + 1)
        assert [(x.rule, x.event, x.ts) for x in ev if x.rule == "reg_5min_excursions"] == [
            ("reg_5min_excursions", "cleared", int(midnight))]

    @pytest.mark.parametrize(("n_valid", "value", "expected"), [
        (60, 320.0, [("reg_1h", "raised")]),   # a full hour above 300
        (45, 320.0, [("reg_1h", "raised")]),   # 45 of 60 minute values: still valid (75 %)
        (44, 320.0, []),                       # 44: invalid, no judgement
        (60, 290.0, []),                       # compliant
    ])
    def test_clock_hour_mean(self, n_valid: int, value: float, expected: list[tuple[str, str]]) -> None:
        """The clock-hour mean is judged at the end of the hour, only when valid; the event says so."""
        e = engine()
        got = run_events(e, "plant/cems/nox", [(60 * i, value) for i in range(n_valid)])
        got += e.process(R("plant/cems/nox", 200, 3600))  # next hour's first reading closes the hour
        regs = [x for x in got if x.rule.startswith("reg_")]
        assert [(x.rule, x.event) for x in regs] == expected
        if regs:
            assert regs[0].ts == T0 + 3_600_000 and f"{n_valid} values" in regs[0].message

    def test_snapshot_keeps_the_layout_of_the_buckets(self) -> None:
        """A snapshot holds a sensor's averaging buckets as the list [hour end, hour sum, hour n, day end, day
        sum, day n, month end, month sum, month n, days of the month] (what is on disk; the month sums valid
        days' means, smartpark.averages), and an hour begun before a restart is judged whole after it."""
        key = "plant/cems/nox"
        e = engine()
        run(e, key, [(60 * i, 320.0) for i in range(60)] + [(60 * i, 290.0) for i in range(60, 90)])
        snap = json.loads(json.dumps(e.dump()))
        day_end = int(datetime(2026, 3, 3, 0, 0, tzinfo=TZ).timestamp() * 1000)
        month_end = int(datetime(2026, 4, 1, 0, 0, tzinfo=TZ).timestamp() * 1000)
        assert snap["sensors"][key][8] == [T0 + 7_200_000, 8700.0, 30, day_end, 320.0, 1, month_end, 0.0, 0, 31]
        again = engine()
        again.load(snap)
        got = run_events(again, key, [(60 * i, 290.0) for i in range(90, 120)])
        got += again.process(R(key, 200, 7200))
        hourly = [x for x in got if x.rule == "reg_1h"]
        assert [(x.event, x.value, x.ts) for x in hourly] == [("cleared", 290.0, T0 + 7_200_000)]
        assert "hourly mean of 60 values" in hourly[0].message
        assert again.dump()["sensors"][key][8][:6] == [T0 + 10_800_000, 200.0, 1, day_end, 610.0, 2]

    def test_hour_closes_on_the_clock_without_readings(self) -> None:
        """When the sensor falls silent, the hour is judged by tick after its end."""
        e = engine()
        run(e, "plant/cems/nox", [(60 * i, 400.0) for i in range(60)])
        ev = e.tick(T0 + 3_600_000 + 11_000)
        assert [(x.rule, x.event) for x in ev if x.rule == "reg_1h"] == [("reg_1h", "raised")]

    def test_daily_mean_needs_20_valid_hours(self) -> None:
        """The daily mean is of valid hourly means and needs 20 of them (GB 18484 3.19)."""
        day0 = int(datetime(2026, 3, 2, 0, 0, tzinfo=TZ).timestamp() * 1000)
        for hours, expected in ((20, ["raised"]), (19, [])):
            e = Engine(park, None, ManualClock(day0))
            ref = park.get("plant/cems/nox")
            out: list[AlarmEvent] = []
            for h in range(24):
                for m in range(60):
                    v = 280.0 if h < hours else 0.0
                    if h >= hours and m > 10:
                        continue  # hours after `hours` have too few values: invalid
                    out += e.process(Reading(ref, v, day0 + h * 3_600_000 + m * 60_000))
            out += e.process(Reading(ref, 100.0, day0 + 24 * 3_600_000))
            daily = [x for x in out if x.rule == "reg_24h"]
            assert [x.event for x in daily] == expected, hours
            if daily:
                assert daily[0].ts == day0 + 24 * 3_600_000 and "20 valid hours" in daily[0].message

    def test_instant_range(self) -> None:
        """An instantaneous range limit (pH 6-9) with the deadband for clearing."""
        e = engine()
        got = run(e, "plant/cems/ph", [(0, 7), (60, 9.2), (120, 8.95), (180, 8.85), (240, 5.5), (300, 6.2)])
        assert got == [(60.0, "reg_instant", "raised"), (180.0, "reg_instant", "cleared"),
                       (240.0, "reg_instant", "raised"), (300.0, "reg_instant", "cleared")]


class TestLifecycle:
    """ISA-18.2 states, acknowledgement, shelving with expiry, out of service."""

    def test_states(self) -> None:
        """UNACK -> ACKED -> NORM, and UNACK -> RTNUN -> NORM by ack."""
        e = engine()
        key = "plant/tank/level"
        run(e, key, [(0, 85)])
        assert e.get(f"{key}/h").state == "UNACK"
        ev = e.ack(f"{key}/h", "alice", "seen", now_ms=T0 + 5000)
        assert (ev.event, ev.state, ev.operator) == ("acked", "ACKED", "alice") and "seen" in ev.message
        run(e, key, [(10, 50)])
        assert e.get(f"{key}/h").state == "NORM"
        run(e, key, [(20, 85), (30, 50)])
        assert e.get(f"{key}/h").state == "RTNUN"
        assert e.ack(f"{key}/h", "bob").state == "NORM"
        with pytest.raises(UsageError, match="nothing to acknowledge"):
            e.ack(f"{key}/h", "bob")
        with pytest.raises(UsageError, match="unknown alarm id"):
            e.ack("plant/tank/level/xx", "bob")

    def test_shelving_expires(self) -> None:
        """Shelving needs a reason and a bounded duration, hides changes, and ends by itself."""
        e = engine()
        aid = "plant/tank/level/h"
        with pytest.raises(UsageError, match="reason"):
            e.shelve(aid, "alice", "", 3600)
        with pytest.raises(UsageError, match="at most 24 h"):
            e.shelve(aid, "alice", "maintenance", 25 * 3600)
        ev = e.shelve(aid, "alice", "sensor maintenance", 600, now_ms=T0)
        assert ev.state == "SHLVD" and "sensor maintenance" in ev.message
        assert run(e, "plant/tank/level", [(0, 85)]) == []  # shelved: not annunciated
        assert e.tick(T0 + 599_000) == [] or all(x.id != aid for x in e.tick(T0 + 599_000))
        ev2 = [x for x in e.tick(T0 + 600_000) if x.id == aid]
        assert [(x.event, x.state, x.operator) for x in ev2] == [("unshelved", "UNACK", "system")]

    def test_out_of_service(self) -> None:
        """Out of service hides an alarm until it is back in service."""
        e = engine()
        aid = "plant/tank/level/hh"
        assert e.out_of_service(aid, "alice", "replacing transmitter", now_ms=T0).state == "OOSRV"
        assert [r for r in run(e, "plant/tank/level", [(0, 95)]) if r[1] == "hh"] == []
        assert e.in_service(aid, "alice", now_ms=T0 + 1000).state == "UNACK"

    def test_dump_and_load(self) -> None:
        """The whole state survives a round trip through JSON (the durable snapshot)."""
        import json

        e = engine()
        run(e, "plant/furnace/temp", [(t, 1050.0) for t in range(0, 200, 5)])
        run(e, "plant/tank/level", [(0, 85)])
        e2 = engine()
        e2.load(json.loads(json.dumps(e.dump())))
        assert e2.get("plant/tank/level/h").state == "UNACK"
        a = run(e, "plant/furnace/temp", [(t, 1050.0) for t in range(200, 400, 5)])
        b = run(e2, "plant/furnace/temp", [(t, 1050.0) for t in range(200, 400, 5)])
        assert a == b and a
        assert run(e2, "plant/tank/level", [(0, 85)]) == []  # already seen: redelivery is ignored


RULES = """
rules:
  - name: cold_feed
    sensor: plant/furnace/temp
    when: "temp < 1100 and feed > 0.1"
    priority: high
    message: SCC below 1100 C while feeding
    suppressed_by: [shutdown]
states:
  - name: shutdown
    site: plant
    when: "furnace.feed < 0.1 and furnace.temp < 850"
    suppresses: ["plant/cems/*"]
"""


class TestCustomRules:
    """Boolean expressions over an asset's sensors, plant states that suppress by design."""

    def test_custom_rule(self) -> None:
        """The custom rule raises only when both conditions hold, with its own priority and message."""
        e = engine(RULES)
        got = run_events(e, "plant/furnace/feed", [(0, 4.0)])
        got += run_events(e, "plant/furnace/temp", [(1, 1090.0)])
        got += run_events(e, "plant/furnace/feed", [(10, 0.0)])
        cold = [(x.event, x.priority) for x in got if x.rule == "cold_feed"]
        assert cold == [("raised", "high"), ("cleared", "high")]
        assert "while feeding" in next(x.message for x in got if x.rule == "cold_feed")

    def test_state_suppresses(self) -> None:
        """While the furnace is shut down, CEMS alarms are suppressed (an active one clears)."""
        e = engine(RULES)
        got = run_events(e, "plant/cems/ph", [(0, 10.0)])
        assert [(x.rule, x.event) for x in got] == [("reg_instant", "raised")]
        run(e, "plant/furnace/feed", [(1, 0.0)])
        got = run_events(e, "plant/furnace/temp", [(2, 500.0)])
        assert [(x.id, x.event) for x in got if x.site == "plant" and x.asset == "cems"] == [
            ("plant/cems/ph/reg_instant", "cleared")]
        assert [r for r in run(e, "plant/cems/ph", [(60, 11.0)]) if r[1] == "reg_instant"] == []

    @pytest.mark.parametrize(("text", "where"), [
        ("rules:\n  - name: x\n    sensor: plant/tank/nope\n    when: level > 1\n", "rules.yaml:3:rules[0].sensor"),
        ("rules:\n  - name: x\n    sensor: plant/tank/level\n    when: level >\n", "rules.yaml:4:rules[0].when"),
        ("rules:\n  - name: x\n    sensor: plant/tank/level\n    when: __import__('os')\n",
         "rules.yaml:4:rules[0].when"),
        ("rules:\n  - name: x\n    sensor: plant/tank/level\n    when: level > 1\n    colour: red\n",
         "rules.yaml:5:rules[0].colour"),
        ("rules:\n  - name: x\n    sensor: plant/tank/level\n    when: tank.nope > 1\n", "rules.yaml:4:rules[0].when"),
        ("rules:\n  - name: hh\n    sensor: plant/tank/level\n    when: level > 1\n", "rules.yaml:2:rules[0].name"),
    ])
    def test_mistakes_are_one_line(self, text: str, where: str) -> None:
        """Unknown sensor, bad expression, unknown key: one line naming file, line and key."""
        with pytest.raises(ConfigError) as exc:
            parse_rules(text, park, "rules.yaml")
        assert str(exc.value).startswith(where + ":"), str(exc.value)
        assert "\n" not in str(exc.value)


def test_example_rules_file_loads_on_the_bundled_park() -> None:
    """The shipped example rules file is valid against the bundled park (custom rule, state, route)."""
    from pathlib import Path

    from alerts import load_rules
    from smartpark.park import load_park

    rs = load_rules(Path(__file__).resolve().parent.parent / "alerts" / "rules.example.yaml", load_park())
    assert [r.spec.name for r in rs.custom] == ["scc_cold_feed"] and rs.max_shelve_s == 12 * 3600
    e = Engine(load_park(), rs, ManualClock(T0))
    assert e.get("hw_center/scc/temp/scc_cold_feed").suppressors[0].name == "incinerator_off"
    assert e.get("hw_center/stack_cems/nox/reg_1h").suppressors and not e.get("hw_center/scc/temp/h").suppressors
