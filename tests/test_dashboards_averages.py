"""The regulatory panels show the averages the alert engine judges, computed by InfluxDB from the stored
readings: the rolling 5-minute mean of GB 18484 furnace temperature (scenario sc01, where tumbling 5-minute
blocks never went below 1100 degC while the engine's rolling mean did), and valid clock-hour and daily means."""

from __future__ import annotations

import asyncio
import math
from typing import Any

from epochs import RECENT_LOCAL_MIDNIGHT_MS, RECENT_MIDNIGHT_MS

from alerts import Engine, EventClock
from dashboards import build_all, iter_panels, run_panel
from dashboards.macros import TimeRange
from dashboards.query import PanelResult
from devstack.parks import asset, park_yaml, site
from smartpark.decode import Decoder, Reading
from smartpark.influx import InfluxClient
from smartpark.park import load_park, parse_park

PARK = load_park()
START = RECENT_MIDNIGHT_MS  # a multiple of every interval: readings fall at the start of their bucket


def _write(db: Any, readings: list[Reading]) -> None:
    lines = [f"reading,site={r.ref.site},asset={r.ref.asset},sensor={r.ref.sensor.id} value={r.value!r} {r.ts_ms}"
             for r in readings]
    for i in range(0, len(lines), 5000):
        db.write(lines[i:i + 5000])


def _panel(park: Any, site: str, words: str) -> tuple[dict[str, Any], dict[str, Any]]:
    dash = next(d for d in build_all(park) if d["uid"] == f"smartpark-site-{site}")
    return dash, next(p for p in iter_panels(dash) if words in p["title"])


def _run(db: Any, dash: dict[str, Any], panel: dict[str, Any], tr: TimeRange) -> PanelResult:
    from smartpark.config import Settings

    async def go() -> PanelResult:
        async with InfluxClient(Settings(influx_url=db.url, influx_db=db.db).influx(), timeout=60) as client:
            return await run_panel(client, dash["uid"], panel, tr, {})

    return asyncio.run(go())


def _points(res: PanelResult, ref_id: str = "A") -> list[tuple[int, float]]:
    series = [x for x in res.series if x.ref_id == ref_id]
    assert len(series) == 1, res.queries
    return [(int(t), float(v)) for t, v in series[0].values if v is not None]


class TestFurnaceFiveMinuteMean:
    def test_the_panel_shows_the_engines_rolling_mean_at_the_breach(self, influx_db: Any) -> None:
        """sc01: the first point of the panel below 1100 degC is the reading at which the engine raised
        reg_5min, with the engine's mean to 1e-9; at every earlier reading both are at or above the limit."""
        from simulators import Simulator, load_scenario

        scenario = load_scenario("sc01_scc_temp_drop_on_feed", PARK)
        engine = Engine(PARK, clock=EventClock(), sites=[scenario.site])
        decoder = Decoder(PARK)
        readings = [r for m in Simulator(PARK, scenario, seed=1, start_ms=START).messages()
                    for r in decoder.decode(m.topic, m.payload, m.ts_ms).readings
                    if r.ref.key == "hw_center/scc/temp"]
        events = [e for r in readings for e in engine.process(r)]
        raised = [e for e in events if e.rule == "reg_5min" and e.event == "raised"]
        assert raised, "sc01 raised no reg_5min: the scenario is its fixture"
        breach = raised[0]
        assert breach.value < 1100
        _write(influx_db, readings)

        dash, panel = _panel(PARK, "hw_center", "5-min mean")
        points = _points(_run(influx_db, dash, panel, TimeRange(readings[0].ts_ms, readings[-1].ts_ms)))
        first_below = next((t, v) for t, v in points if v < 1100)
        assert first_below[0] == breach.ts // 5000 * 5000
        assert math.isclose(first_below[1], breach.value, rel_tol=1e-9), (first_below, breach.value)


def stack_park(sensor: str) -> str:
    """A park of one regulated sensor on a stack CEMS (``plant/stack/<id>``)."""
    return park_yaml(site("plant", "Plant", asset("stack", "Stack CEMS", sensor)))


PARK_HOURLY = stack_park(
    "{id: so2, name: SO2, unit: mg/m3, range: [0, 500], normal: [0, 80], interval_s: 60, regulatory: ["
    '{limit: 100, averaging: 1h, source: "GB 18484-2020"}, {limit: 80, averaging: 24h, source: "GB 18484-2020"}]}')


class TestHourlyAndDailyMeans:
    def test_valid_hours_and_the_mean_of_hourly_means(self, influx_db: Any) -> None:
        """Two days of SO2 where some hours are short of readings: the hourly panel shows exactly the engine's
        valid hourly means; the daily panel the engine's mean of valid hours (not the mean of the readings),
        and nothing for a day with fewer than 20 valid hours."""
        park = parse_park(PARK_HOURLY, "park.yaml")
        ref = park.get("plant/stack/so2")
        engine = Engine(park, clock=EventClock())
        day0 = RECENT_LOCAL_MIDNIGHT_MS  # 00:00 Asia/Shanghai
        readings: list[Reading] = []
        valid = 0
        for h in range(48):
            n = 60 if h % 8 else 30  # every eighth hour has half its readings: invalid (needs 45)
            if h >= 30:
                n = 60 if h % 2 else 20  # the second day: 14 valid hours only
            if n >= 45:  # valid hours alternate above and below 100: each is a raise or a clear
                level, valid = (130.0 if valid % 2 == 0 else 60.0), valid + 1
            else:
                level = 300.0  # the short hours run high: counted in, they would move every mean
            readings += [Reading(ref, level + (i % 3), day0 + h * 3_600_000 + i * 60_000, "good") for i in range(n)]
        readings.append(Reading(ref, 40.0, day0 + 48 * 3_600_000 + 60_000, "good"))  # closes the last period
        events = [e for r in readings for e in engine.process(r)]
        hourly = {e.ts - 3_600_000: e.value for e in events if e.rule == "reg_1h"}
        judged_days = {e.ts - 86_400_000: e.value for e in events if e.rule == "reg_24h"}
        _write(influx_db, readings)
        tr = TimeRange(day0, day0 + 48 * 3_600_000 - 1)

        dash, panel = _panel(park, "plant", "hourly mean")
        shown = dict(_points(_run(influx_db, dash, panel, tr)))
        assert len(shown) == valid == 21 + 14  # short hours are not plotted: the engine does not judge them
        assert set(shown) == set(hourly)  # every valid hour raised or cleared: the engine's judged means
        assert all(math.isclose(shown[t], v, rel_tol=1e-9) for t, v in hourly.items())

        dash, panel = _panel(park, "plant", "daily mean")
        res = _run(influx_db, dash, panel, tr)
        days = _points(res)
        assert [t for t, _ in days] == [day0]  # the second day has 14 valid hours: no daily mean
        so_far = _points(res, "B")  # ... only its provisional mean, in a series of its own
        second = [v for t, v in sorted(shown.items()) if t >= day0 + 86_400_000]
        assert [t for t, _ in so_far] == [day0 + 86_400_000]
        assert math.isclose(so_far[0][1], sum(second) / len(second), rel_tol=1e-9)
        valid_means = [v for t, v in sorted(shown.items()) if t < day0 + 86_400_000]
        assert math.isclose(days[0][1], sum(valid_means) / len(valid_means), rel_tol=1e-9)
        all_readings = [r.value for r in readings if r.ts_ms < day0 + 86_400_000]
        assert not math.isclose(days[0][1], sum(all_readings) / len(all_readings), rel_tol=1e-3)
        assert list(judged_days) == [day0]  # the engine judged the first day only, on the same number
        assert math.isclose(judged_days[day0], days[0][1], rel_tol=1e-9)


def _message(ref: Any, value: float, ts: int, quality: str | None = None, flag: str | None = None) -> Any:
    """An MQTT reading message of ``ref``, as a device sends it."""
    import json

    from smartpark.topics import reading_topic

    doc: dict[str, Any] = {"value": value, "ts": ts}
    if quality is not None:
        doc["quality"] = quality
    if flag is not None:
        doc["flag"] = flag
    return reading_topic(ref.site, ref.asset, ref.sensor.id), json.dumps(doc).encode()


def _decode_and_store(db: Any, park: Any, messages: list[tuple[str, bytes]]) -> list[Reading]:
    """What the engine and the collector make of ``messages``: the engine's readings, the collector's lines
    written to InfluxDB (out-of-range readings stored with quality bad)."""
    decoder = Decoder(park)
    readings = [r for topic, payload in messages for r in decoder.decode(topic, payload).readings]
    lines = [line for topic, payload in messages for line in decoder.lines(topic, payload)[0]]
    for i in range(0, len(lines), 5000):
        db.write(lines[i:i + 5000])
    return readings


def _report(db: Any, park: Any, day: Any, site: str) -> Any:
    from reports.compute import daily_report
    from smartpark.config import Settings

    async def go() -> Any:
        async with InfluxClient(Settings(influx_url=db.url, influx_db=db.db).influx(), timeout=60) as client:
            return await daily_report(client, park, day, site)

    return asyncio.run(go())


class TestOneDefinition:
    """The engine judges, the panels draw and the report prints the same averages of the same readings: only
    valid readings count (quality uncertain and flag S do; quality bad, a flag other than N/S whatever its
    quality, and out-of-range values do not), hours valid with 75 % of their readings, days with 20 valid
    hours (smartpark.averages)."""

    def test_hourly_and_daily_means_with_flags_and_qualities(self, influx_db: Any) -> None:
        """A day of SO2 whose hours mix good readings with uncertain, S-, D- (stated good) and M-flagged, bad
        and out-of-range ones: the engine's judged hourly means, the hourly panel and the report's valid hours
        are the same 20 hours with the same means; the daily mean of those 20 is judged, drawn and printed."""
        from datetime import date

        park = parse_park(PARK_HOURLY, "park.yaml")
        ref = park.get("plant/stack/so2")
        day0 = 1_764_172_800_000  # 2025-11-27 00:00 Asia/Shanghai
        messages = []
        valid = 0
        for h in range(24):
            t0, kind = day0 + h * 3_600_000, h % 6
            level = 130.0 if valid % 2 == 0 else 60.0  # valid hours alternate above and below 100: each judged
            good = {0: 60, 1: 40, 2: 40, 3: 40, 4: 50, 5: 46}[kind]
            messages += [_message(ref, level + i % 3, t0 + i * 60_000) for i in range(good)]
            rest = [t0 + i * 60_000 for i in range(good, 60)]
            if kind == 1:  # uncertain: counts (50 valid readings)
                messages += [_message(ref, level + 10, t, "uncertain") for t in rest[:10]]
            elif kind == 2:  # flag S, no quality: uncertain, counts
                messages += [_message(ref, level + 10, t, flag="S") for t in rest[:10]]
            elif kind == 3:  # flag D, though stated good: never counts, the hour has 40 of 45
                messages += [_message(ref, 400.0, t, "good", "D") for t in rest[:10]]
            elif kind == 4:  # quality bad
                messages += [_message(ref, 450.0, t, "bad") for t in rest[:10]]
            else:  # flag M without quality (bad), and values outside the range [0, 500] (stored bad)
                messages += [_message(ref, 420.0, t, flag="M") for t in rest[:5]]
                messages += [_message(ref, 600.0, t) for t in rest[5:10]]
            valid += kind != 3
        messages.append(_message(ref, 40.0, day0 + 24 * 3_600_000 + 60_000))  # closes the day
        readings = _decode_and_store(influx_db, park, messages)
        engine = Engine(park, clock=EventClock())
        events = [e for r in readings for e in engine.process(r)]
        judged = {e.ts - 3_600_000: e.value for e in events if e.rule == "reg_1h"}
        assert valid == 20 and len(judged) == 20  # every valid hour judged (each a raise or a clear), no other

        tr = TimeRange(day0, day0 + 24 * 3_600_000 - 1)
        dash, panel = _panel(park, "plant", "hourly mean")
        shown = dict(_points(_run(influx_db, dash, panel, tr)))
        sensor = _report(influx_db, park, date(2025, 11, 27), "plant").sites[0].sensors[0]
        printed = {p.start: p.mean for p in sensor.hours if p.valid}
        assert set(shown) == set(judged) == set(printed)
        for t, mean in judged.items():
            assert math.isclose(shown[t], mean, rel_tol=1e-9) and math.isclose(printed[t], mean, rel_tol=1e-9), t

        day_events = [e for e in events if e.rule == "reg_24h"]
        assert len(day_events) == 1 and sensor.total.valid and sensor.total.valid_count == 20
        dash, panel = _panel(park, "plant", "daily mean")
        (t, drawn), = _points(_run(influx_db, dash, panel, tr))
        assert t == day0
        assert math.isclose(drawn, day_events[0].value, rel_tol=1e-9)
        assert sensor.total.mean is not None and math.isclose(sensor.total.mean, drawn, rel_tol=1e-9)

    def test_five_minute_means_with_flags_and_qualities(self, influx_db: Any) -> None:
        """sc01 with every seventh furnace reading sent as uncertain and a D-flagged 900 degC (stated good) every
        minute between them: the panel's first point below 1100 degC and the report's first excursion are the
        engine's reg_5min breach, at the same reading with the same mean."""
        from datetime import datetime
        from zoneinfo import ZoneInfo

        from simulators import Simulator, load_scenario

        scenario = load_scenario("sc01_scc_temp_drop_on_feed", PARK)
        decoder = Decoder(PARK)
        furnace = [r for m in Simulator(PARK, scenario, seed=1, start_ms=START).messages()
                   for r in decoder.decode(m.topic, m.payload, m.ts_ms).readings
                   if r.ref.key == "hw_center/scc/temp"]
        messages = [_message(r.ref, r.value, r.ts_ms, "uncertain" if i % 7 == 0 else None)
                    for i, r in enumerate(furnace)]
        ref = furnace[0].ref
        t_first, t_last = furnace[0].ts_ms, furnace[-1].ts_ms
        messages += [_message(ref, 900.0, t + 2_500, "good", "D") for t in range(t_first, t_last, 60_000)]
        messages.sort(key=lambda m: int(__import__("json").loads(m[1])["ts"]))
        readings = _decode_and_store(influx_db, PARK, messages)
        engine = Engine(PARK, clock=EventClock(), sites=[scenario.site])
        raised = [e for r in readings for e in engine.process(r) if e.rule == "reg_5min" and e.event == "raised"]
        assert raised, "sc01 raised no reg_5min: the scenario is its fixture"
        breach = raised[0]

        dash, panel = _panel(PARK, "hw_center", "5-min mean")
        points = _points(_run(influx_db, dash, panel, TimeRange(t_first, t_last)))
        first_below = next((t, v) for t, v in points if v < 1100)
        assert first_below[0] == breach.ts // 5000 * 5000
        assert math.isclose(first_below[1], breach.value, rel_tol=1e-9), (first_below, breach.value)

        day = datetime.fromtimestamp(t_first / 1000, ZoneInfo(PARK.park.timezone)).date()
        site = _report(influx_db, PARK, day, "hw_center").sites[0]
        temp = next(s for s in site.sensors if s.ref.key == "hw_center/scc/temp")
        assert temp.excursions and temp.excursions[0][0] == breach.ts
        assert math.isclose(temp.excursions[0][1], breach.value, rel_tol=1e-9)


PARK_MONTHLY = stack_park("{id: nox, name: NOx, unit: mg/m3, range: [0, 500], normal: [0, 80], interval_s: 300, "
                          'regulatory: [{limit: 40, averaging: monthly, source: "test"}]}')


class TestMonthlyMean:
    def test_the_engine_judges_the_reports_monthly_mean(self, influx_db: Any) -> None:
        """November with 27 valid days and 3 of only 15 valid hours (running high): the engine's reg_monthly is
        judged on the mean of the 27 valid days' means, the monthly report's mean; not on the month's hours."""
        from reports.compute import monthly_report
        from smartpark.config import Settings

        park = parse_park(PARK_MONTHLY, "park.yaml")
        ref = park.get("plant/stack/nox")
        first = 1_761_926_400_000  # 2025-11-01 00:00 Asia/Shanghai
        readings = []
        for d in range(30):
            short = d in (4, 11, 20)
            for h in range(15 if short else 24):
                level = 90.0 if short else 50.0 + d % 5 + h % 4
                t0 = first + (d * 24 + h) * 3_600_000
                readings += [Reading(ref, level, t0 + i * 300_000, "good") for i in range(12)]
        readings.append(Reading(ref, 30.0, first + 30 * 86_400_000 + 300_000, "good"))  # closes the month
        engine = Engine(park, clock=EventClock())
        judged = [e for r in readings for e in engine.process(r) if e.rule == "reg_monthly"]
        _write(influx_db, readings)

        async def go() -> Any:
            settings = Settings(influx_url=influx_db.url, influx_db=influx_db.db)
            async with InfluxClient(settings.influx(), timeout=60) as client:
                return await monthly_report(client, park, 2025, 11, "plant")

        total = asyncio.run(go()).sites[0].sensors[0].total
        assert total.valid and total.valid_count == 27 and total.mean is not None
        assert [e.event for e in judged] == ["raised"]
        assert math.isclose(judged[0].value, total.mean, rel_tol=1e-9)
        assert "27 valid days" in judged[0].message
