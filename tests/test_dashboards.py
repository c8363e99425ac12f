"""Dashboards generated from the park model: the committed JSON, thresholds from the limits, Grafana's macro
expansion, and ``dashboards push`` against a small fake of Grafana's HTTP API (Grafana cannot run here)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from cli import main
from dashboards import GENERATED_DIR, build_all, iter_panels, stale_files
from dashboards.build import sensor_thresholds, write_generated
from dashboards.cli import register  # noqa: F401  # the CLI module imports cleanly
from dashboards.macros import (
    TimeRange,
    calculate_interval_ms,
    expand,
    format_interval,
    format_variable,
    interval_to_ms,
    round_interval,
)
from dashboards.push import PushError, connect, folder_for, push
from smartpark.park import load_park, parse_park

SMALL_PARK = """
park: {id: small, name: Small park, name_zh: 小园区}
sites:
  - id: wwtp
    name: Wastewater treatment plant
    name_zh: 污水处理厂
    assets:
      - id: effluent
        name: Effluent
        name_zh: 总排口
        sensors:
          - {id: cod, name: Chemical oxygen demand, name_zh: 化学需氧量, unit: mg/L, range: [0, 500],
             normal: [15, 40], interval_s: 300, limits: {hh: 50, h: 40},
             regulatory: [{limit: 50, averaging: 24h, source: "GB 18918-2002 class 1A"},
                          {limit: 60, averaging: instant, source: local permit}]}
          - {id: ph, name: pH, unit: pH, range: [0, 14], normal: [6.5, 8.5], interval_s: 10,
             limits: {ll: 6, l: 6.5, h: 8.5, hh: 9},
             regulatory: [{limit: [6, 9], averaging: 1h, comparator: range, source: permit}]}
  - id: plant
    name: Plant
    assets:
      - id: boiler
        name: Boiler
        sensors:
          - {id: temp, name: Temperature, unit: degC, range: [0, 1500], normal: [1120, 1250], interval_s: 1,
             limits: {ll: 1100, l: 1120, h: 1250, hh: 1300},
             regulatory: [{limit: 1100, averaging: 5min, comparator: min, source: GB 18484-2020}]}
"""


@pytest.fixture(scope="module")
def small_park() -> Any:
    return parse_park(SMALL_PARK, "small.yaml")


def _steps(thresholds: dict[str, Any]) -> list[tuple[float | None, str]]:
    return [(s["value"], s["color"]) for s in thresholds["steps"]]


class TestGenerated:
    def test_committed_json_equals_a_fresh_build(self) -> None:
        """dashboards/generated/ is exactly what `smartpark dashboards build` writes from the bundled park."""
        assert stale_files(load_park()) == [], "run 'smartpark dashboards build' and commit the result"

    def test_build_check_cli_reports_stale_files(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`build --check` exits 1 on a stale directory and 0 once `build` has written it."""
        assert main(["dashboards", "build", "--check", "--out", str(tmp_path)]) == 1
        assert main(["dashboards", "build", "--out", str(tmp_path)]) == 0
        assert main(["dashboards", "build", "--check", "--out", str(tmp_path)]) == 0
        (tmp_path / "smartpark-extra.json").write_text("{}")
        assert main(["dashboards", "build", "--check", "--out", str(tmp_path)]) == 1

    def test_every_dashboard_has_stable_uid_schema_version_and_tags(self) -> None:
        """Uids are fixed and short, schemaVersion is current, every dashboard is tagged and has its file."""
        dashboards = build_all(load_park())
        uids = [d["uid"] for d in dashboards]
        assert len(set(uids)) == len(uids)
        assert {"smartpark-overview", "smartpark-alarms", "smartpark-collector", "smartpark-explorer",
                "smartpark-site-wwtp", "smartpark-site-energy_hub", "smartpark-site-hw_center"} == set(uids)
        for d in dashboards:
            assert len(d["uid"]) <= 40 and d["schemaVersion"] >= 39 and d["version"] >= 1
            assert "smartpark" in d["tags"]
            assert (GENERATED_DIR / f"{d['uid']}.json").exists()
            panel_ids = [p["id"] for p in d["panels"]]
            assert len(set(panel_ids)) == len(panel_ids)

    def test_every_target_is_raw_influxql_with_time_filter(self) -> None:
        """Panels query InfluxDB in raw InfluxQL, bounded by the dashboard's time range (a state at its end,
        such as stale alarms, by its end ``${__to}``)."""
        for d in build_all(load_park()):
            for p in iter_panels(d):
                assert p["targets"], f"{d['uid']}/{p['title']} has no query"
                for t in p["targets"]:
                    assert t["rawQuery"] is True and t["datasource"]["uid"] == "smartpark-influxdb"
                    assert "$timeFilter" in t["query"] or "time <= ${__to}ms" in t["query"], \
                        f"{d['uid']}/{p['title']}: {t['query']}"
                    if "GROUP BY time(" in t["query"] and p["type"] == "timeseries":
                        assert "fill(" in t["query"]


class TestFromTheParkModel:
    def test_site_dashboard_has_a_panel_per_sensor_grouped_by_asset(self, small_park: Any) -> None:
        """A row per asset, a bilingual panel per sensor in its unit, no emptier buckets than it reports."""
        dash = next(d for d in build_all(small_park) if d["uid"] == "smartpark-site-wwtp")
        assert dash["title"] == "污水处理厂 · Wastewater treatment plant"
        rows = [p["title"] for p in dash["panels"] if p["type"] == "row"]
        assert rows == ["总排口 · Effluent"]
        titles = [p["title"] for p in iter_panels(dash)]
        assert "化学需氧量 · Chemical oxygen demand" in titles and "pH" in titles
        cod = next(p for p in iter_panels(dash) if p["title"].startswith("化学需氧量 ·"))
        assert cod["fieldConfig"]["defaults"]["unit"] == "suffix: mg/L"
        assert cod["interval"] == "5m"  # the analyzer reports every 300 s: no emptier buckets than that
        assert "\"sensor\" = 'cod'" in cod["targets"][0]["query"]

    def test_limits_and_normal_band_become_threshold_steps(self, small_park: Any) -> None:
        """ll/hh red, l/h orange, the normal band green, between them transparent; lines and areas drawn."""
        cod = small_park.get("wwtp/effluent/cod").sensor
        assert _steps(sensor_thresholds(cod)) == [(None, "transparent"), (15.0, "green"), (40.0, "orange"),
                                                  (50.0, "red")]
        temp = small_park.get("plant/boiler/temp").sensor
        assert _steps(sensor_thresholds(temp)) == [(None, "red"), (1100.0, "orange"), (1120.0, "green"),
                                                   (1250.0, "orange"), (1300.0, "red")]

    def test_a_changed_limit_shows_in_the_next_build(self, small_park: Any) -> None:
        """The point of generating: change hh in the model, the threshold line moves."""
        changed = parse_park(SMALL_PARK.replace("limits: {hh: 50, h: 40}", "limits: {hh: 55, h: 40}"))
        before = json.dumps(build_all(small_park))
        after = json.dumps(build_all(changed))
        assert before != after and '"value": 55.0' in after and '"value": 55.0' not in before

    def test_regulatory_averages_are_plotted_against_their_legal_limit(self, small_park: Any) -> None:
        dashboards = {d["uid"]: d for d in build_all(small_park)}
        wwtp = list(iter_panels(dashboards["smartpark-site-wwtp"]))
        daily = next(p for p in wwtp if "daily mean" in p["title"])
        q = daily["targets"][0]["query"]
        assert "GROUP BY time(1d)" in q and "tz('Asia/Shanghai')" in q  # calendar days of the park
        assert _steps(daily["fieldConfig"]["defaults"]["thresholds"]) == [(None, "transparent"), (50.0, "red")]
        hourly_ph = next(p for p in wwtp if p["title"].startswith("pH") and "hourly" in p["title"])
        assert _steps(hourly_ph["fieldConfig"]["defaults"]["thresholds"]) == [(None, "red"), (6.0, "transparent"),
                                                                              (9.0, "red")]
        five = next(p for p in iter_panels(dashboards["smartpark-site-plant"]) if "5-min" in p["title"])
        assert "moving_average(sum(\"s\")" in five["targets"][0]["query"]  # rolling over valid sums, as the engine
        assert "GROUP BY time(5m)" not in five["targets"][0]["query"]  # not tumbling blocks
        assert _steps(five["fieldConfig"]["defaults"]["thresholds"]) == [(None, "red"), (1100.0, "transparent")]
        assert not any("instant" in p["title"] for p in wwtp)  # instant limits: description and alarm only
        cod = next(p for p in wwtp if p["title"].startswith("化学需氧量 ·"))
        assert "reg_instant max 60" in cod["description"]

    def test_no_value_is_rounded_onto_a_limit(self) -> None:
        """Every panel with limits shows one digit more than its limits, and values within half a step of a
        limit show as <limit or >limit: rendered as Grafana does, a value never reads as its limit."""
        from dashboards.build import near_limit_display

        def grafana_text(v: float, field: dict[str, Any]) -> str:
            for m in field.get("mappings", []):
                o = m["options"]
                if m["type"] == "range" and o["from"] <= v <= o["to"]:
                    return str(o["result"]["text"])
            return f"{v:.{field['decimals']}f}"

        hw = next(d for d in build_all(load_park()) if d["uid"] == "smartpark-site-hw_center")
        five = next(p for p in iter_panels(hw) if "5-min mean" in p["title"])
        field = five["fieldConfig"]["defaults"]
        assert field["decimals"] == 1
        for v in (1099.96, 1099.951, 1099.99999, 1100.04, 1099.94, 1100.0):
            text = grafana_text(v, field)
            if v == 1100.0:
                assert text == "1100.0"
            elif text.startswith(("<", ">")):
                assert (text[0] == "<") == (v < 1100) and float(text[1:]) == 1100
            else:
                assert (float(text) < 1100) == (v < 1100) and float(text) != 1100, (v, text)
        assert grafana_text(1099.96, field) == "<1100.0"  # what "1100.0" would have hidden
        assert near_limit_display([0.5, 50])[0] == 2  # the most precise limit decides
        for d in build_all(load_park()):
            for p in iter_panels(d):
                steps = p.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {}).get("steps", [])
                if p["type"] in ("timeseries", "stat") and any(st.get("value") is not None for st in steps) \
                        and "reading" in json.dumps(p.get("targets")):
                    assert "decimals" in p["fieldConfig"]["defaults"], (d["uid"], p["title"])

    def test_alarm_events_are_annotations_of_the_site(self, small_park: Any) -> None:
        dash = next(d for d in build_all(small_park) if d["uid"] == "smartpark-site-wwtp")
        influx = [a for a in dash["annotations"]["list"] if a["datasource"]["type"] == "influxdb"]
        assert {a["iconColor"] for a in influx} >= {"red", "orange"}
        for a in influx:
            assert "FROM \"alarm\"" in a["query"] and "\"site\" = 'wwtp'" in a["query"] and "$timeFilter" in a["query"]

    def test_overview_has_a_tile_per_asset_and_skips_key_figures_the_park_lacks(self, small_park: Any) -> None:
        overview = build_all(small_park)[0]
        titles = [p["title"] for p in iter_panels(overview)]
        assert "总排口 · Effluent" in titles and "Boiler" in titles
        assert "出水COD · Effluent COD" in titles  # wwtp/effluent/cod exists in the small park
        assert not any("steam header" in t for t in titles)

    def test_alarms_and_explorer_use_template_variables(self) -> None:
        dashboards = {d["uid"]: d for d in build_all(load_park())}
        names = [v["name"] for v in dashboards["smartpark-explorer"]["templating"]["list"]]
        assert names == ["site", "asset", "sensor"]
        q = dashboards["smartpark-explorer"]["panels"][0]["targets"][0]["query"]
        assert '"site" =~ /^$site$/' in q and "$__interval" in q


class TestMacros:
    @pytest.mark.parametrize(("raw_ms", "rounded"), [
        (9, 1), (14, 10), (1499, 1000), (1500, 2000), (7499, 5000), (12_499, 10_000), (44_999, 30_000),
        (172_800, 120_000), (449_999, 300_000), (86_399_999, 43_200_000), (86_400_000, 86_400_000),
        (700_000_000, 604_800_000), (5_000_000_000, 31_536_000_000),
    ])
    def test_round_interval_is_grafanas_table(self, raw_ms: float, rounded: int) -> None:
        assert round_interval(raw_ms) == rounded

    def test_interval_of_a_24h_panel(self) -> None:
        """24 h over 500 points is 172.8 s, rounded to 2 m; the data source's 10 s and a panel's 5 m are floors."""
        tr = TimeRange.last(86400, 1_764_201_600_000)
        assert calculate_interval_ms(tr, 500, "10s") == 120_000
        assert calculate_interval_ms(tr, 500, "5m") == 300_000
        assert calculate_interval_ms(TimeRange.last(3600, 0), 500, "10s") == 10_000  # 7.2 s -> 5 s -> floor 10 s
        assert calculate_interval_ms(tr, None, None) == 60_000  # Grafana's default resolution of 1500

    def test_interval_text_and_parsing(self) -> None:
        """Intervals print as Grafana prints them and parse as Grafana parses them."""
        assert [format_interval(ms) for ms in (500, 10_000, 90_000, 120_000, 3_600_000, 86_400_000)] == \
            ["500ms", "10s", "1m", "2m", "1h", "1d"]
        assert interval_to_ms(">10s") == 10_000 and interval_to_ms("30") == 30_000 and interval_to_ms("1h") == 3_600_000
        with pytest.raises(ValueError):
            interval_to_ms("often")

    def test_expand_like_grafanas_backend(self) -> None:
        tr = TimeRange(1_700_000_000_000, 1_700_086_400_000)
        q = ('SELECT mean("value") FROM "reading" WHERE "site" =~ /^$site$/ AND $timeFilter '
             "GROUP BY time($__interval) fill(null) -- $__interval_ms $interval")
        out = expand(q, tr, 120_000, {"site": format_variable(["wwtp", "hw_center"], multi=True)})
        assert out == ('SELECT mean("value") FROM "reading" WHERE "site" =~ /^(wwtp|hw_center)$/ AND '
                       "time >= 1700000000000ms and time <= 1700086400000ms GROUP BY time(2m) fill(null) -- 120000 2m")

    def test_variables_are_regex_escaped_when_multi(self) -> None:
        """Multi-value variables become regex alternations of escaped values; single ones stay literal."""
        assert format_variable(["a.b"], multi=True) == r"a\.b"
        assert format_variable(["a.b"], multi=False) == "a.b"
        assert format_variable(["x", "y/z"], multi=True) == r"(x|y\/z)"


# --------------------------------------------------------------------------------------------------
# push: a fake of the few Grafana endpoints grafana-client calls (Grafana itself cannot run here)


class FakeGrafana:
    def __init__(self) -> None:
        self.folders: dict[str, dict[str, Any]] = {}
        self.dashboards: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []
        self.auth: set[str] = set()

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/api/folders/{uid}", self.get_folder)
        app.router.add_post("/api/folders", self.create_folder)
        app.router.add_put("/api/folders/{uid}", self.update_folder)
        app.router.add_post("/api/dashboards/db", self.save_dashboard)
        return app

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.calls.append(f"{request.method} {request.path}")
        self.auth.add(request.headers.get("Authorization", ""))
        if request.headers.get("Authorization") != "Bearer glsa_test":
            return web.json_response({"message": "Unauthorized"}, status=401)
        return await handler(request)

    async def get_folder(self, request: web.Request) -> web.Response:
        uid = request.match_info["uid"]
        if uid not in self.folders:
            return web.json_response({"message": "folder not found"}, status=404)
        return web.json_response(self.folders[uid])

    async def create_folder(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body["uid"] in self.folders:
            return web.json_response({"message": "a folder with the same uid already exists"}, status=409)
        self.folders[body["uid"]] = {"uid": body["uid"], "title": body["title"], "version": 1}
        return web.json_response(self.folders[body["uid"]])

    async def update_folder(self, request: web.Request) -> web.Response:
        body = await request.json()
        folder = self.folders[request.match_info["uid"]]
        folder.update(title=body["title"], version=folder["version"] + 1)
        return web.json_response(folder)

    async def save_dashboard(self, request: web.Request) -> web.Response:
        body = await request.json()
        dash = body["dashboard"]
        if body.get("folderUid") not in self.folders:
            return web.json_response({"message": "folder not found"}, status=400)
        old = self.dashboards.get(dash["uid"])
        if old is not None and not body.get("overwrite"):
            return web.json_response({"message": "version-mismatch", "status": "version-mismatch"}, status=412)
        version = (old["version"] + 1) if old else 1
        self.dashboards[dash["uid"]] = {"dashboard": dash, "folderUid": body["folderUid"], "version": version}
        return web.json_response({"id": len(self.dashboards), "uid": dash["uid"], "status": "success",
                                  "version": version, "url": f"/d/{dash['uid']}"})


def with_fake_grafana(test: Callable[[FakeGrafana, str], Awaitable[None]]) -> FakeGrafana:
    """Run ``test(fake, url)`` with the fake Grafana listening on a free loopback port."""
    fake = FakeGrafana()

    async def run() -> None:
        runner = web.AppRunner(fake.app())
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # started above
        try:
            await test(fake, f"http://127.0.0.1:{port}")
        finally:
            await runner.cleanup()

    asyncio.run(run())
    return fake


class TestPush:
    def test_push_twice(self) -> None:
        """First push: a folder per site (and one for the park), every dashboard saved by uid in its folder;
        second push: the same dashboards overwritten (same uids, nothing duplicated), no folder created."""
        park = load_park()
        dashboards = build_all(park)

        async def check(fake: FakeGrafana, url: str) -> None:
            api = connect(url, "glsa_test")
            first = await push(api, park, dashboards)
            assert set(fake.folders) == {"smartpark", "smartpark-wwtp", "smartpark-energy_hub",
                                         "smartpark-hw_center"}
            assert fake.folders["smartpark-wwtp"]["title"] == \
                "化工园区集中污水处理厂 · Chemical park centralized wastewater treatment plant"
            assert set(fake.dashboards) == {d["uid"] for d in dashboards}
            assert fake.dashboards["smartpark-site-wwtp"]["folderUid"] == "smartpark-wwtp"
            assert fake.dashboards["smartpark-alarms"]["folderUid"] == "smartpark"
            assert fake.dashboards["smartpark-site-wwtp"]["dashboard"]["panels"] == dashboards[1]["panels"]
            assert len(first.folders_created) == 4
            second = await push(api, park, dashboards)
            assert second.folders_created == [] and second.folders_updated == []
            assert len(fake.dashboards) == len(dashboards)
            assert all(v["version"] == 2 for v in fake.dashboards.values())

        fake = with_fake_grafana(check)
        assert fake.auth == {"Bearer glsa_test"}

    def test_renamed_site_renames_its_folder(self) -> None:
        """A folder whose title no longer matches the site's name is renamed in place (same uid)."""
        async def check(fake: FakeGrafana, url: str) -> None:
            fake.folders["smartpark-wwtp"] = {"uid": "smartpark-wwtp", "title": "old name", "version": 3}
            report = await push(connect(url, "glsa_test"), load_park(), build_all(load_park()))
            assert report.folders_updated == ["smartpark-wwtp"]
            assert fake.folders["smartpark-wwtp"]["title"].startswith("化工园区集中污水处理厂")

        with_fake_grafana(check)

    def test_a_wrong_token_is_an_error_with_the_status(self) -> None:
        async def check(fake: FakeGrafana, url: str) -> None:
            with pytest.raises(PushError) as err:
                await push(connect(url, "wrong"), load_park(), build_all(load_park()))
            assert err.value.status == 401
            assert fake.dashboards == {}

        with_fake_grafana(check)

    def test_push_command_uses_the_token_from_the_environment(self, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
        """`smartpark dashboards push` end to end (in a thread: the CLI runs its own event loop)."""
        monkeypatch.setenv("GRAFANA_TOKEN", "glsa_test")

        async def check(fake: FakeGrafana, url: str) -> None:
            rc = await asyncio.to_thread(main, ["dashboards", "push", "--grafana-url", url])
            assert rc == 0
            assert len(fake.dashboards) == len(build_all(load_park()))

        with_fake_grafana(check)
        assert "pushed 7 dashboards" in capsys.readouterr().out

    def test_no_url_or_no_token_is_a_configuration_error(self, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
        """No default credentials: without GRAFANA_TOKEN the command exits 2 with one line."""
        monkeypatch.delenv("GRAFANA_TOKEN", raising=False)
        assert main(["dashboards", "push", "--grafana-url", "http://127.0.0.1:9"]) == 2
        assert "GRAFANA_TOKEN" in capsys.readouterr().err
        monkeypatch.setenv("GRAFANA_TOKEN", "x")
        monkeypatch.delenv("GRAFANA_URL", raising=False)
        assert main(["dashboards", "push", "--grafana-url", ""]) == 2

    def test_folder_of_each_dashboard(self) -> None:
        """Site dashboards go to their site's folder, the others to the park's."""
        assert folder_for({"uid": "smartpark-site-wwtp", "tags": ["smartpark", "site", "wwtp"]}) == "smartpark-wwtp"
        assert folder_for({"uid": "smartpark-overview", "tags": ["smartpark"]}) == "smartpark"


def test_write_generated_removes_dashboards_that_no_longer_exist(tmp_path: Path, small_park: Any) -> None:
    """A site removed from the model loses its file at the next build."""
    (tmp_path / "smartpark-site-gone.json").write_text("{}")
    write_generated(small_park, tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.json")) == sorted(
        f"{d['uid']}.json" for d in build_all(small_park))
