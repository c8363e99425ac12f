"""The notification stages on injected time: routing, EEMUA 191 flood handling, repeats, escalation; KPIs."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

from conftest import InfluxDB

from alerts.events import AlarmEvent
from alerts.notify import Dispatcher, Notification, Route, Worker
from alerts.report import kpis

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


def drain(w: Worker) -> list[Notification]:
    out = []
    while not w.queue.empty():
        out.append(w.queue.get_nowait())
    return out


def make(structured: bool = False, **kw: object) -> tuple[Dispatcher, Worker]:
    async def build() -> tuple[Dispatcher, Worker]:
        w = Worker(Recorder("r", structured))
        return Dispatcher([Route(w, **kw)]), w  # type: ignore[arg-type]
    return asyncio.run(build())


class TestDispatcher:
    """Routing and the reasons to notify: event, flood, flood_over, repeat, escalation."""

    def test_routing_by_site_and_priority(self) -> None:
        """A route with sites and priorities takes only matching events."""
        d, w = make(sites=frozenset({"wwtp"}), priorities=frozenset({"high"}))
        d.dispatch([ev(1, 0), ev(2, 1, site="hw_center"), ev(3, 2, priority="low")])
        assert [n.event.id for n in drain(w) if n.event] == ["wwtp/a/s1/hh"]

    def test_flood(self) -> None:
        """More than 10 alarms in 10 minutes at a site: one summary, then silence until fewer than 5."""
        d, w = make()
        d.dispatch([ev(i, i * 10) for i in range(15)])
        got = drain(w)
        assert [n.reason for n in got] == ["event"] * 10 + ["flood"]
        assert "wwtp" in d.flooding and d.flooding["wwtp"] == 5
        d.tick(T0 + 600_000)  # 9 alarms still within the last 10 minutes: flood continues
        assert drain(w) == []
        d.tick(T0 + 1_000_000)
        over = drain(w)
        assert [n.reason for n in over] == ["flood_over"] and "5" in over[0].body
        d.dispatch([ev(99, 1001)])
        assert [n.reason for n in drain(w)] == ["event"]

    def test_structured_webhooks_get_every_event(self) -> None:
        """Machines (webhooks) receive every event even in a flood; flood summaries are for people."""
        d, w = make(structured=True)
        d.dispatch([ev(i, i) for i in range(15)])
        assert [n.reason for n in drain(w)] == ["event"] * 15

    def test_repeat_and_escalation(self) -> None:
        """Unacknowledged: repeated every repeat_ms, escalated once after escalate_ms; acked: silence."""
        async def build() -> tuple[Dispatcher, Worker, Worker]:
            w, boss = Worker(Recorder("oncall")), Worker(Recorder("boss"))
            return Dispatcher([Route(w, repeat_ms=300_000, escalate_ms=900_000, escalate_to=boss)]), w, boss
        d, w, boss = asyncio.run(build())
        d.dispatch([ev(1, 0)])
        drain(w)
        for t in (299, 300, 600, 900):
            d.tick(T0 + t * 1000)
        assert [n.reason for n in drain(w)] == ["repeat", "repeat", "repeat"]
        assert [n.reason for n in drain(boss)] == ["escalation"]
        d.dispatch([ev(1, 950, event="acked", state="ACKED")])
        drain(w)
        d.tick(T0 + 2_000_000)
        assert drain(w) == [] and drain(boss) == []

    def test_repeats_resume_after_restart(self) -> None:
        """Alarms still unacknowledged when the engine restarts keep being repeated."""
        d, w = make(repeat_ms=300_000)
        d.resume([ev(1, 0)])
        d.tick(T0 + 300_000)
        assert [(n.reason, n.event.id if n.event else None) for n in drain(w)] == [("repeat", "wwtp/a/s1/hh")]

    def test_bounded_queue_counts_drops(self) -> None:
        """A full notifier queue drops with a count (never silently, never blocking evaluation)."""
        async def run() -> Worker:
            w = Worker(Recorder("r"), maxsize=3)
            Dispatcher([Route(w)]).dispatch([ev(i, i) for i in range(5)])
            return w
        w = asyncio.run(run())
        assert w.counts["queued"] == 3 and w.counts["dropped"] == 2


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
            r = subprocess.run([sys.executable, "-m", "smartpark", "alerts", "report", "--json", *extra,
                                "--influx-url", influx_db.url, "--influx-db", influx_db.db],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stderr
            return json.loads(r.stdout)  # type: ignore[no-any-return]

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
        r = subprocess.run([sys.executable, "-m", "smartpark", "alerts", "shelve", "wwtp/effluent/cod/hh",
                            "--for", "1h", "--api-token", "x"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "reason" in r.stderr
