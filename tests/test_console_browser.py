"""The operator console in a real browser (Debian's Chromium through Playwright) against the real engine,
broker and InfluxDB: each role logs in, alarms arrive live, operator actions land in the audit trail with the
user's name, typed text renders as text. One browser process for the whole module."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alerts_helpers import PARK
from console_support import PASSWORD, RunningEngine
from services import Broker, InfluxDB, InfluxServer

CHROMIUM = os.environ.get("SMARTPARK_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

sync_api = pytest.importorskip("playwright.sync_api")
if not shutil.which(CHROMIUM):
    pytest.fail(f"the browser tests need Chromium at {CHROMIUM} (make test installs Debian's chromium)",
                pytrace=False)

TEMP_H = "plant/tank/temp/h"
FLOW_H = "other/pump/flow/h"


@pytest.fixture(scope="module")
def engine(shared_broker: Broker, influx_server: InfluxServer, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[RunningEngine]:
    db = influx_server.new_db("browser")
    try:
        with RunningEngine(shared_broker.url, db, tmp_path_factory.mktemp("browser"),
                           PARK) as eng:
            yield eng
    finally:
        db.drop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


def open_console(browser: Any, engine: RunningEngine, user: str, path: str = "/") -> Any:
    page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.goto(engine.url + path)
    page.fill("#login-user", user)
    page.fill("#login-password", PASSWORD)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#nav:not([hidden])")
    page.wait_for_selector("#live.on")
    return page


def row(page: Any, aid: str) -> str:
    return f'#active-table tr[data-id="{aid}"]'


def audit(engine: RunningEngine, event: str, aid: str) -> list[dict[str, Any]]:
    db: InfluxDB = engine.db
    site, asset, sensor, rule = aid.split("/")
    return db.query(f"SELECT * FROM alarm WHERE \"event\" = '{event}' AND site = '{site}' AND asset = '{asset}' "
                    f"AND sensor = '{sensor}' AND rule = '{rule}'")


def wait_audit(engine: RunningEngine, event: str, aid: str, n: int = 1) -> list[dict[str, Any]]:
    engine.wait_for(lambda: len(audit(engine, event, aid)) >= n)
    return audit(engine, event, aid)


class TestConsole:
    """What each role sees and does in the page, checked in the engine and in InfluxDB."""

    def test_each_role_logs_in(self, browser: Any, engine: RunningEngine) -> None:
        """Every role logs in; the page offers only the actions the role may do (the server enforces them)."""
        engine.publish("other/pump/flow", 90.0)
        engine.wait_for(lambda: engine.svc.engine.alarms[FLOW_H].state == "UNACK")  # type: ignore[union-attr]  # the service runs
        seen = {}
        for user, role in (("vera", "viewer"), ("otto", "operator"), ("sue", "supervisor"), ("ada", "admin")):
            page = open_console(browser, engine, user)
            assert page.inner_text("#who") == f"{user} ({role})"
            page.wait_for_selector(row(page, FLOW_H))
            buttons = page.eval_on_selector_all(f"{row(page, FLOW_H)} button", "els => els.map(e => e.className)")
            seen[role] = set(buttons)
            assert page.errors == []
            page.context.close()
        assert seen["viewer"] == set()
        assert seen["operator"] == {"act-ack", "act-shelve"}
        assert seen["supervisor"] == seen["admin"] == {"act-ack", "act-shelve", "act-oos"}

    def test_forged_posts_from_the_page_are_refused(self, browser: Any, engine: RunningEngine) -> None:
        """From a logged-in page: a viewer's POST with its valid CSRF token is 403; an operator's POST without
        the header is 403; the alarm stays unacknowledged."""
        engine.publish("other/pump/flow", 91.0)
        flow = engine.svc.engine.alarms[FLOW_H]  # type: ignore[union-attr]  # the service runs
        engine.wait_for(lambda: flow.state in ("UNACK", "SHLVD", "OOSRV", "ACKED"))
        before = flow.state
        post = """async ([path, header]) => { const h = {"Content-Type": "application/json"};
          if (header) h["X-CSRF-Token"] = S.session.csrf;
          const r = await fetch(path, {method: "POST", headers: h, body: "{}"}); return r.status; }"""
        viewer = open_console(browser, engine, "vera")
        assert viewer.evaluate(post, [f"/alarms/{FLOW_H}/ack", True]) == 403
        viewer.context.close()
        operator = open_console(browser, engine, "otto")
        assert operator.evaluate(post, [f"/alarms/{FLOW_H}/ack", False]) == 403
        operator.context.close()
        assert flow.state == before

    def test_wrong_password_shows_an_error(self, browser: Any, engine: RunningEngine) -> None:
        page = browser.new_page()
        page.goto(engine.url + "/")
        page.fill("#login-user", "otto")
        page.fill("#login-password", "not the password")
        page.click("#login-form button[type=submit]")
        page.wait_for_selector("#login-error:not(:empty)")
        assert page.is_visible("#login-view")
        page.context.close()

    def test_alarm_appears_without_reload_and_is_acknowledged(self, browser: Any, engine: RunningEngine) -> None:
        """A reading over the limit shows its alarm in an open console with no reload; the operator acknowledges
        it through the page with a comment, and the audit trail names the operator."""
        page = open_console(browser, engine, "otto")
        page.evaluate("window.__loaded = performance.timeOrigin")
        engine.publish("plant/tank/temp", 85.0)
        page.wait_for_selector(f"{row(page, TEMP_H)}.UNACK")
        assert page.evaluate("window.__loaded") is not None  # the same document: no reload happened
        assert "UNACK" in page.inner_text(row(page, TEMP_H))
        assert page.is_visible("#unacked-cue")
        page.click(f"{row(page, TEMP_H)} button.act-ack")
        page.fill("#act-comment", "checked the cooling water")
        page.click("#act-ok")
        page.wait_for_selector(f"{row(page, TEMP_H)}.ACKED")
        [point] = wait_audit(engine, "acked", TEMP_H)
        assert point["operator"] == "otto" and "checked the cooling water" in point["message"]
        assert page.errors == []
        page.context.close()

    def test_shelve_and_out_of_service(self, browser: Any, engine: RunningEngine) -> None:
        """An operator shelves with a reason (the page offers up to 8 h); a supervisor takes the alarm out of
        service and back; the shelved and out-of-service lists show who and why."""
        engine.publish("other/pump/flow", 90.0)
        op = open_console(browser, engine, "otto")
        op.wait_for_selector(row(op, FLOW_H))
        op.click(f"{row(op, FLOW_H)} button.act-shelve")
        options = op.eval_on_selector_all("#act-duration option", "els => els.map(e => Number(e.value))")
        assert max(options) == 8 * 3600
        op.select_option("#act-duration", str(2 * 3600))
        op.click("#act-ok")  # no reason: the dialog stays open
        assert op.is_visible("#act-dialog")
        op.fill("#act-comment", "pump swap in progress")
        op.click("#act-ok")
        op.wait_for_selector(row(op, FLOW_H), state="detached")
        [point] = wait_audit(engine, "shelved", FLOW_H)
        assert point["operator"] == "otto" and "pump swap in progress" in point["message"]
        op.click("#nav a[data-view=shelved]")
        op.wait_for_selector(f'#shelved-table tr[data-id="{FLOW_H}"] td:has-text("otto")')
        assert "pump swap in progress" in op.inner_text(f'#shelved-table tr[data-id="{FLOW_H}"]')
        op.context.close()

        sup = open_console(browser, engine, "sue", "/#/shelved")
        sup.wait_for_selector(f'#shelved-table tr[data-id="{FLOW_H}"] button.act-oos')
        sup.click(f'#shelved-table tr[data-id="{FLOW_H}"] button.act-oos')
        sup.fill("#act-comment", "instrument removed for calibration")
        sup.click("#act-ok")
        [point] = wait_audit(engine, "out_of_service", FLOW_H)
        assert point["operator"] == "sue"
        sup.click("#nav a[data-view=oos]")
        sup.wait_for_selector(f'#oos-table tr[data-id="{FLOW_H}"] td:has-text("calibration")')
        sup.click(f'#oos-table tr[data-id="{FLOW_H}"] button.act-ins')
        sup.click("#act-ok")
        [point] = wait_audit(engine, "in_service", FLOW_H)
        assert point["operator"] == "sue"
        assert sup.errors == []
        sup.context.close()

    def test_reconnect_catches_up(self, browser: Any, engine: RunningEngine) -> None:
        """A console whose stream dropped sees, once reconnected, the events it missed, without a reload."""
        page = open_console(browser, engine, "vera")
        page.evaluate("window.__loaded = 1")
        page.wait_for_function("() => S.lastId !== ''")
        page.evaluate("() => S.source.close()")  # the connection is gone (a network blip)
        engine.publish("plant/tank/level", 50.0)
        engine.publish("plant/tank/level", 92.0)  # raises h and hh while the console is away
        hh = engine.svc.engine.alarms["plant/tank/level/hh"]  # type: ignore[union-attr]  # the service runs
        engine.wait_for(lambda: hh.state == "UNACK")
        assert page.query_selector(row(page, "plant/tank/level/hh")) is None
        page.evaluate("() => connect()")
        page.wait_for_selector(f'{row(page, "plant/tank/level/hh")}.UNACK')
        assert page.evaluate("window.__loaded") == 1
        page.context.close()

    def test_script_in_a_comment_renders_as_text(self, browser: Any, engine: RunningEngine) -> None:
        """A comment with markup is shown literally in the alarm's history and runs nothing."""
        evil = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'
        engine.publish("plant/tank/temp", 50.0)
        engine.wait_for(lambda: engine.svc.engine.alarms[TEMP_H].state in ("NORM", "RTNUN"))  # type: ignore[union-attr]  # the service runs
        engine.publish("plant/tank/temp", 86.0)
        engine.wait_for(lambda: engine.svc.engine.alarms[TEMP_H].state == "UNACK")  # type: ignore[union-attr]  # the service runs
        status, _, _ = engine.call("POST", f"/alarms/{TEMP_H}/ack", {"comment": evil},
                                   headers={"Authorization": f"Bearer {engine.token}"})
        assert status == 200
        wait_audit(engine, "acked", TEMP_H, 2)
        page = open_console(browser, engine, "vera", f"/alarm/{TEMP_H}")  # a notification's link
        page.wait_for_selector("#detail-view:not([hidden]) #detail-events td.message")
        page.wait_for_selector("#trend svg")
        messages = page.eval_on_selector_all("#detail-events td.message", "els => els.map(e => e.textContent)")
        assert any(evil in m for m in messages)
        assert page.evaluate("window.__xss") is None
        assert page.eval_on_selector_all("#detail-events script, #detail-events img", "els => els.length") == 0
        # the trend carries the sensor's limit as a line and the alarm's events as marks
        assert page.eval_on_selector_all("#trend line.limit-h", "els => els.length") == 1
        assert page.eval_on_selector_all("#trend circle.mark-raised", "els => els.length") >= 1
        assert page.errors == []
        page.context.close()

    def test_history_handover_overview_and_language(self, browser: Any, engine: RunningEngine) -> None:
        """History finds events by operator and exports CSV; the handover lists the shift's actions and KPIs;
        the overview shows each sensor's latest value; the language switch shows the Chinese names."""
        wait_audit(engine, "acked", TEMP_H)
        page = open_console(browser, engine, "vera", "/#/history")
        page.fill("#h-operator", "otto")
        page.click("#history-form button[type=submit]")
        page.wait_for_selector("#history-table td.operator:has-text('otto')")
        ops = set(page.eval_on_selector_all("#history-table td.operator", "els => els.map(e => e.textContent)"))
        assert ops == {"otto"}
        href = page.get_attribute("#h-csv", "href")
        csv_text = page.evaluate("async (u) => (await fetch(u)).text()", href)
        assert csv_text.splitlines()[0].startswith("time,id,site") and ",otto," in csv_text
        page.click("#nav a[data-view=handover]")
        page.wait_for_selector("#handover h2")
        text = page.inner_text("#handover")
        assert "otto" in text and "alarms raised" in text
        page.click("#nav a[data-view=overview]")
        page.wait_for_selector('#overview .sensor[data-key="plant/tank/temp"]')
        assert "86" in page.inner_text('#overview .sensor[data-key="plant/tank/temp"]')
        assert page.eval_on_selector_all("#overview .sensor.stale", "els => els.length") >= 1  # never reported
        kpis = page.inner_text("#overview .overview-kpis")  # flood, chattering, stale with their definitions
        assert "more than 10 alarms at one site in 10 min" in kpis and "more than 24 h" in kpis
        page.click("#lang")
        page.wait_for_selector('#overview .sensor[data-key="plant/tank/level"]:has-text("液位")')
        assert page.inner_text("#nav a[data-view=handover]") == "交接班"
        assert page.errors == []
        page.context.close()

    def test_phone_viewport(self, browser: Any, engine: RunningEngine) -> None:
        """On a phone the alarm list stays usable: nothing wider than the screen but the scrolling table."""
        ctx = browser.new_context(viewport={"width": 390, "height": 800}, is_mobile=True, has_touch=True)
        page = ctx.new_page()
        page.goto(engine.url + "/")
        page.fill("#login-user", "otto")
        page.fill("#login-password", PASSWORD)
        page.click("#login-form button[type=submit]")
        page.wait_for_selector("#nav:not([hidden])")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 400
        ctx.close()


@pytest.mark.bench
def test_screenshots(browser: Any, shared_broker: Broker, influx_server: InfluxServer, tmp_path: Path) -> None:
    """Screenshots of the main pages for the README (``-m bench -k screenshots``): the bundled park with six
    hours of simulated history, a few alarms raised, one acknowledged, one shelved: docs/images/console-*.png."""
    import asyncio
    import time

    from simulators import backfill
    from smartpark.influx import InfluxClient
    from smartpark.park import load_park

    out = Path(__file__).resolve().parent.parent / "docs" / "images"
    out.mkdir(parents=True, exist_ok=True)
    park = load_park()
    db = influx_server.new_db("shots")
    now = int(time.time() * 1000)
    with RunningEngine(shared_broker.url, db, tmp_path / "state", park) as eng:
        async def history() -> None:
            async with InfluxClient(eng.settings.influx()) as client:
                await backfill(park, client, now - 6 * 3_600_000, now - 60_000, seed=7)
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1) as pool:  # the browser's own loop runs in this thread
            pool.submit(asyncio.run, history()).result()
        hot = [r for r in park if r.sensor.limits.hh is not None][:6]
        for i, ref in enumerate(hot):
            lim = ref.sensor.limits
            value = (lim.hh or 0) * 1.05 if i % 2 == 0 else ((lim.h or lim.hh or 0) + (lim.hh or 0)) / 2
            eng.publish(ref.key, round(value, 2))
        eng.wait_for(lambda: len(eng.svc.engine.active()) >= 6)  # type: ignore[union-attr]  # the service runs
        hdr = {"Authorization": f"Bearer {eng.token}"}
        first = eng.svc.engine.active()  # type: ignore[union-attr]  # the service runs
        eng.call("POST", f"/alarms/{first[-1]['id']}/ack", {"comment": "field operator sent"}, headers=hdr)
        eng.call("POST", f"/alarms/{first[-2]['id']}/shelve", {"comment": "analyser maintenance",
                                                               "duration_s": 7200}, headers=hdr)
        page = open_console(browser, eng, "sue")
        page.wait_for_selector("#active-table tbody tr")
        page.wait_for_timeout(500)
        page.screenshot(path=str(out / "console-active.png"))
        for view, name in (("overview", "overview"), ("handover", "handover")):
            page.click(f"#nav a[data-view={view}]")
            page.wait_for_timeout(1500)
            page.screenshot(path=str(out / f"console-{name}.png"))
        page.goto(eng.url + f"/#/alarm/{first[0]['id']}")
        page.wait_for_selector("#trend svg polyline")
        page.wait_for_timeout(500)
        page.screenshot(path=str(out / "console-detail.png"))
        page.context.close()
    db.drop()
