"""Compliance reports (CONTRACT §11): the numbers equal a plain-Python computation from the raw points."""

from __future__ import annotations

import csv
import io
import math
import shutil
import subprocess
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from rollup_support import DAY0, HOUR, TZ, Point, a_day, settings, write_park

from alerts.events import AlarmEvent
from devstack import SMARTPARK
from reports import CSV_COLUMNS, build_daily
from smartpark.park import load_park

REPO = Path(__file__).parent.parent
IMAGES = REPO / "docs" / "images"
REGULATED = {("wwtp", "effluent", "cod"): (None, 50.0), ("wwtp", "effluent", "nh3_n"): (None, 5.0),
             ("hw_center", "scc", "temp"): (None, None), ("hw_center", "stack_cems", "so2"): (100.0, 80.0)}


def expected_rows(points: list[Point]) -> list[list[str]]:
    """The CSV rows, computed here from the points with nothing of reports/: 60 readings expected an hour,
    45 valid make a valid hour, 20 valid hours a valid day; bad quality does not count."""
    hours: list[list[str]] = []
    days: list[list[str]] = []
    for site in ("wwtp", "hw_center"):
        keys = [k for k in REGULATED if k[0] == site]
        day_rows = []
        for key in keys:
            hour_limit, day_limit = REGULATED[key]
            means = []
            for h in range(24):
                a, b = DAY0 + h * HOUR, DAY0 + (h + 1) * HOUR
                vals = [p.value for p in points if (p.site, p.asset, p.sensor) == key and a <= p.ts < b
                        and p.quality != "bad"]
                mean = sum(vals) / len(vals) if vals else None
                valid = len(vals) >= 45
                if valid:
                    means.append(mean)
                start = datetime.fromtimestamp(a / 1000, TZ).isoformat()
                hours.append([*key, "1h", start, "" if mean is None else f"{mean:.4f}", str(len(vals)),
                              str(valid).lower(), "" if hour_limit is None else f"{hour_limit:g}",
                              str(valid and hour_limit is not None and mean > hour_limit).lower()])
            day_mean = sum(means) / len(means) if len(means) >= 20 else None
            day_rows.append([*key, "24h", "2026-11-20T00:00:00+08:00",
                             "" if day_mean is None else f"{day_mean:.4f}", str(len(means)),
                             str(day_mean is not None).lower(), "" if day_limit is None else f"{day_limit:g}",
                             str(day_mean is not None and day_limit is not None and day_mean > day_limit).lower()])
        days += day_rows
        hours += []
    # the report lists a site's hours, then its days
    out: list[list[str]] = []
    for site in ("wwtp", "hw_center"):
        out += [r for r in hours if r[0] == site] + [r for r in days if r[0] == site]
    return out


@pytest.fixture(scope="module")
def day_db(influx_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    db = influx_server.new_db("rep")
    points = a_day()
    db.write([p.line() for p in points])
    acked = AlarmEvent("hw_center/stack_cems/so2/hh", "hw_center", "stack_cems", "so2", "hh", "high", "acked", "ACKED",
                       132.5, 100.0, DAY0 + 14 * HOUR + 600_000, "acknowledged by wang: 检修", "wang")
    db.write([acked.to_line()], precision="ns")
    yield db, points, write_park(tmp_path_factory.mktemp("park"))
    db.drop()


def run_report(db: Any, park: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {"SMARTPARK_INFLUX_URL": db.url, "SMARTPARK_INFLUX_DB": db.db, "SMARTPARK_PARK": str(park),
           "PATH": "/usr/bin:/bin"}
    return subprocess.run([*SMARTPARK, "report", *args], env=env, capture_output=True,
                          timeout=120, cwd=REPO)


class TestDailyNumbers:
    """The daily report's figures are those of CONTRACT §11 and HJ 75 / GB 18484, computed independently."""

    def test_csv_equals_the_independent_computation(self, day_db: Any) -> None:
        """CSV on stdout, exactly: header, each site's 24 hours per sensor, then its days, Beijing offsets."""
        db, points, park = day_db
        done = run_report(db, park, "daily", "--date", "2026-11-20", "--format", "csv")
        assert done.returncode == 0, done.stderr.decode()
        text = done.stdout.decode("utf-8")
        rows = list(csv.reader(io.StringIO(text)))
        assert rows[0] == list(CSV_COLUMNS)
        assert rows[1:] == expected_rows(points)
        assert text.splitlines()[1].startswith("wwtp,effluent,cod,1h,2026-11-20T00:00:00+08:00,")

    def test_the_cases_the_day_holds(self, day_db: Any) -> None:
        """cod: 19 valid hours, no day mean; nh3_n 09:00 invalid (half bad), 10:00 valid (uncertain counts);
        so2 14:00 exceeds its 1 h limit; the day after Beijing midnight ignores 22:00-24:00 of the day before."""
        db, _, park = day_db
        rows = {(r["sensor"], r["period"], r["start"][11:16]): r
                for r in csv.DictReader(io.StringIO(build_daily(
                    settings(db.url, db.db, Path("."), park), load_park(park), date(2026, 11, 20), fmt="csv")
                    .decode()))}
        assert rows["cod", "24h", "00:00"]["valid"] == "false" and rows["cod", "24h", "00:00"]["mean"] == ""
        assert rows["cod", "24h", "00:00"]["valid_count"] == "19"
        assert rows["cod", "1h", "03:00"]["valid_count"] == "0" and rows["cod", "1h", "03:00"]["mean"] == ""
        assert rows["nh3_n", "1h", "09:00"]["valid"] == "false" and rows["nh3_n", "1h", "09:00"]["valid_count"] == "30"
        assert rows["nh3_n", "1h", "10:00"]["valid"] == "true"
        assert rows["so2", "1h", "14:00"]["exceeded"] == "true" and rows["so2", "1h", "13:00"]["exceeded"] == "false"
        assert rows["so2", "24h", "00:00"]["valid"] == "true" and rows["so2", "24h", "00:00"]["exceeded"] == "false"
        assert rows["temp", "24h", "00:00"]["limit"] == "" and "flow" not in {k[0] for k in rows}

    def test_xlsx_holds_the_numbers(self, day_db: Any, tmp_path: Path) -> None:
        """The workbook opens with openpyxl and holds the same hourly means as numbers."""
        from openpyxl import load_workbook

        db, points, park = day_db
        out = tmp_path / "day.xlsx"
        done = run_report(db, park, "daily", "--date", "2026-11-20", "--format", "xlsx", "--out", str(out))
        assert done.returncode == 0, done.stderr.decode()
        wb = load_workbook(out)
        assert {"wwtp", "hw_center", "wwtp_alarms", "hw_center_alarms"} <= set(wb.sheetnames)
        cells = {(r[0], r[1]): r for r in wb["hw_center"].iter_rows(values_only=True) if r and r[0] and r[1]}
        so2 = cells["hw_center/stack_cems/so2", "2026-11-20T14:00:00+08:00"]
        vals = [p.value for p in points if p.sensor == "so2" and DAY0 + 14 * HOUR <= p.ts < DAY0 + 15 * HOUR]
        assert math.isclose(so2[2], sum(vals) / len(vals), rel_tol=1e-12) and so2[3] == 60 and so2[6] is True
        alarms = list(wb["hw_center_alarms"].iter_rows(values_only=True))
        assert alarms[1][1:6] == ("stack_cems/so2", "hh", "acked", "ACKED", "wang")

    def test_pdf_renders_with_chinese_headings(self, day_db: Any, tmp_path: Path) -> None:
        """A page per site with the Chinese and English headings; its first page becomes the README image."""
        if shutil.which("pdftoppm") is None or shutil.which("pdftotext") is None:
            pytest.fail("poppler-utils (pdftoppm, pdftotext) are needed: make test installs them")
        db, _, park = day_db
        out = tmp_path / "day.pdf"
        done = run_report(db, park, "daily", "--date", "2026-11-20", "--out", str(out))
        assert done.returncode == 0, done.stderr.decode()
        assert out.read_bytes()[:5] == b"%PDF-"
        text = subprocess.run(["pdftotext", "-layout", str(out), "-"], capture_output=True, check=True).stdout.decode()
        for words in ("环境监测日报", "Daily environmental compliance report", "污水处理厂", "化学需氧量",
                      "危废焚烧中心", "五分钟超限", "数据不足 insufficient data", "报警与操作"):
            assert words in text, words
        pages = text.count("\f")
        assert pages >= 2  # a page per site at least
        subprocess.run(["pdftoppm", "-png", "-r", "80", "-f", "1", "-l", "1", "-singlefile", str(out),
                        str(tmp_path / "page")], check=True)
        png = (tmp_path / "page.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
        IMAGES.mkdir(parents=True, exist_ok=True)
        (IMAGES / "report-daily.png").write_bytes(png)

    def test_html_and_usage_errors(self, day_db: Any) -> None:
        """HTML carries the bilingual headings; a bad date or site exits 2 with one line."""
        db, _, park = day_db
        done = run_report(db, park, "daily", "--date", "2026-11-20", "--format", "html", "--out", "/dev/stdout")
        assert done.returncode == 0 and "环境监测日报" in done.stdout.decode() and "五分钟超限" in done.stdout.decode()
        bad = run_report(db, park, "daily", "--date", "20-11-2026", "--format", "csv")
        assert bad.returncode == 2 and b"YYYY-MM-DD" in bad.stderr
        bad = run_report(db, park, "daily", "--site", "nowhere", "--format", "csv")
        assert bad.returncode == 2 and b"no site" in bad.stderr


class TestMonthly:
    """The month's rows are its daily means, then the month with its valid days."""

    def test_month_csv(self, day_db: Any) -> None:
        """November: 30 day rows per sensor (the 20th as in the daily report), then the month, not valid with
        one day of data."""
        db, points, park = day_db
        done = run_report(db, park, "monthly", "--month", "2026-11", "--site", "hw_center", "--format", "csv")
        assert done.returncode == 0, done.stderr.decode()
        rows = list(csv.reader(io.StringIO(done.stdout.decode())))[1:]
        so2 = [r for r in rows if r[2] == "so2"]
        assert [r[3] for r in so2] == ["24h"] * 30 + ["month"]
        day20 = next(r for r in expected_rows(points) if r[2] == "so2" and r[3] == "24h")
        assert so2[19] == day20
        assert so2[-1][4:8] == ["2026-11-01T00:00:00+08:00", "", "1", "false"]


class TestDashboardsShowTheReportsMeans:
    """The regulatory panels' hourly and daily means are the report's, valid readings only."""

    def test_regulatory_panels_equal_the_report(self, day_db: Any, tmp_path: Path) -> None:
        """so2's 1 h and 24 h panels and nh3_n's 24 h panel (with readings flagged M and D added to 11:00, which
        neither may count), run as Grafana expands them, give the CSV's means; for cod's day, short of 20 valid
        hours, the panel shows the mean of its 19 valid hours where the report prints none."""
        db, _, park_path = day_db
        series = "reading,asset=effluent,sensor=nh3_n,site=wwtp"
        at = DAY0 + 11 * HOUR
        db.write([f'{series} value=50,flag="M" {at + 1}', f'{series} value=70,flag="D",quality="bad" {at + 2}',
                  f'{series} value=2.5,flag="S" {at + 3}'])
        try:
            self._compare(db, park_path, tmp_path)
        finally:  # the module's other tests see the day as it was
            db.raw_query(f"DELETE FROM reading WHERE time >= {at + 1}ms AND time <= {at + 3}ms", epoch=None)

    def _compare(self, db: Any, park_path: Path, tmp_path: Path) -> None:
        import asyncio

        from dashboards.build import site_dashboard
        from dashboards.grafana import iter_panels
        from dashboards.macros import TimeRange
        from dashboards.query import run_panel
        from smartpark.influx import InfluxClient

        park = load_park(park_path)
        s = settings(db.url, db.db, tmp_path, park_path)
        report = {(r["sensor"], r["period"], r["start"]): r for r in csv.DictReader(io.StringIO(
            build_daily(s, park, date(2026, 11, 20), fmt="csv").decode()))}
        assert report["nh3_n", "1h", "2026-11-20T11:00:00+08:00"]["valid_count"] == "61"  # S counts, M and D not
        tr = TimeRange(DAY0, DAY0 + 24 * HOUR - 1)

        async def panels() -> dict[str, list[list[Any]]]:
            out: dict[str, list[list[Any]]] = {}
            async with InfluxClient(s.influx()) as client:
                for site_id in ("wwtp", "hw_center"):
                    site = park.site(site_id)
                    assert site is not None
                    for p in iter_panels(site_dashboard(park, site)):
                        if "vs limit" in str(p.get("title")):
                            res = await run_panel(client, site_id, p, tr, {})
                            out[str(p["title"])] = [row for ser in res.series for row in ser.values]
            return out

        got = asyncio.run(panels())

        def panel(sensor_name: str, what: str) -> list[list[Any]]:
            return next(v for k, v in got.items() if sensor_name in k and what in k)

        hourly = {datetime.fromtimestamp(t / 1000, TZ).isoformat(): m for t, m in panel("Sulphur dioxide", "hourly")}
        assert len(hourly) == 24
        for start, mean in hourly.items():
            assert f"{mean:.4f}" == report["so2", "1h", start]["mean"], start
        for name, key in (("Sulphur dioxide", "so2"), ("Ammonia nitrogen", "nh3_n")):
            (t, mean), = panel(name, "daily")
            assert t == DAY0 and f"{mean:.4f}" == report[key, "24h", "2026-11-20T00:00:00+08:00"]["mean"]
        # 19 valid hours: the report has no daily mean, the panel shows the mean of those hours
        cod_hours = [float(r["mean"]) for k, r in report.items()
                     if k[0] == "cod" and k[1] == "1h" and r["valid"] == "true"]
        (t, mean), = panel("Chemical oxygen demand", "daily")
        assert report["cod", "24h", "2026-11-20T00:00:00+08:00"]["mean"] == ""
        assert math.isclose(mean, sum(cod_hours) / 19, rel_tol=1e-4) and len(cod_hours) == 19
