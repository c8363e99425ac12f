"""The notification stages on injected time: routing, EEMUA 191 flood handling, repeats, escalation; KPIs."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from services import InfluxDB

from alerts.events import AlarmEvent
from alerts.notify import DELIVERED, Dispatcher, Notification, Outbox, Route, notification_id
from alerts.report import kpis
from devstack import SMARTPARK
from smartpark.config import Settings

T0 = 1_772_416_800_000


class Recorder:
    """A notifier that keeps what it is given (the stage under test is the dispatcher, not HTTP)."""

    def __init__(self, name: str, structured: bool = False) -> None:
        self.name = name
        self.structured = structured
        self.got: list[Notification] = []

    async def notify(self, n: Notification) -> None:
        self.got.append(n)

    async def close(self) -> None:
        pass


def ev(i: int, t_s: float, event: str = "raised", site: str = "wwtp", priority: str = "high",
       state: str = "UNACK") -> AlarmEvent:
    return AlarmEvent(f"{site}/a/s{i}/hh", site, "a", f"s{i}", "hh", priority, event, state, 1.0, 0.5,
                      T0 + int(t_s * 1000), f"alarm {i}")


def drain(ob: Outbox, dest: str) -> list[Notification]:
    """What the dispatcher recorded for ``dest``, in order (and taken out of the line)."""
    out = []
    while (row := ob.head(dest)) is not None:
        out.append(row.n)
        ob.finish(row.seq, dest, DELIVERED, 1, "", T0)
    return out


@pytest.fixture
def ob(tmp_path: Path) -> Iterator[Outbox]:
    with Outbox(tmp_path / "outbox.sqlite") as o:
        yield o


def make(ob: Outbox, structured: bool = False, **kw: Any) -> tuple[Dispatcher, str]:
    return Dispatcher([Route(Recorder("r", structured), **kw)], ob, now_ms=lambda: T0), "r"


class TestDispatcher:
    """Routing and the reasons to notify: event, flood, flood_over, repeat, escalation."""

    def test_routing_by_site_and_priority(self, ob: Outbox) -> None:
        """A route with sites and priorities takes only matching events."""
        d, w = make(ob, sites=frozenset({"wwtp"}), priorities=frozenset({"high"}))
        d.dispatch([ev(1, 0), ev(2, 1, site="hw_center"), ev(3, 2, priority="low")])
        assert [n.event.id for n in drain(ob, w) if n.event] == ["wwtp/a/s1/hh"]

    def test_flood(self, ob: Outbox) -> None:
        """More than 10 alarms in 10 minutes at a site: one summary, then silence until fewer than 5."""
        d, w = make(ob)
        d.dispatch([ev(i, i * 10) for i in range(15)])
        got = drain(ob, w)
        assert [n.reason for n in got] == ["event"] * 10 + ["flood"]
        assert "wwtp" in d.flooding and d.flooding["wwtp"] == 5
        d.tick(T0 + 600_000)  # 9 alarms still within the last 10 minutes: flood continues
        assert drain(ob, w) == []
        d.tick(T0 + 1_000_000)
        over = drain(ob, w)
        assert [n.reason for n in over] == ["flood_over"] and "5" in over[0].body
        d.dispatch([ev(99, 1001)])
        assert [n.reason for n in drain(ob, w)] == ["event"]

    def test_structured_webhooks_get_every_event(self, ob: Outbox) -> None:
        """Machines (webhooks) receive every event even in a flood; flood summaries are for people."""
        d, w = make(ob, structured=True)
        d.dispatch([ev(i, i) for i in range(15)])
        assert [n.reason for n in drain(ob, w)] == ["event"] * 15

    def test_repeat_and_escalation(self, ob: Outbox) -> None:
        """Unacknowledged: repeated every repeat_ms, escalated once after escalate_ms (level 1); acked: silence."""
        d = Dispatcher([Route(Recorder("oncall"), repeat_ms=300_000, escalate_ms=900_000,
                              escalate_to=Recorder("boss"))], ob, now_ms=lambda: T0)
        d.dispatch([ev(1, 0)])
        assert [(n.reason, n.level) for n in drain(ob, "oncall")] == [("event", 0)]
        for t in (299, 300, 600, 900):
            d.tick(T0 + t * 1000)
        assert [n.reason for n in drain(ob, "oncall")] == ["repeat", "repeat", "repeat"]
        assert [(n.reason, n.level) for n in drain(ob, "boss")] == [("escalation", 1)]
        d.dispatch([ev(1, 950, event="acked", state="ACKED")])
        drain(ob, "oncall")
        d.tick(T0 + 2_000_000)
        assert drain(ob, "oncall") == [] and drain(ob, "boss") == []

    def test_repeats_and_escalations_resume_after_restart_without_duplicates(self, ob: Outbox) -> None:
        """Alarms still unacknowledged when the engine restarts keep being repeated; an escalation due during
        the restart is sent when it is back; what was sent before has the same id and is not recorded again."""
        def dispatcher() -> Dispatcher:
            return Dispatcher([Route(Recorder("oncall"), repeat_ms=300_000, escalate_ms=900_000,
                                     escalate_to=Recorder("boss"))], ob, now_ms=lambda: T0)
        d = dispatcher()
        d.dispatch([ev(1, 0)])
        d.tick(T0 + 300_000)
        before = drain(ob, "oncall")
        assert [n.reason for n in before] == ["event", "repeat"]
        d = dispatcher()  # the restart: the same event again (journal) and the alarm still unacknowledged
        d.dispatch([ev(1, 0)])
        d.resume([ev(1, 0)])
        d.tick(T0 + 400_000)  # the first repeat again: already recorded
        assert drain(ob, "oncall") == []
        d.tick(T0 + 1_000_000)  # escalation fell due at 900 s, while the engine was down
        assert [n.reason for n in drain(ob, "oncall")] == ["repeat"]
        assert [n.reason for n in drain(ob, "boss")] == ["escalation"]

    def test_ids_are_stable_and_distinct(self, ob: Outbox) -> None:
        """One id per (event, destination, reason, level): the same inputs give the same id, in the body's last
        line too; with a public URL the body links to the alarm."""
        d = Dispatcher([Route(Recorder("a")), Route(Recorder("b"))], ob, public_url="https://scada.example/",
                       now_ms=lambda: T0)
        d.dispatch([ev(1, 0), ev(1, 5, event="cleared", state="RTNUN")])
        a, b = drain(ob, "a"), drain(ob, "b")
        ids = [n.id for n in a + b]
        assert len(set(ids)) == 4
        assert a[0].id == notification_id("a", "event", 0, ev(1, 0))
        assert all(n.body.splitlines()[-1] == f"notification_id: {n.id}" for n in a + b)
        assert "https://scada.example/alarm/wwtp/a/s1/hh" in a[0].body
        assert a[0].to_json()["notification_id"] == a[0].id and a[0].to_json()["reason"] == "event"

    def test_public_url_from_the_environment(self) -> None:
        """--public-url / SMARTPARK_PUBLIC_URL (CONTRACT §6), default none: no links."""
        assert Settings.resolve(None, {"SMARTPARK_PUBLIC_URL": "https://scada.example"}).public_url == \
            "https://scada.example"
        assert Settings.resolve(None, {}).public_url is None


class TestReport:
    """KPIs from the alarm measurement."""

    def test_kpis(self) -> None:
        """Average and peak per 10 minutes, flood time, chattering, stale, top 10, priorities."""
        rows = []
        for i in range(12):  # a flood: 12 alarms in 2 minutes at one site
            rows.append({"time": T0 + i * 10_000, "site": "wwtp", "asset": "a", "sensor": f"s{i}", "rule": "h",
                         "priority": "medium", "event": "raised", "state": "UNACK"})
        for k in range(3):  # chattering: 3 raises of one alarm within a minute
            rows.append({"time": T0 + 3_600_000 + k * 20_000, "site": "hw", "asset": "b", "sensor": "x",
                         "rule": "hh", "priority": "high", "event": "raised", "state": "UNACK"})
        rows.append({"time": T0 - 2 * 86_400_000, "site": "hw", "asset": "c", "sensor": "y", "rule": "no_data",
                     "priority": "low", "event": "raised", "state": "UNACK"})
        k = kpis(rows, T0 - 3 * 86_400_000, T0 + 86_400_000)
        assert k["alarms"] == 16 and k["per_10min_peak"] == 12
        assert k["chattering"] == ["hw/b/x/hh"] and k["stale"] == ["hw/c/y/no_data"]
        assert k["top10"][0] == ("hw/b/x/hh", 3)
        assert k["priority"] == {"medium": 12, "high": 3, "low": 1}
        assert 0 < k["flood_time_pct"] < 1

    def test_report_cli(self, influx_db: InfluxDB) -> None:
        """`smartpark alerts report --json` reads the alarm measurement of InfluxDB."""
        import time

        def report(*extra: str) -> dict[str, object]:
            r = subprocess.run([*SMARTPARK, "alerts", "report", "--json", *extra,
                                "--influx-url", influx_db.url, "--influx-db", influx_db.db],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stderr
            return json.loads(r.stdout)

        # simulated time (a replay months ago): --until last ends the period at the newest alarm point
        influx_db.write([ev(i, i * 60).to_line() for i in range(3)], precision="ns")
        k = report("--since", "1h", "--until", "last")
        assert k["alarms"] == 3 and k["priority"] == {"high": 3}
        assert report("--since", "1h")["alarms"] == 0
        now = int(time.time() * 1000)
        lines = [ev(i, 0).to_line().rsplit(" ", 1)[0] + f" {(now - 60_000 + i) * 1_000_000}" for i in range(4)]
        influx_db.write(lines, precision="ns")
        assert report("--since", "1h")["alarms"] == 4

    def test_shelve_without_reason_is_usage_error(self) -> None:
        """`alerts shelve` without --comment: one line and exit code 2, before any call."""
        r = subprocess.run([*SMARTPARK, "alerts", "shelve", "wwtp/effluent/cod/hh",
                            "--for", "1h", "--api-token", "x"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "reason" in r.stderr
