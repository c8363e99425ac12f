"""Retention policies and rollups (CONTRACT §10) on a real InfluxDB."""

from __future__ import annotations

import json
import math
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from rollup_support import DAY0, HOUR, Point, RunnerRig, a_day, run, settings, write_park, write_points
from test_collector_support import CollectorThread, Publisher, wait_connected, wait_for

from devstack import SMARTPARK
from rollups import Journal, RollupRunner, Rollups, touched_periods
from rollups.runner import journal_for
from smartpark.config import Settings
from smartpark.decode import Decoder
from smartpark.errors import ConfigError
from smartpark.influx import InfluxClient
from smartpark.park import load_park
from smartpark.schema import BAD_TS

PERIOD_SQL = {"5m": "time(5m)", "1h": "time(1h)", "1d": "time(1d) tz('Asia/Shanghai')"}


def policies(db: Any, name: str) -> dict[str, tuple[str, bool]]:
    return {r["name"]: (r["duration"], r["default"]) for r in db.query(f'SHOW RETENTION POLICIES ON "{name}"')}


def rollup_points(db: Any, period: str) -> dict[tuple[str, str, str, int], dict[str, Any]]:
    rows = db.query(f'SELECT "mean", "min", "max", "count", "good" FROM "rollup"."reading_{period}" '
                    'GROUP BY "site", "asset", "sensor"')
    return {(r["site"], r["asset"], r["sensor"], r["time"]): r for r in rows}


def raw_aggregation(db: Any, period: str, start: int, end: int) -> dict[tuple[str, str, str, int], dict[str, Any]]:
    """The InfluxQL aggregation over raw that every rollup point must equal (CONTRACT §10)."""
    group = PERIOD_SQL[period]
    if "tz(" in group:
        group, tz = group.split(" ", 1)
    else:
        tz = ""
    rows = db.query(f'SELECT mean(value), min(value), max(value), count(value), count(quality) FROM "raw"."reading" '
                    f'WHERE time >= {start}ms AND time < {end}ms GROUP BY {group}, "site", "asset", "sensor" '
                    f"fill(none) {tz}")
    return {(r["site"], r["asset"], r["sensor"], r["time"]): r for r in rows}


def assert_rollups_equal_raw(db: Any, start: int, end: int) -> int:
    """Every rollup point equals the raw aggregation of its period, and none is missing or extra: the data lie
    in [start, end), and the aggregation looks a day beyond so that it sees the days those periods fall in."""
    checked = 0
    for period in ("5m", "1h", "1d"):
        want = raw_aggregation(db, period, start - 86_400_000, end + 86_400_000)
        got = rollup_points(db, period)
        assert set(got) == set(want), f"reading_{period}: points differ: {sorted(set(got) ^ set(want))[:5]}"
        for key, w in want.items():
            g = got[key]
            assert g["count"] == w["count"] and g["good"] == w["count"] - (w["count_1"] or 0), (period, key, g, w)
            assert g["min"] == w["min"] and g["max"] == w["max"], (period, key, g, w)
            assert math.isclose(g["mean"], w["mean"], rel_tol=1e-12), (period, key, g["mean"], w["mean"])
            checked += 1
    return checked


class TestRetentionPolicies:
    """raw (the default) and rollup are created with their durations, changed when the options change."""

    def test_created_with_durations_and_raw_is_the_default(self, influx_server: Any, tmp_path: Path) -> None:
        """A database smartpark creates gets raw (30d here, as given) as its default and rollup kept forever."""
        name = f"rp_{uuid.uuid4().hex[:10]}"
        s = settings(influx_server.url, name, tmp_path, raw_retention="30d")

        async def go(s: Settings) -> None:
            async with InfluxClient(s.influx()) as db:
                await db.ensure_database()
                await db.write(["reading,asset=a,sensor=s,site=x value=1.5 " + str(int(time.time() * 1000))])

        run(go(s))
        probe = influx_server.new_db()  # only for its query helper on this server
        try:
            assert policies(probe, name) == {"autogen": ("0s", False), "raw": ("720h0m0s", True),
                                             "rollup": ("0s", False)}
            assert probe.query('SELECT value FROM "raw"."reading"', db=name)[0]["value"] == 1.5
            run(go(settings(influx_server.url, name, tmp_path, raw_retention="400d", rollup_retention="1000d")))
            assert policies(probe, name)["raw"] == ("9600h0m0s", True)
            assert policies(probe, name)["rollup"] == ("24000h0m0s", False)
        finally:
            probe.raw_query(f'DROP DATABASE "{name}"', epoch=None)
            probe.drop()

    def test_existing_data_keeps_its_default(self, influx_db: Any, tmp_path: Path) -> None:
        """A database that already holds readings in autogen keeps autogen as default: none disappears."""
        influx_db.write(["reading,asset=a,sensor=s,site=x value=2.5 " + str(int(time.time() * 1000))])

        async def go() -> None:
            async with InfluxClient(settings(influx_db.url, influx_db.db, tmp_path).influx()) as db:
                assert await db.ensure_database() is False
                retention = await db.ensure_retention()
                assert retention.supported and retention.raw is None and retention.rollup == "rollup"

        run(go())
        assert policies(influx_db, influx_db.db) == {"autogen": ("0s", True), "raw": ("9600h0m0s", False),
                                                      "rollup": ("0s", False)}
        assert influx_db.query("SELECT value FROM reading")[0]["value"] == 2.5

    @pytest.mark.parametrize("text", ["400", "forever", "30 d", "10m"])
    def test_bad_durations_are_configuration_errors(self, text: str) -> None:
        """A retention that InfluxDB would refuse stops the start with the option's name."""
        with pytest.raises(ConfigError, match="raw_retention"):
            Settings.resolve(env={"SMARTPARK_RAW_RETENTION": text})

    def test_too_old_readings_are_dead_lettered(self, tmp_path: Path) -> None:
        """A reading older than the raw retention is dead-lettered bad_ts, saying so; a recent one is kept."""
        park = load_park(write_park(tmp_path))
        decoder = Decoder(park, max_age_ms=30 * 86_400_000)
        now = int(time.time() * 1000)
        old, new = now - 31 * 86_400_000, now - 29 * 86_400_000
        payload = json.dumps({"ts": old, "values": {"cod": 31.5, "nh3_n": 1.0}}).encode()
        lines, rejected = decoder.lines("park/wwtp/effluent", payload)
        assert lines == [] and [r.reason for r in rejected] == [BAD_TS, BAD_TS]
        assert "older than the raw retention (30 days)" in rejected[0].detail
        lines, rejected = decoder.lines("park/wwtp/effluent/cod", json.dumps({"value": 31.5, "ts": new}).encode())
        assert len(lines) == 1 and rejected == []


class TestLateData:
    """Every rollup point equals the InfluxQL aggregation over raw, also for readings that arrive hours late."""

    def test_a_day_with_gaps_bad_quality_and_a_late_outage(self, influx_db: Any, tmp_path: Path) -> None:
        """Written in order hour by hour with the runner between; 04:00-08:00 arrive only at the end."""
        park_path = write_park(tmp_path)
        s = settings(influx_db.url, influx_db.db + "_r", tmp_path, park=park_path)
        points = a_day()
        late = [p for p in points if DAY0 + 4 * HOUR <= p.ts < DAY0 + 8 * HOUR]
        journal = journal_for(s)

        async def go() -> None:
            async with InfluxClient(s.influx()) as db:
                await db.ensure_database()
                rollups = Rollups(db, await db.ensure_retention(), "Asia/Shanghai")
                runner = RollupRunner(s, load_park(park_path))
                on_time = [p for p in points if p not in set(late)]
                for h in range(-2, 26):
                    hour = [p.line() for p in on_time if DAY0 + h * HOUR <= p.ts < DAY0 + (h + 1) * HOUR]
                    await db.write(hour)
                    journal.note_lines(hour)  # what the collector does once InfluxDB answered 204
                    if h % 3 == 0:  # the hour's last five minutes are still open at its end: they wait
                        hour_end = DAY0 + (h + 1) * HOUR
                        await runner.turn(rollups, now_ms=hour_end - 1)
                        assert journal.take() == ({hour_end // 300_000 - 1} if hour else set())
                await runner.turn(rollups)
                late_lines = [p.line() for p in late]
                await db.write(late_lines)
                journal.note_lines(late_lines)
                assert await runner.turn(rollups) > 0
                assert journal.take() == set()

        run(go())
        db = influx_db.__class__(influx_db.url, s.influx_db)
        try:
            checked = assert_rollups_equal_raw(db, DAY0 - 2 * HOUR, DAY0 + 26 * HOUR)
            assert checked > 5 * 28 * 12
            days = rollup_points(db, "1d")
            # the day begins at Beijing midnight (16:00 UTC), and cod's day has its 19 hours of readings
            assert ("wwtp", "effluent", "cod", DAY0) in days and DAY0 % 86_400_000 == 16 * HOUR
            assert days["wwtp", "effluent", "cod", DAY0]["count"] == 19 * 60
            assert days["wwtp", "effluent", "nh3_n", DAY0]["good"] == 24 * 60 - 30 - 60
        finally:
            db.drop()

    def test_collector_spool_replay_reaches_the_rollups(self, stack_factory: Any, tmp_path: Path) -> None:
        """The collector notes what it writes, also replaying its spool after InfluxDB was down; `smartpark
        rollup run --once` then brings the rollups to the raw aggregation."""
        stack = stack_factory(start=False)
        stack.start_mosquitto()
        park_path = write_park(tmp_path)
        park = load_park(park_path)
        s = Settings(mqtt_url=stack.mqtt_url, influx_url=stack.influx_url, influx_db="plant",
                     park=str(park_path), state_dir=str(tmp_path / "state"))
        now = int(time.time() * 1000) // HOUR * HOUR - 3 * HOUR  # three hours ago: late by the time it lands
        sent = [p for p in a_day(start=now, end=now + HOUR)]
        with CollectorThread(s, park, flush_interval=0.2) as collector:
            wait_connected(collector)
            pub = Publisher(stack.mqtt_port)
            pub.publish((f"park/{p.site}/{p.asset}/{p.sensor}",
                         json.dumps({"value": p.value, "ts": p.ts, "quality": p.quality}).encode()) for p in sent)
            pub.wait_acked()
            wait_for(lambda: collector.counters.spooled >= len(sent), 60, "the readings in the spool")
            assert not Journal(tmp_path / "state" / "rollups").path.exists()  # nothing written: nothing noted
            stack.start_influxd()
            wait_for(lambda: collector.counters.written >= len(sent), 60, "the spool replayed")
            pub.close()
        env = {"SMARTPARK_INFLUX_URL": stack.influx_url, "SMARTPARK_INFLUX_DB": "plant",
               "SMARTPARK_PARK": str(park_path), "SMARTPARK_STATE_DIR": str(tmp_path / "state"), "PATH": "/usr/bin"}
        done = subprocess.run([*SMARTPARK, "rollup", "run", "--once"], env=env,
                              capture_output=True, text=True, timeout=120, cwd=Path(__file__).parent.parent)
        assert done.returncode == 0, done.stderr
        from services import InfluxDB

        db = InfluxDB(stack.influx_url, "plant")
        assert db.count("reading") == len(sent)
        assert assert_rollups_equal_raw(db, now, now + HOUR) >= 5 * (12 + 1)


class TestCommands:
    """`smartpark rollup rebuild` recomputes a range from raw."""

    def test_rebuild_of_a_day_written_without_runner(self, influx_db: Any, tmp_path: Path) -> None:
        """A day written with no runner about gets every rollup point, equal to raw, from one rebuild."""
        park_path = write_park(tmp_path)
        name = influx_db.db + "_b"
        s = settings(influx_db.url, name, tmp_path, park=park_path)

        async def prepare() -> None:
            async with InfluxClient(s.influx()) as db:
                await db.ensure_database()
        run(prepare())
        run(write_points(s, a_day(start=DAY0, end=DAY0 + 24 * HOUR)))
        env = {"SMARTPARK_INFLUX_URL": influx_db.url, "SMARTPARK_INFLUX_DB": name, "SMARTPARK_PARK": str(park_path),
               "SMARTPARK_STATE_DIR": str(tmp_path), "PATH": "/usr/bin"}
        cmd = [*SMARTPARK, "rollup", "rebuild", "--since", "2026-11-20", "--until",
               "2026-11-21"]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120,
                              cwd=Path(__file__).parent.parent)
        assert done.returncode == 0, done.stderr
        assert "rollups rebuilt" in done.stdout
        db = influx_db.__class__(influx_db.url, name)
        try:
            assert assert_rollups_equal_raw(db, DAY0, DAY0 + 24 * HOUR) == 5 * (288 + 24 + 1) - 5 * 12 - 5
            bad = subprocess.run([*cmd[:-4], "--since", "yesterday"], env=env, capture_output=True, text=True,
                                 timeout=60, cwd=Path(__file__).parent.parent)
            assert bad.returncode == 2 and "not a date" in bad.stderr
        finally:
            db.drop()


class TestJournal:
    """The journal keeps what was noted until the runner says it is done, across writers and crashes."""

    def test_take_done_and_an_unfinished_take(self, tmp_path: Path) -> None:
        """A take that is not done is taken again, together with what was noted meanwhile."""
        j = Journal(tmp_path)
        j.note_lines(["reading,asset=a,sensor=s,site=x value=1 600000", "reading,asset=a,sensor=s,site=x value=1 0"])
        assert j.take() == {0, 2}
        Journal(tmp_path).note({7})
        assert j.take() == {0, 2, 7}
        j.done()
        assert j.take() == set()
        assert touched_periods(["m value=1 299999", "m value=1 300000"]) == {0, 1}


    def test_a_torn_batch_goes_to_the_raw_recompute(self, tmp_path: Path) -> None:
        """A batch whose write was cut off (full disk, a kill) in the middle of a line reads as its periods
        only; the batches around it, and a journal of the periods-only format, read whole."""
        j = Journal(tmp_path)
        (tmp_path / "horizon").write_text("{}")  # a runner has started here: values are noted
        a = ["reading,asset=a,sensor=s,site=x value=1.5 600000", "reading,asset=a,sensor=s,site=x value=2.5 660000"]
        j.note_lines(a)
        with open(j.path, "a", encoding="ascii") as f:  # what a writer killed mid-write leaves
            f.write("\n\n@3 5,6\nreading,asset=a,sensor=s,site=x value=3.5 1500000\nreading,asset=a,sen")
        b = ["reading,asset=a,sensor=s,site=x value=4.5 2100000"]
        j.note_lines(b)
        with open(j.path, "a", encoding="ascii") as f:
            f.write("\n\n9,10\n11\n")
        blocks = list(j.take_blocks())
        assert [(sorted(x.periods), x.body) for x in blocks] == [
            ([2], "\n".join(a).encode()), ([5, 6], None), ([7], b[0].encode()), ([9, 10, 11], None)]


class TestJournalValuesOnlyWhereUsed:
    """A batch's values are journaled only once a runner has started on the state directory and only while the
    disk keeps its reserve for the spool; otherwise its periods alone (the raw recompute)."""

    LINES = ("reading,asset=a,sensor=s,site=x value=1.5 600000",)

    def test_no_runner_yet_periods_only(self, tmp_path: Path) -> None:
        j = Journal(tmp_path)
        j.note_lines(self.LINES)
        assert [(sorted(b.periods), b.body) for b in j.take_blocks()] == [([2], None)]

    def test_a_disk_below_its_reserve_periods_only(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
        import rollups.journal as journal
        (tmp_path / "horizon").write_text("{}")
        j = Journal(tmp_path)
        j.note_lines(self.LINES)
        fs = os.statvfs(tmp_path)
        monkeypatch.setattr(journal, "RESERVE_BYTES", fs.f_bavail * fs.f_frsize + 2**30)  # more than is free
        j.note_lines(self.LINES)
        assert [b.body for b in j.take_blocks()] == [self.LINES[0].encode(), None]
        assert "which the spool needs" in caplog.text


class TestDashboards:
    """Sensor panels read raw up to two days, the hourly rollups from three, and split the range in between."""

    def test_panel_reads_rollups_for_long_ranges(self, influx_server: Any, tmp_path: Path) -> None:
        """Ten days of a 60 s sensor: a 10-day range reads only rollup points (1/60 of raw), a day only raw,
        2.5 days both, overlapping by the split point's hour at most; the queries are run as Grafana expands them."""
        from rollup_support import Point

        from dashboards.build import site_dashboard
        from dashboards.grafana import iter_panels
        from dashboards.macros import TimeRange
        from dashboards.query import run_panel

        park = load_park()
        site = park.site("wwtp")
        assert site is not None
        ref = next(r for r in park if r.site == "wwtp" and r.sensor.interval_s == 60)
        panel = next(p for p in iter_panels(site_dashboard(park, site))
                     if any(f"'{ref.sensor.id}'" in t["query"] and "reading_1h" in t["query"]
                            and f"'{ref.asset}'" in t["query"] for t in p.get("targets", [])))
        name = f"dash_{uuid.uuid4().hex[:10]}"
        s = settings(influx_server.url, name, tmp_path)
        end = int(time.time() * 1000) // HOUR * HOUR
        start = end - 10 * 86_400_000
        lo, hi = ref.sensor.normal
        points = [Point(ref.site, ref.asset, ref.sensor.id, ts, lo + (hi - lo) * ((ts // 60_000) % 97) / 97)
                  for ts in range(start, end, 60_000)]

        async def go() -> dict[str, tuple[int, int, int, int]]:
            async with InfluxClient(s.influx()) as db:
                await db.ensure_database()
                await db.write([p.line() for p in points])
                await Rollups(db, await db.ensure_retention(), park.park.timezone).rebuild(start, end)
                out = {}
                for label, days in (("10d", 10), ("1d", 1), ("2.5d", 2.5)):
                    tr = TimeRange(end - int(days * 86_400_000), end)
                    res = await run_panel(db, "site", panel, tr, {})
                    a = [r for ser in res.series if ser.ref_id == "A" for r in ser.values if r[1] is not None]
                    b = [r for ser in res.series if ser.ref_id == "B" for r in ser.values if r[1] is not None]
                    raw_read = (await db.rows(res.queries["A"].replace('mean("value")', 'count("value")', 1)
                                              .split(" GROUP BY")[0]))
                    roll_read = (await db.rows(res.queries["B"].replace('mean("mean")', 'count("mean")', 1)
                                               .split(" GROUP BY")[0]))
                    out[label] = (len(a), len(b), raw_read[0]["count"] if raw_read else 0,
                                  roll_read[0]["count"] if roll_read else 0)
                    if a and b:
                        assert max(r[0] for r in b) <= min(r[0] for r in a)  # the split point's hour is in both
                return out

        try:
            got = run(go())
        finally:
            probe = influx_server.new_db()
            probe.raw_query(f'DROP DATABASE "{name}"', epoch=None)
            probe.drop()
        a10, b10, raw10, roll10 = got["10d"]
        assert a10 == 0 and raw10 == 0 and b10 > 0 and roll10 == 10 * 24
        assert roll10 * 50 <= len(points)  # at most 1/50 of the raw points of the range
        a1, b1, raw1, roll1 = got["1d"]
        assert b1 == 0 and roll1 == 0 and a1 > 0 and raw1 == 24 * 60
        a25, b25, raw25, roll25 = got["2.5d"]
        assert a25 > 0 and b25 > 0 and 0 <= raw25 + roll25 * 60 - int(2.5 * 24 * 60) <= 60


class TestJournalFailure:
    """The journal's failures never reach the readings' write path."""

    def test_an_unwritable_journal_says_what_to_rebuild(self, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
        """A journal that cannot be written (here its directory is a file) logs the rebuild to run, and raises
        nothing into the collector's write path."""
        (tmp_path / "rollups").write_text("not a directory")
        with caplog.at_level("ERROR", logger="rollups.journal"):
            Journal(tmp_path / "rollups").note({5983763})
        assert "rollup rebuild --since 2026-11-19T22:55:00+00:00 --until 2026-11-19T23:00:00+00:00" in caplog.text


class TestFromTheJournal:
    """The runner aggregates the windows it has seen from their first reading on from the collector's journal
    of values, equal to InfluxQL over raw; every other window is recomputed from raw."""

    START = DAY0 + 8 * HOUR  # 16:00 .. 19:00 in Beijing: nh3_n bad in half of 17:00, uncertain in 18:00

    @staticmethod
    def _rig(broker: Any, influx_db: Any, tmp_path: Path, **runner_kw: float) -> tuple[RunnerRig, Any]:
        from services import InfluxDB

        name = influx_db.db + "_j"
        return RunnerRig(broker.url, broker.port, influx_db.url, name, tmp_path, **runner_kw), InfluxDB(
            influx_db.url, name)

    def _finish(self, rig: RunnerRig) -> None:
        """A reading two days on moves the journal's data time past every window before it; the last
        windows of the sensors that stopped are held back by one turn."""
        rig.publish([Point("wwtp", "effluent", "flow", self.START + 2 * 86_400_000, 500.0)])
        rig.turn()
        rig.turn()

    def test_live_ordered_readings(self, broker: Any, influx_db: Any, tmp_path: Path) -> None:
        """Three hours of five sensors, with bad and uncertain quality, published in order half an hour at a
        time with a turn after each: every window from the journal, none read from raw, all equal to raw."""
        rig, db = self._rig(broker, influx_db, tmp_path)
        try:
            points = a_day(start=self.START, end=self.START + 3 * HOUR)
            for k in range(6):
                rig.publish(p for p in points if self.START + k * HOUR // 2 <= p.ts < self.START + (k + 1) * HOUR // 2)
                rig.turn()
            self._finish(rig)
            assert rig.raw_rows == 0 and rig.runner.stats.from_journal == 36
            assert assert_rollups_equal_raw(db, self.START, self.START + 3 * HOUR) == 5 * (36 + 3 + 1)
        finally:
            rig.close()
            db.drop()

    def test_redelivered_duplicates_and_a_quality_merge(self, broker: Any, influx_db: Any, tmp_path: Path) -> None:
        """The last 20 minutes of the first hour arrive again in the next turn (a redelivery), and one
        reading first sent as bad is resent good with another value (InfluxDB keeps the new value and the old
        quality): counted once, merged as InfluxDB merges, still without reading raw."""
        rig, db = self._rig(broker, influx_db, tmp_path, lateness=1800.0)
        try:
            points = a_day(start=self.START, end=self.START + 2 * HOUR)
            first = [p for p in points if p.ts < self.START + HOUR]
            fixed_ts = self.START + 50 * 60_000
            first = [Point(p.site, p.asset, p.sensor, p.ts, 9.5, "bad")
                     if (p.sensor, p.ts) == ("nh3_n", fixed_ts) else p for p in first]
            rig.publish(first)
            rig.turn()
            again = [p for p in points if self.START + 40 * 60_000 <= p.ts < self.START + HOUR]
            rig.publish([*again, *(p for p in points if p.ts >= self.START + HOUR)])
            rig.turn()
            self._finish(rig)
            assert db.count("reading") == len(points) + 1 < rig.collector.counters.written  # the sentinel's 1
            assert rig.raw_rows == 0 and rig.runner.stats.from_journal == 24
            stored = db.query(f'SELECT value, quality FROM "raw"."reading" WHERE sensor = \'nh3_n\' '
                              f"AND time = {fixed_ts}ms")
            assert stored[0]["quality"] == "bad" and stored[0]["value"] != 9.5  # InfluxDB's field merge
            assert assert_rollups_equal_raw(db, self.START, self.START + 2 * HOUR) == 5 * (24 + 2 + 1)
        finally:
            rig.close()
            db.drop()

    def test_a_late_reading_for_a_finished_window(self, broker: Any, influx_db: Any, tmp_path: Path) -> None:
        """An hour is finished from the journal; a reading for its second window arrives after: that window
        is recomputed from raw, and every point still equals raw."""
        rig, db = self._rig(broker, influx_db, tmp_path)
        try:
            rig.publish(a_day(start=self.START, end=self.START + HOUR))
            self._finish(rig)
            assert rig.raw_rows == 0 and rig.runner.stats.from_journal == 12
            rig.publish([Point("wwtp", "effluent", "nh3_n", self.START + 7 * 60_000 + 30_000, 3.75, "bad")])
            rig.turn()
            assert rig.raw_rows > 0 and rig.runner.stats.periods == 1
            assert assert_rollups_equal_raw(db, self.START, self.START + HOUR) == 5 * (12 + 1 + 1)
        finally:
            rig.close()
            db.drop()

    def test_a_runner_restart_mid_window(self, broker: Any, influx_db: Any, tmp_path: Path) -> None:
        """A runner stops with the windows of 16:25 and 16:30 open; the next one sets its horizon after the
        newest reading in raw (16:35), recomputes those from raw and aggregates the later ones itself."""
        rig, db = self._rig(broker, influx_db, tmp_path)
        try:
            horizon = Path(rig.settings.state_path / "rollups" / "horizon")
            assert json.loads(horizon.read_text())["t0_ms"] is None  # an empty raw: every window
            points = a_day(start=self.START, end=self.START + HOUR)
            rig.publish(p for p in points if p.ts < self.START + 32 * 60_000)
            rig.turn()
            assert rig.runner.stats.from_journal == 5  # 16:00 .. 16:20 finished; 16:25 and 16:30 open
            rig.start_runner()
            assert json.loads(horizon.read_text())["t0_ms"] == self.START + 35 * 60_000
            rig.publish(p for p in points if p.ts >= self.START + 32 * 60_000)
            rig.turn()
            self._finish(rig)
            assert rig.runner.stats.from_journal == 5 and rig.raw_rows > 0  # 16:35 .. 16:55
            assert assert_rollups_equal_raw(db, self.START, self.START + HOUR) == 5 * (12 + 1 + 1)
        finally:
            rig.close()
            db.drop()

    def test_refused_lines_are_not_journaled_as_values(self, influx_db: Any, tmp_path: Path) -> None:
        """A batch InfluxDB took only in part (field type conflict): the lines it stored are journaled with
        their values, the refused ones only by their periods (raw recompute), so none is counted that raw
        does not hold."""
        from test_collector_support import TS0, write_across_a_type_conflict

        (tmp_path / "rollups").mkdir()
        (tmp_path / "rollups" / "horizon").write_text("{}")  # a runner has started here: values are noted
        _, lines = write_across_a_type_conflict(influx_db, tmp_path)  # floats in one shard conflict
        blocks = list(Journal(tmp_path / "rollups").take_blocks())
        journaled = [line for b in blocks if b.body is not None for line in b.body.decode().split("\n")]
        assert sorted(journaled) == sorted(lines[1::2])  # the four InfluxDB stored
        refused = set().union(*(b.periods for b in blocks if b.body is None))
        assert refused == {(TS0 + i) // 300_000 for i in range(0, 8, 2)}
