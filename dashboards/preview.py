"""PNG previews of the dashboards, drawn with matplotlib from the very queries Grafana would run.

For people without a Grafana (reviewers, the README, a report): each dashboard becomes one image laid out
by the panels' ``gridPos``, each panel drawn from :func:`dashboards.query.run_dashboard` results with its
threshold bands and lines. It is a preview, not a second Grafana: time series, stat, table, pie chart and
state timeline are drawn; transformations other than sort and limit are not.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import matplotlib

matplotlib.use("Agg")  # no display: files only
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
from matplotlib import font_manager
from matplotlib.axes import Axes

from smartpark.influx import InfluxClient

from .grafana import Json
from .macros import TimeRange, panel_interval_ms
from .query import PanelResult, Series, annotation_queries, run_dashboard

UNIT_H_IN = 0.36  # inches per Grafana grid unit of height
WIDTH_IN = 20.0
COLORS = {"red": "#d62728", "orange": "#ff7f0e", "green": "#2ca02c", "yellow": "#e6c229", "blue": "#1f77b4",
          "transparent": None}
_CJK = re.compile(r"[\u2e80-\u9fff\uf900-\ufaff\uff00-\uffef\u3000-\u303f]+")
CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans SC", "WenQuanYi Micro Hei", "WenQuanYi Zen Hei", "SimHei",
             "Source Han Sans SC", "AR PL UMing CN")


def cjk_font() -> str | None:
    """A font that can draw Chinese, if the machine has one.

    matplotlib caches its font list once: a CJK font installed later (``make`` installs
    ``fonts-wqy-microhei``) is found by looking at the system's font files and adding it.
    """
    names = {f.name for f in font_manager.fontManager.ttflist}
    found = next((n for n in CJK_FONTS if n in names), None)
    if found is None:
        for path in font_manager.findSystemFonts():
            if re.search(r"wqy|wenquanyi|notosanscjk|noto.*cjk|sourcehansans", path, re.I):
                font_manager.fontManager.addfont(path)
        names = {f.name for f in font_manager.fontManager.ttflist}
        found = next((n for n in CJK_FONTS if n in names), None)
    return found


def display_title(title: str, cjk: bool) -> str:
    """Without a CJK font the Chinese half of ``中文 · English`` would be boxes: keep the English, and drop
    what is left of Chinese inside it (``station (泛能站)`` -> ``station``)."""
    if cjk or not _CJK.search(title):
        return title
    en = title.split(" · ")[-1] if " · " in title else title
    en = re.sub(r"\(\s*\)", "", _CJK.sub("", en))
    en = re.sub(r"\s+([:,.;)])", r"\1", re.sub(r"\s+", " ", en))
    return en.strip(" ·") or _CJK.sub("?", title)


def _color(name: str | None) -> str | None:
    if name is None:
        return None
    return COLORS.get(name, name)


def _steps(thresholds: Json | None) -> list[tuple[float, str]]:
    steps = (thresholds or {}).get("steps", [])
    return [(-math.inf if s.get("value") is None else float(s["value"]), s["color"]) for s in steps]


def _threshold_color(value: float, thresholds: Json | None) -> str | None:
    color = None
    for v, c in _steps(thresholds):
        if value >= v:
            color = c
    return _color(color)


def _field_thresholds(panel: Json, name: str) -> Json | None:
    fc = panel.get("fieldConfig", {})
    for o in fc.get("overrides", []):
        if o.get("matcher", {}).get("options") == name:
            for prop in o.get("properties", []):
                if prop.get("id") == "thresholds":
                    return prop["value"]
    return fc.get("defaults", {}).get("thresholds")


def _times(series: Series) -> list[dt.datetime]:
    return [dt.datetime.fromtimestamp(t / 1000, tz=dt.UTC) for t in series.column("time")]


def _num(ms: int) -> float:
    """Epoch milliseconds as a matplotlib date number."""
    return float(mdates.date2num(dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)))


def _value_cols(series: Series) -> list[str]:
    return [c for c in series.columns if c != "time"]


def _numbers(values: Iterable[Any]) -> list[float]:
    return [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]


def _reduce(values: list[float], calc: str) -> float | None:
    if not values:
        return None
    if calc == "mean":
        return sum(values) / len(values)
    if calc == "max":
        return max(values)
    if calc == "sum":
        return sum(values)
    return values[-1]


def _draw_thresholds(ax: Axes, thresholds: Json | None, mode: str) -> None:
    if mode == "off":
        return
    steps = _steps(thresholds)
    lo, hi = ax.get_ylim()
    for i, (v, c) in enumerate(steps):
        color = _color(c)
        top = steps[i + 1][0] if i + 1 < len(steps) else math.inf
        if color and "area" in mode:
            ax.axhspan(max(v, lo), min(top, hi), color=color, alpha=0.12, lw=0)
        if color and math.isfinite(v) and lo <= v <= hi:
            ax.axhline(v, color=color, lw=1, ls="--")
    ax.set_ylim(lo, hi)


def _timeseries(ax: Axes, res: PanelResult, tr: TimeRange, marks: list[tuple[int, str]], tz: dt.tzinfo) -> None:
    panel = res.panel
    defaults = panel["fieldConfig"]["defaults"]
    custom = defaults.get("custom", {})
    ys: list[float] = []
    interval_days = panel_interval_ms(panel, tr) / 86_400_000
    for s in res.series:
        t = _times(s)
        for col in _value_cols(s):
            vals = [float(v) if isinstance(v, (int, float)) else math.nan for v in s.column(col)]
            ys.extend(v for v in vals if not math.isnan(v))
            if custom.get("drawStyle") == "bars":
                nums = mdates.date2num(t)
                gaps = [b - a for a, b in itertools.pairwise(nums) if b > a]
                width = (min(gaps) if gaps else interval_days) * 0.8
                ax.bar(t, vals, width=width, label=s.name, alpha=0.8, align="edge")  # type: ignore[arg-type]  # matplotlib's stubs take no datetimes; it converts them
            else:
                marker = "o" if custom.get("showPoints") == "always" else None
                ax.plot(t, vals, lw=1, label=s.name, marker=marker, ms=3)  # type: ignore[arg-type]  # matplotlib's stubs take no datetimes; it converts them
    lo = min([*ys, custom.get("axisSoftMin", math.inf)]) if ys else custom.get("axisSoftMin", 0)
    hi = max([*ys, custom.get("axisSoftMax", -math.inf)]) if ys else custom.get("axisSoftMax", 1)
    if lo == hi or not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = (lo - 1, hi + 1) if math.isfinite(lo) else (0, 1)
    pad = (hi - lo) * 0.08
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlim(_num(tr.from_ms), _num(tr.to_ms))
    _draw_thresholds(ax, defaults.get("thresholds"), custom.get("thresholdsStyle", {}).get("mode", "off"))
    for ts, color in marks:  # annotations: Grafana draws them on every time-series panel of the dashboard
        ax.axvline(_num(ts), color=_color(color) or "grey", lw=0.8, alpha=0.7, ls=":")
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=tz))
    ax.tick_params(labelsize=6)
    unit = str(defaults.get("unit", ""))
    if unit:
        ax.set_ylabel(unit.removeprefix("suffix: "), fontsize=6)
    if res.series and len(res.series) <= 8:
        ax.legend(fontsize=5, loc="upper left")


def _stat(ax: Axes, res: PanelResult) -> None:
    panel = res.panel
    calc = panel["options"]["reduceOptions"]["calcs"][0]
    no_value = panel["fieldConfig"]["defaults"].get("noValue", "No data")
    items: list[tuple[str, str, str | None]] = []
    for s in res.series:
        cols = _value_cols(s)
        v = _reduce(_numbers(s.column(cols[0])), calc) if cols else None
        text = no_value if v is None else (f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}")
        color = _threshold_color(v, _field_thresholds(panel, s.name)) if v is not None else None
        items.append((s.name, text, color))
    if not items:
        items = [("", no_value, None)]
    ax.set_axis_off()
    n = len(items)
    for i, (name, text, color) in enumerate(items):
        x = (i + 0.5) / n
        ax.text(x, 0.55, text, ha="center", va="center", fontsize=16, color=color or "black",
                transform=ax.transAxes, weight="bold")
        if (name and n > 1) or panel["options"].get("textMode") == "value_and_name":
            ax.text(x, 0.2, name, ha="center", va="center", fontsize=7, transform=ax.transAxes)


def _table(ax: Axes, res: PanelResult, cjk: bool, tz: dt.tzinfo, max_rows: int = 10) -> None:
    ax.set_axis_off()
    rows: list[list[str]] = []
    header: list[str] = []
    for s in res.series:
        cols = [c for c in s.columns if c != "time"]
        tag_keys = sorted(s.tags)
        header = ["time", *tag_keys, *cols]
        for r in s.values:
            rec = dict(zip(s.columns, r, strict=False))
            t = dt.datetime.fromtimestamp(rec["time"] / 1000, tz=tz).strftime("%m-%d %H:%M")
            rows.append([t, *(s.tags[k] for k in tag_keys), *(_cell(rec.get(c)) for c in cols)])
    for tf in res.panel.get("transformations", []):
        if tf["id"] == "sortBy" and header:
            key = tf["options"]["sort"][0]
            if key["field"] in header:
                i = header.index(key["field"])
                rows.sort(key=lambda r: _sortable(r[i]), reverse=bool(key.get("desc")))
        elif tf["id"] == "limit":
            rows = rows[: int(tf["options"]["limitField"])]
        elif tf["id"] == "organize" and header:
            drop = {k.lower() for k, v in tf["options"].get("excludeByName", {}).items() if v}
            keep = [i for i, h in enumerate(header) if h.lower() not in drop]
            header = [header[i] for i in keep]
            rows = [[r[i] for i in keep] for r in rows]
    if not rows:
        ax.text(0.5, 0.5, "No data", ha="center", va="center", transform=ax.transAxes)
        return
    rows = [[display_title(c, cjk)[:40] for c in r] for r in rows[:max_rows]]
    tbl = ax.table(cellText=rows, colLabels=header, loc="upper center", cellLoc="left")
    tbl.auto_set_font_size(False)
    tbl.set_fontsize(6)


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def _sortable(text: str) -> tuple[int, float | str]:
    try:
        return (0, float(text))
    except ValueError:
        return (1, text)


def _pie(ax: Axes, res: PanelResult) -> None:
    labels, sizes = [], []
    for s in res.series:
        cols = _value_cols(s)
        total = sum(_numbers(s.column(cols[0]))) if cols else 0
        if total > 0:
            labels.append(s.name)
            sizes.append(total)
    if not sizes:
        ax.set_axis_off()
        ax.text(0.5, 0.5, "No data", ha="center", va="center", transform=ax.transAxes)
        return
    ax.pie(sizes, labels=labels, autopct="%1.0f%%", textprops={"fontsize": 7},
           colors=[_color({"high": "red", "medium": "orange", "low": "yellow"}.get(lb, "blue")) or "grey"
                   for lb in labels],
           wedgeprops={"width": 0.45})


def _state_timeline(ax: Axes, res: PanelResult, tr: TimeRange, tz: dt.tzinfo) -> None:
    thresholds = res.panel["fieldConfig"]["defaults"].get("thresholds")
    width = panel_interval_ms(res.panel, tr) / 86_400_000
    for i, s in enumerate(res.series):
        t = mdates.date2num(_times(s))
        cols = _value_cols(s)
        for x, v in zip(t, s.column(cols[0]), strict=False):
            if isinstance(v, (int, float)):
                ax.barh(i, width, left=x, color=_threshold_color(float(v), thresholds) or "grey", height=0.8)
    ax.set_yticks(range(len(res.series)), [s.name for s in res.series], fontsize=7)
    ax.xaxis_date()
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=tz))
    ax.tick_params(labelsize=6)


def draw_dashboard(dash: Json, results: list[PanelResult], tr: TimeRange, path: Path,
                   marks: list[tuple[int, str]] | None = None) -> Path:
    """One PNG for a dashboard, laid out like Grafana's 24-column grid (one grid unit: UNIT_H_IN inches)."""
    cjk = cjk_font()
    if cjk:
        plt.rcParams["font.family"] = [cjk, "DejaVu Sans"]
    bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dash["panels"])
    header_in = 0.8
    height_in = header_in + bottom * UNIT_H_IN + 0.2
    fig = plt.figure(figsize=(WIDTH_IN, height_in), dpi=60)
    fig.text(0.01, 1 - 0.35 / height_in, display_title(dash["title"], bool(cjk)), fontsize=15, weight="bold",
             va="center")
    tz = _zone(dash.get("timezone"))
    fig.text(0.99, 1 - 0.35 / height_in, f"{_fmt(tr.from_ms, tz)} – {_fmt(tr.to_ms, tz)} {tz}", fontsize=10,
             va="center", ha="right")
    by_id = {r.panel.get("id"): r for r in results}
    for p in dash["panels"]:
        gp = p["gridPos"]
        top_in = header_in + gp["y"] * UNIT_H_IN
        title = display_title(p["title"], bool(cjk))
        if p["type"] == "row":
            fig.text(0.01, 1 - (top_in + UNIT_H_IN / 2) / height_in, title, fontsize=12, weight="bold", va="center")
            continue
        inner_top = top_in + 0.32  # room for the panel title
        inner_h = gp["h"] * UNIT_H_IN - 0.32 - (0.35 if p["type"] in ("timeseries", "state-timeline") else 0.1)
        left = gp["x"] / 24 + (0.035 if p["type"] in ("timeseries", "state-timeline") else 0.006)
        width = gp["w"] / 24 - (0.045 if p["type"] in ("timeseries", "state-timeline") else 0.012)
        ax = fig.add_axes((left, 1 - (inner_top + inner_h) / height_in, width, inner_h / height_in))
        fig.text(gp["x"] / 24 + 0.006, 1 - (top_in + 0.16) / height_in, title[:110], fontsize=8, va="center")
        res = by_id.get(p.get("id"))
        if res is None:
            ax.set_axis_off()
            continue
        kind = p["type"]
        if kind == "timeseries":
            _timeseries(ax, res, tr, marks or [], tz)
        elif kind == "stat":
            _stat(ax, res)
        elif kind == "table":
            _table(ax, res, bool(cjk), tz)
        elif kind == "piechart":
            _pie(ax, res)
        elif kind == "state-timeline":
            _state_timeline(ax, res, tr, tz)
        else:
            ax.set_axis_off()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _fmt(ms: int, tz: dt.tzinfo) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=tz).strftime("%Y-%m-%d %H:%M")


def _zone(name: object) -> dt.tzinfo:
    """The dashboard's time zone (an IANA name such as Asia/Shanghai); UTC for ``browser``/``utc``/unknown."""
    try:
        return ZoneInfo(str(name)) if name and str(name) not in ("browser", "utc", "") else dt.UTC
    except (ZoneInfoNotFoundError, ValueError):
        return dt.UTC


async def annotation_marks(client: InfluxClient, dash: Json, tr: TimeRange) -> list[tuple[int, str]]:
    """(time, colour) of every event the dashboard's enabled InfluxQL annotations return."""
    marks: list[tuple[int, str]] = []
    queries = annotation_queries(dash, tr, {})
    for a in dash.get("annotations", {}).get("list", []):
        if a.get("enable") and a.get("name") in queries:
            for result in await client.query(queries[a["name"]]):
                for s in result.get("series", []):
                    i = s["columns"].index("time")
                    marks.extend((int(row[i]), a.get("iconColor", "red")) for row in s.get("values", []))
    return marks


async def render_previews(client: InfluxClient, dashboards: list[Json], tr: TimeRange, out_dir: Path,
                          only: set[str] | None = None) -> list[Path]:
    """Run every panel of every dashboard (or the uids in ``only``) and write ``<out_dir>/<uid>.png``."""
    paths = []
    for dash in dashboards:
        if only and dash["uid"] not in only:
            continue
        results = await run_dashboard(client, dash, tr)
        marks = await annotation_marks(client, dash, tr)
        paths.append(draw_dashboard(dash, results, tr, out_dir / f"{dash['uid']}.png", marks))
    return paths
