"""One definition of each alarm-system KPI (ISA-18.2 / EEMUA 191): flood, chattering, stale.

``alerts report`` (and the console, through the same function) computes them in Python over alarm events;
the alarms dashboard's panels compute them in InfluxQL. Both come from :mod:`smartpark.kpis`; the tests here
hold the definitions to the standard's wording and the two computations to the same answers on the same events
in a real InfluxDB.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from services import InfluxDB

from alerts.events import AlarmEvent
from alerts.report import alarm_query, kpis
from dashboards import build_all, iter_panels, run_panel
from dashboards.macros import TimeRange
from smartpark import kpis as K
from smartpark.config import Settings
from smartpark.influx import InfluxClient
from smartpark.park import load_park

T0 = 1_772_416_800_000  # on a 10-minute boundary
MIN, HOUR = 60_000, 3_600_000
W = K.FLOOD_WINDOW_MS


def raised(t: int, site: str = "wwtp", sensor: str = "cod", rule: str = "hh", asset: str = "a",
           event: str = "raised", state: str = "UNACK") -> dict[str, Any]:
    return {"time": t, "site": site, "asset": asset, "sensor": sensor, "rule": rule, "priority": "high",
            "event": event, "state": state}


class TestDefinitions:
    """The thresholds as the standard words them, on the boundaries."""

    def test_flood_is_more_than_ten_in_one_period_at_one_site(self) -> None:
        """11 alarms in one 10-minute period at one site are a flood; 10 are not."""
        ten = [raised(T0 + i * 1000, sensor=f"s{i}") for i in range(10)]
        assert K.flood_windows(ten, T0, T0 + W) == []
        eleven = [*ten, raised(T0 + W - 1, sensor="s10")]
        assert K.flood_windows(eleven, T0, T0 + W) == [("wwtp", T0)]

    def test_flood_counts_per_operator_position(self) -> None:
        """Six alarms at each of two sites in one period: no site is flooded."""
        rows = [raised(T0 + i * 1000, site=site, sensor=f"s{i}") for site in ("wwtp", "boiler") for i in range(6)]
        assert K.flood_windows(rows, T0, T0 + W) == []
        assert K.summary(rows, T0, T0 + W)["per_10min_peak"] == 6

    def test_flood_periods_are_the_clocks(self) -> None:
        """Twelve alarms split 6 + 6 by a 10-minute boundary fill no period beyond 10."""
        rows = [raised(T0 + W - 6 * 1000 + i * 1000, sensor=f"s{i}") for i in range(12)]
        assert K.flood_windows(rows, T0, T0 + 2 * W) == []

    def test_time_in_flood(self) -> None:
        """One flooded period of the day's 144 is 0.69 %."""
        rows = [raised(T0 + i * 1000, sensor=f"s{i}") for i in range(11)]
        assert K.flood_time_pct(rows, T0, T0 + 144 * W) == round(100 / 144, 2)

    @pytest.mark.parametrize(("gaps_s", "chatters"), [((30, 30), True), ((30, 30.001), False),
                                                      ((59, 1), True), ((61,), False), ((40, 40, 15), True)])
    def test_chattering_is_three_raises_within_a_minute(self, gaps_s: tuple[float, ...], chatters: bool) -> None:
        """Any three consecutive raises of one alarm at most 60 s apart, first to last (a sliding window)."""
        t, rows = T0 + 30_000, [raised(T0 + 30_000)]
        for g in gaps_s:
            t += int(g * 1000)
            rows.append(raised(t))
        assert K.chattering(rows, T0, T0 + HOUR) == (["wwtp/a/cod/hh"] if chatters else [])

    def test_chattering_is_per_alarm(self) -> None:
        """The same sensor and rule at two sites are two alarms."""
        rows = [raised(T0 + i * 10_000, site=site) for site in ("wwtp", "boiler") for i in range(2)]
        assert K.chattering(rows, T0, T0 + HOUR) == []

    @pytest.mark.parametrize(("events", "stale"), [
        ([("raised", "UNACK", -25)], True),
        ([("raised", "UNACK", -23)], False),
        ([("raised", "UNACK", -30), ("acked", "ACKED", -20)], True),
        ([("raised", "UNACK", -30), ("cleared", "RTNUN", -20)], False),
        ([("raised", "UNACK", -30), ("shelved", "SHLVD", -20)], False),
        ([("raised", "UNACK", -50), ("cleared", "RTNUN", -40), ("raised", "UNACK", -10)], False),
        ([("raised", "UNACK", -24 * 40)], False),  # beyond the lookback: not seen
        ([("acked", "ACKED", -30)], False),  # its raise is not seen
    ])
    def test_stale_is_standing_for_more_than_a_day(self, events: list[tuple[str, str, int]], stale: bool) -> None:
        """In alarm (UNACK or ACKED) at the end and raised more than 24 h before it."""
        end = T0 + 60 * 24 * HOUR
        rows = [raised(end + h * HOUR, event=e, state=s) for e, s, h in events]
        assert K.stale(rows, end) == (["wwtp/a/cod/hh"] if stale else [])


# ---------------------------------------------------------------------------------------------- one answer
END = T0 + 40 * HOUR
START = END - 36 * HOUR


def _events() -> list[AlarmEvent]:
    """Alarm events on which the dashboard and ``alerts report`` used to disagree, and the plain cases."""
    ev: list[AlarmEvent] = []

    def add(t: int, site: str, sensor: str, rule: str = "hh", event: str = "raised", state: str = "UNACK") -> None:
        ev.append(AlarmEvent(f"{site}/a/{sensor}/{rule}", site, "a", sensor, rule, "high", event, state, 1.0, 0.5,
                             t, "m", None, seq=len(ev)))

    base = START + 2 * HOUR
    for i in range(11):  # a flood at one site within one period
        add(base + i * 20_000, "wwtp", f"f{i}")
    for i in range(12):  # 12 alarms across a period boundary, 6 + 6: no period over 10
        add(base + HOUR + W - 60_000 + i * 10_000, "wwtp", f"g{i}")
    for site in ("wwtp", "boiler"):  # 7 at each of two sites in one period: no site flooded
        for i in range(7):
            add(base + 2 * HOUR + i * 30_000, site, f"h{i}")
    for k in range(3):  # 3 raises within 50 s across a minute boundary: chattering
        add(base + 3 * HOUR + 40_000 + k * 25_000, "wwtp", "chat")
        add(base + 3 * HOUR + 41_000 + k * 25_000, "wwtp", "chat", event="cleared", state="RTNUN")
    for k in range(6):  # 6 raises in two minutes: one chattering alarm
        add(base + 4 * HOUR + k * 20_000, "boiler", "chat2")
    for site in ("wwtp", "boiler"):  # the same sensor and rule at two sites, twice each within a minute
        for k in range(2):
            add(base + 5 * HOUR + k * 10_000, site, "twin")
    add(base + 6 * HOUR, "wwtp", "slow")  # 3 raises in 70 s: not chattering
    add(base + 6 * HOUR + 35_000, "wwtp", "slow")
    add(base + 6 * HOUR + 70_000, "wwtp", "slow")
    for aid in dict.fromkeys(e.id for e in ev):  # every alarm above back to normal: none of them stands
        last = max(e.ts for e in ev if e.id == aid)
        site, _, sensor, _ = aid.split("/")
        add(last + 1000, site, sensor, event="cleared", state="RTNUN")
    add(END - 30 * HOUR, "wwtp", "st1")  # standing, acknowledged: stale
    add(END - 20 * HOUR, "wwtp", "st1", event="acked", state="ACKED")
    add(END - 60 * HOUR, "boiler", "st2")  # raised before the period: stale, seen through the lookback
    add(END - 30 * HOUR, "wwtp", "st3")  # returned to normal: not stale
    add(END - 29 * HOUR, "wwtp", "st3", event="cleared", state="RTNUN")
    add(END - 10 * HOUR, "wwtp", "st4")  # standing for 10 h: not stale
    return ev


@pytest.fixture(scope="module")
def alarm_db(influx_server: Any) -> Iterator[InfluxDB]:
    db: InfluxDB = influx_server.new_db("kpi")
    db.write([e.to_line() for e in _events()], precision="ns")
    yield db
    db.drop()


def _panel_values(db: InfluxDB) -> dict[str, Any]:
    """The alarms dashboard's KPI panels, run as Grafana runs them over [START, END], every site and asset."""
    import asyncio

    dash = next(d for d in build_all(load_park()) if d["uid"] == "smartpark-alarms")
    titles = {"flood": "报警泛滥时段", "peak": "10分钟峰值", "chattering": "振荡报警", "stale": "陈旧报警"}
    panels = {k: p for k, t in titles.items() for p in iter_panels(dash) if p["title"].startswith(t)}
    variables = {"site": "(boiler|wwtp)", "asset": "a"}

    async def run() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with InfluxClient(Settings.resolve(None, {"SMARTPARK_INFLUX_URL": db.url,
                                                        "SMARTPARK_INFLUX_DB": db.db}).influx()) as client:
            for key, panel in panels.items():
                res = await run_panel(client, dash["uid"], panel, TimeRange(START, END), variables)
                values = [row[1] for s in res.series for row in s.values]
                out[key] = values[0] if values else 0  # no row: the panel's noValue "0"
        return out

    return asyncio.run(run())


def test_report_and_dashboard_agree(alarm_db: InfluxDB) -> None:
    """On the same alarm events in InfluxDB, the alarms dashboard's flood, peak, chattering and stale panels
    show what ``alerts report`` computes from the events it reads (``alarm_query``): 1 flooded period, a peak
    of 11, 2 chattering alarms, 2 stale ones. (Before one definition: the dashboard counted 2 flood periods
    without the sites apart, 3 chattering alarm-minutes by sensor and rule over fixed minutes, and had no
    stale panel; the report found floods on a sliding window and no alarm raised before the period.)"""
    rows = alarm_db.query(alarm_query(START, END))
    k = kpis(rows, START, END)
    panels = _panel_values(alarm_db)
    assert panels == {"flood": k["flood_windows"], "peak": k["per_10min_peak"],
                      "chattering": len(k["chattering"]), "stale": len(k["stale"])}
    assert (k["flood_windows"], k["per_10min_peak"]) == (1, 11)
    assert k["chattering"] == ["boiler/a/chat2/hh", "wwtp/a/chat/hh"]
    assert k["stale"] == ["boiler/a/st2/hh", "wwtp/a/st1/hh"]


def test_a_site_filter_applies_to_both(alarm_db: InfluxDB) -> None:
    """The InfluxQL of each KPI with a tag condition answers what the Python gives for that site's events."""
    rows = alarm_db.query(alarm_query(START, END))
    for site in ("wwtp", "boiler"):
        mine = [r for r in rows if r["site"] == site]
        cond = f"\"site\" = '{site}'"
        tf = f"time >= {START}ms AND time <= {END}ms"

        def one(q: str) -> int:
            got = alarm_db.query(q)
            return int(got[0][next(c for c in got[0] if c not in ("time", "_series"))]) if got else 0

        assert one(K.flood_query(cond, tf)) == len(K.flood_windows(mine, START, END))
        assert one(K.chattering_query(cond, tf)) == len(K.chattering(mine, START, END))
        assert one(K.stale_query(cond, f"{END}ms")) == len(K.stale(mine, END))
