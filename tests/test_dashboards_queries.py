"""Every panel of every generated dashboard, run as Grafana would run it, against a real InfluxDB holding
24 h of simulated history, alarm events from the real alert engine and points from the real collector.

The data, made once for the module:

- ``reading``: ``simulators.backfill`` of the whole park for the last 24 h (about 3 million points); two hours
  in, scenario sc03 (steam header collapse after a gas-turbine trip: an alarm flood), and the last 17 h are
  scenario sc02 (COD shock at the wastewater plant: alarms still active at the end);
- ``alarm``: ``alerts.Engine`` run over both scenarios' readings (decoded by ``smartpark.decode.Decoder``), its
  events written with ``AlarmEvent.to_line`` (what ``AlertService`` writes); in sc02 an operator
  acknowledges the first alarm and shelves one still active at the end;
- ``dead_letter``, ``collector`` and live ``reading`` points: the real ``collector.Collector`` fed for about
  12 s by ``simulators.publish`` with a live simulated feed plus garbage (bad JSON, unknown sensor, bad value,
  out-of-range value, bad timestamp).

Each panel is a test of its own, named ``<dashboard uid>/<panel title>``: its queries, with ``$timeFilter``,
``$__interval`` and the template variables expanded as Grafana expands them over the dashboard's default
time range, must run without error and return data. One exception, stated in the test: a stat that counts
rows a condition keeps from a subquery (chattering alarms) has no row when the count is zero, which Grafana
shows as the panel's ``noValue`` "0"; for it the subquery must return data.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dashboards import build_all, iter_panels, resolve_variables, run_panel
from dashboards.build import bilingual
from dashboards.macros import TimeRange, interval_to_ms
from dashboards.preview import render_previews
from dashboards.query import PanelResult, annotation_queries
from devstack import Stack, free_port
from smartpark.config import Settings
from smartpark.decode import Decoder
from smartpark.influx import InfluxClient
from smartpark.park import load_park

SCENARIO = "sc02_wwtp_cod_shock"  # the last 17 h: alarms that stay active, acknowledged, shelved
FLOOD = "sc03_steam_header_collapse_gt_trip"  # early in the day: 11 alarms within 250 s, an alarm flood
DAY_MS = 86_400_000
PARK = load_park()
DASHBOARDS = build_all(PARK)
PANELS = [(d, p) for d in DASHBOARDS for p in iter_panels(d)]


@dataclass
class Loaded:
    url: str
    db: str
    end_ms: int  # wall-clock time after the last write: "now" for the panels' time ranges
    alarm_events: list[Any]
    collector_counters: dict[str, int]
    tmp: Path

    def settings(self) -> Settings:
        return Settings(influx_url=self.url, influx_db=self.db)

    def time_range(self, dash: dict[str, Any]) -> TimeRange:
        """The dashboard's default range (``now-24h`` .. ``now``) resolved at the end of the load."""
        span = interval_to_ms(dash["time"]["from"].removeprefix("now-"))
        return TimeRange(self.end_ms - span, self.end_ms)


def _garbage(now_ms: int) -> list[Any]:
    from simulators import Message

    return [
        Message(now_ms, "park/wwtp/effluent/cod", b"{not json"),
        Message(now_ms, "park/wwtp/effluent/nope", b'{"value": 1}'),
        Message(now_ms, "park/wwtp/effluent/cod", b'{"value": "high"}'),
        Message(now_ms, "park/wwtp/effluent/cod", json.dumps({"value": 9999.0, "ts": now_ms}).encode()),
        Message(now_ms, "park/wwtp/effluent/cod", b'{"value": 30.0, "ts": 1700000000}'),
    ]


async def _alarm_events(client: InfluxClient, name: str, start_ms: int, *, operate: bool) -> list[Any]:
    """Run the real alert engine over a scenario's readings and write its events as AlertService does;
    ``operate``: an operator acknowledges the first alarm and shelves one left active at the end."""
    from alerts import Engine, EventClock
    from simulators import Simulator, load_scenario

    scenario = load_scenario(name, PARK)
    engine = Engine(PARK, clock=EventClock(), sites=[scenario.site])
    decoder = Decoder(PARK)
    events: list[Any] = []
    acked = False
    last_ts = start_ms
    for m in Simulator(PARK, scenario, seed=1, start_ms=start_ms).messages():
        for r in decoder.decode(m.topic, m.payload, m.ts_ms).readings:
            new = engine.process(r)
            events.extend(new)
            for ev in new:  # an operator at work: acknowledges the first alarm
                if ev.event == "raised" and operate and not acked:
                    events.append(engine.ack(ev.id, "op_li", "seen, calling the upstream plant", ev.ts + 60_000))
                    acked = True
        if m.ts_ms // 60_000 != last_ts // 60_000:
            events.extend(engine.tick(m.ts_ms))
        last_ts = m.ts_ms
    assert any(e.event == "raised" for e in events), "the scenario raised no alarm"
    if operate:  # ... and, at the end, shelves one alarm that is still active
        active = [a["id"] for a in engine.active() if a["state"] in ("UNACK", "ACKED")]
        assert active, "no alarm left active at the end of the scenario"
        events.append(engine.shelve(active[-1], "op_li", "known, diverting to the pool", 3600, last_ts + 1000))
    lines = [e.to_line() for e in events]
    for i in range(0, len(lines), 5000):
        await client.write(lines[i:i + 5000], precision="ns")
    return events


async def _collector_run(settings: Settings, mqtt_url: str, seconds: float) -> dict[str, int]:
    """The real collector, fed a live simulated feed (and garbage) for ``seconds``, then stopped cleanly."""
    from collector import Collector
    from simulators import Simulator, publish

    collector = Collector(settings, PARK, instance="dash-test", flush_interval=0.5)
    stop = asyncio.Event()
    task = asyncio.create_task(collector.run(stop), name="collector")
    async with asyncio.timeout(20):  # subscribed before anything is published: nothing may be missed
        while collector.source is None:  # noqa: ASYNC110  # set by run() once its resources are open
            await asyncio.sleep(0.01)
        await collector.source.connected.wait()
    now = int(time.time() * 1000)
    feed = list(Simulator(PARK, seed=2, start_ms=now, sites=["wwtp", "hw_center"]).messages(seconds))
    try:
        await publish(_garbage(now), mqtt_url, speed=0)
        await publish(feed, mqtt_url, speed=1.0)
        await publish(_garbage(int(time.time() * 1000)), mqtt_url, speed=0)
        async with asyncio.timeout(30):  # polls an outcome; no time has to pass
            while collector.counters.received < len(feed) + 10:  # noqa: ASYNC110  # counters have no event
                await asyncio.sleep(0.1)
    finally:
        stop.set()  # the collector flushes what it holds, then returns
        await task
    return dataclasses.asdict(collector.counters)


@pytest.fixture(scope="module")
def loaded(influx_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    from simulators import backfill, load_scenario

    db = influx_server.new_db("dash")
    tmp = tmp_path_factory.mktemp("dash_queries")
    broker = Stack(tmp / "stack", mqtt_port=free_port(), influx_port=0)
    broker.start_mosquitto()
    settings = Settings(mqtt_url=broker.mqtt_url, influx_url=influx_server.url, influx_db=db.db,
                        state_dir=str(tmp / "state"))
    scenario = load_scenario(SCENARIO, PARK)
    now = int(time.time() * 1000) // 1000 * 1000
    run_ms = int(scenario.run_s * 1000)
    sites = [s.id for s in PARK.sites]

    flood = load_scenario(FLOOD, PARK)
    flood_t0 = (now - DAY_MS + 2 * 3_600_000) // 600_000 * 600_000  # on a 10-min boundary: one flood window
    flood_start = flood_t0 - int(flood.warmup_s * 1000)
    flood_end = flood_start + int(flood.run_s * 1000)

    async def load() -> tuple[list[Any], dict[str, int]]:
        async with InfluxClient(settings.influx(), timeout=60) as client:
            for a, b, sc in ((now - DAY_MS, flood_start, None), (flood_start, flood_end, flood),
                             (flood_end, now - run_ms, None), (now - run_ms, now, scenario)):
                await backfill(PARK, client, a, b, seed=1, scenario=sc, sites=sites, batch_lines=20_000)
            events = await _alarm_events(client, FLOOD, flood_start, operate=False)
            events += await _alarm_events(client, SCENARIO, now - run_ms, operate=True)
        counters = await _collector_run(settings, broker.mqtt_url, 12.0)
        return events, counters

    try:
        events, counters = asyncio.run(load())
        yield Loaded(influx_server.url, db.db, int(time.time() * 1000) + 1000, events, counters, tmp)
    finally:
        broker.stop_mosquitto()
        db.drop()


def _run(loaded: Loaded, dash: dict[str, Any], panel: dict[str, Any]) -> PanelResult:
    async def go() -> PanelResult:
        async with InfluxClient(loaded.settings().influx(), timeout=60) as client:
            tr = loaded.time_range(dash)
            return await run_panel(client, dash["uid"], panel, tr, await resolve_variables(dash, client, tr))

    return asyncio.run(go())


class TestLoadedData:
    def test_the_history_is_there(self, loaded: Loaded, influx_server: Any) -> None:
        """24 h of readings for every sensor, alarm events of the engine, dead letters and collector counters."""
        from services import InfluxDB

        db = InfluxDB(loaded.url, loaded.db)
        assert db.count("reading", "value") > 2_000_000
        sensors = db.query('SHOW TAG VALUES FROM "reading" WITH KEY = "sensor"')
        assert len({r["value"] for r in sensors}) >= 50
        assert db.count("alarm", "state") == len(loaded.alarm_events)
        assert {r["reason"] for r in db.query('SELECT count("topic") FROM "dead_letter" GROUP BY "reason"')} == \
            {"bad_json", "unknown_sensor", "bad_value", "out_of_range", "bad_ts"}
        assert db.count("collector", "received") >= 2
        assert loaded.collector_counters["invalid"] >= 8


@pytest.mark.parametrize(("dash", "panel"), PANELS, ids=[f"{d['uid']}/{p['title']}" for d, p in PANELS])
def test_panel_returns_data(loaded: Loaded, dash: dict[str, Any], panel: dict[str, Any]) -> None:
    """The panel's InfluxQL, expanded as Grafana does, runs without error and returns data."""
    res = _run(loaded, dash, panel)
    for ref_id, q in res.queries.items():
        assert not re.search(r"\$(\{|[A-Za-z_])", q), f"unexpanded macro or variable in {ref_id}: {q}"
    if not res.has_data and "noValue" in panel["fieldConfig"]["defaults"]:
        # A count of rows that a condition filters out of a subquery (alarm floods, chattering): no row is the
        # healthy answer, shown as the panel's noValue ("0"). The subquery itself must still have data.
        from services import InfluxDB

        db = InfluxDB(loaded.url, loaded.db)
        inner = [_subquery(q) for q in res.queries.values()]
        assert all(inner), f"{panel['title']}: no data and no subquery to check"
        assert all(db.query(q) for q in inner if q), f"{panel['title']}: its subquery returns no data: {inner}"
        return
    assert res.has_data, f"{dash['uid']} / {panel['title']}: no data from\n" + "\n".join(res.queries.values())


def _subquery(q: str) -> str | None:
    """The text of the first ``FROM (...)`` subquery of an InfluxQL statement."""
    start = q.find("FROM (")
    if start < 0:
        return None
    depth, i = 0, start + 5
    for j in range(i, len(q)):
        depth += {"(": 1, ")": -1}.get(q[j], 0)
        if depth == 0:
            return q[i + 1:j]
    return None


@pytest.mark.parametrize("dash", [d for d in DASHBOARDS if len(d["annotations"]["list"]) > 1],
                         ids=lambda d: d["uid"])
def test_annotations_run(loaded: Loaded, dash: dict[str, Any]) -> None:
    """The alarm annotations' queries run; on the wastewater plant's dashboard they return the scenario's alarms."""
    from services import InfluxDB

    db = InfluxDB(loaded.url, loaded.db)
    queries = annotation_queries(dash, loaded.time_range(dash), {})
    rows = {name: db.query(q) for name, q in queries.items()}
    if dash["uid"] in ("smartpark-site-wwtp", "smartpark-overview"):
        raised = [r for name, rs in rows.items() if "raised" in name for r in rs]
        assert {r["sensor"] for r in raised} >= {"cod", "nh3n"}
        assert all(r["message"] for r in raised)


def test_tiles_show_the_active_alarms_of_their_asset(loaded: Loaded) -> None:
    """The overview tile of the wastewater effluent counts what the engine left active there."""
    overview = DASHBOARDS[0]
    effluent = PARK.asset("wwtp", "effluent")
    assert effluent is not None
    tile = next(p for p in iter_panels(overview) if p["title"] == bilingual(effluent.name_zh, effluent.name))
    res = _run(loaded, overview, tile)
    last: dict[str, Any] = {}
    for e in loaded.alarm_events:
        if e.asset == "effluent":
            last[e.id] = e
    active = [e for e in last.values() if e.state in ("UNACK", "ACKED", "RTNUN")]
    counts = {s.name: s.values[0][1] for s in res.series if s.ref_id == "A"}
    assert sum(counts.values()) == len(active) > 0
    assert {e.priority for e in active} == set(counts)


@pytest.mark.ci
def test_preview_renders_every_dashboard(loaded: Loaded) -> None:
    """`dashboards preview` draws one PNG per dashboard from the same queries; wwtp's goes to the README."""
    out = loaded.tmp / "previews"

    async def go() -> list[Path]:
        async with InfluxClient(loaded.settings().influx(), timeout=60) as client:
            paths = []
            for dash in DASHBOARDS:
                paths += await render_previews(client, [dash], loaded.time_range(dash), out)
            return paths

    paths = asyncio.run(go())
    assert sorted(p.name for p in paths) == sorted(f"{d['uid']}.png" for d in DASHBOARDS)
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 20_000, p


def test_preview_command(loaded: Loaded, capsys: pytest.CaptureFixture[str]) -> None:
    """`smartpark dashboards preview --until ... --dashboard UID` writes that dashboard's PNG and names it."""
    from cli import main

    out = loaded.tmp / "cli-previews"
    rc = main(["--influx-url", loaded.url, "--influx-db", loaded.db, "dashboards", "preview", "--out", str(out),
               "--since", "6h", "--until", str(loaded.end_ms), "--dashboard", "smartpark-alarms"])
    assert rc == 0
    assert capsys.readouterr().out.strip() == str(out / "smartpark-alarms.png")
    assert (out / "smartpark-alarms.png").stat().st_size > 20_000


def test_active_list_is_the_engines(loaded: Loaded) -> None:
    """The alarms dashboard's active list holds exactly the alarms whose last event left them not normal
    (UNACK, ACKED, RTNUN or SHLVD), with that event's message."""
    alarms = next(d for d in DASHBOARDS if d["uid"] == "smartpark-alarms")
    panel = next(p for p in iter_panels(alarms) if p["title"] == "活动报警列表 · Active alarms")
    res = _run(loaded, alarms, panel)
    last: dict[str, Any] = {}
    for e in loaded.alarm_events:
        last[e.id] = e
    expected = {i: e for i, e in last.items() if e.state in ("UNACK", "ACKED", "RTNUN", "SHLVD")}
    shown = {"/".join(s.tags[k] for k in ("site", "asset", "sensor", "rule")): s for s in res.series}
    assert set(shown) == set(expected)
    for alarm_id, s in shown.items():
        row = dict(zip(s.columns, s.values[0], strict=True))
        assert (row["state"], row["message"]) == (expected[alarm_id].state, expected[alarm_id].message)
    assert "SHLVD" in {e.state for e in expected.values()}


def test_flood_kpi_counts_the_flood(loaded: Loaded) -> None:
    """The steam-header collapse raises more than 10 alarms in one 10-minute window: one flood window."""
    alarms = next(d for d in DASHBOARDS if d["uid"] == "smartpark-alarms")
    panel = next(p for p in iter_panels(alarms) if p["title"] == "报警泛滥时段 · 10-min windows in flood")
    res = _run(loaded, alarms, panel)
    assert [row[1] for s in res.series for row in s.values] == [1]
