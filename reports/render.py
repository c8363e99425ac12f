"""A :class:`~reports.compute.Report` as csv (exactly CONTRACT §11), xlsx, html or pdf, each as bytes.

Renderers are registered by name in :data:`RENDERERS`; adding a format touches that one map.
"""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from smartpark.averages import FIVE_MIN_MS

from .compute import Period, Report, SensorReport

CSV_COLUMNS = ("site", "asset", "sensor", "period", "start", "mean", "valid_count", "valid", "limit", "exceeded")
CJK_FONT = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")

TITLES = {"daily": ("环境监测日报", "Daily environmental compliance report"),
          "monthly": ("环境监测月报", "Monthly environmental compliance report")}
HEAD = {  # (中文, English)
    "hour": ("时段", "Hour"), "day": ("日期", "Day"), "mean": ("均值", "Mean"), "n": ("有效数据", "Valid n"),
    "valid": ("有效", "Valid"), "limit": ("限值", "Limit"), "exceeded": ("超标", "Exceeded"),
    "capture": ("数据采集率", "Data capture"), "alarms": ("报警与操作", "Alarms and operator actions"),
    "excursions": ("五分钟超限", "Five-minute excursions"), "verdict": ("结论", "Verdict"),
    "days": ("有效天数", "Valid days"), "hours": ("有效小时", "Valid hours"),
    "exceed_periods": ("超标时段", "Exceedances"),
}


def fmt_mean(value: float | None) -> str:
    """Means are written with four decimals (the instruments' resolution is coarser)."""
    return "" if value is None else f"{value:.4f}"


def _bool(b: bool) -> str:
    return "true" if b else "false"


def csv_rows(report: Report) -> list[list[str]]:
    rows: list[list[str]] = []
    for site in report.sites:
        for s in site.sensors:
            for p in s.hours:
                rows.append(_csv_row(report, s, p))
        for s in site.sensors:
            rows.append(_csv_row(report, s, s.total))
    return rows


def _csv_row(report: Report, s: SensorReport, p: Period) -> list[str]:
    return [s.ref.site, s.ref.asset, s.ref.sensor.id, p.period, report.iso(p.start), fmt_mean(p.mean),
            str(p.valid_count), _bool(p.valid), p.limit, _bool(p.exceeded)]


def render_csv(report: Report) -> bytes:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    w.writerows(csv_rows(report))
    return out.getvalue().encode("utf-8")


def _verdict(p: Period) -> tuple[str, str]:
    if not p.valid:
        return "数据不足", "insufficient data"
    if not p.limit:
        return "无限值", "no limit"
    return ("超标", "exceeded") if p.exceeded else ("达标", "compliant")


def _title(report: Report) -> str:
    zh, en = TITLES[report.kind]
    return f"{zh} {en} — {report.park_name} — {report.label}"


def _alarm_rows(alarms: list[dict[str, object]], report: Report) -> list[list[str]]:
    rows = []
    for a in alarms:
        ts = a.get("time")
        stamp = int(ts) / 1000 if ts else None  # type: ignore[call-overload]  # the row's epoch ms
        when = datetime.fromtimestamp(stamp, report.tz).strftime("%m-%d %H:%M:%S") if stamp is not None else ""
        rows.append([when, f"{a.get('asset', '')}/{a.get('sensor', '')}", str(a.get("rule", "")),
                     str(a.get("event", "")), str(a.get("state", "")), str(a.get("operator") or ""),
                     str(a.get("message") or "")[:80]])
    return rows


# ---------------------------------------------------------------------------------------------- xlsx
def render_xlsx(report: Report) -> bytes:
    from openpyxl import Workbook
    from openpyxl.styles import Font

    wb = Workbook()
    wb.remove(wb.active)  # a fresh workbook has one sheet
    bold = Font(bold=True)
    for site in report.sites:
        ws = wb.create_sheet(site.site[:31])
        ws.append([_title(report)])
        ws.append([f"{site.name_zh or ''} {site.name}".strip()])
        unit = "day" if report.kind == "monthly" else "hour"
        header = ["sensor", f"{HEAD[unit][0]} {HEAD[unit][1]}", *(f"{HEAD[k][0]} {HEAD[k][1]}" for k in
                                                                  ("mean", "n", "valid", "limit", "exceeded"))]
        for s in site.sensors:
            ws.append([])
            ws.append([f"{s.ref.key} {s.ref.sensor.name_zh or ''} {s.ref.sensor.name} ({s.ref.sensor.unit})"])
            ws.append(header)
            for cell in ws[ws.max_row]:
                cell.font = bold
            for p in [*s.hours, s.total]:
                ws.append([s.ref.key, report.iso(p.start), p.mean, p.valid_count, p.valid, p.limit or None,
                           p.exceeded])
            ws.append([s.ref.key, f"{HEAD['capture'][0]} {HEAD['capture'][1]}", round(s.capture, 4)])
            if s.excursions:
                ws.append([s.ref.key, f"{HEAD['excursions'][0]} {HEAD['excursions'][1]}", len(s.excursions)])
        al = wb.create_sheet(f"{site.site[:24]}_alarms")
        al.append(["time", "sensor", "rule", "event", "state", "operator", "message"])
        for row in _alarm_rows(site.alarms, report):
            al.append(row)
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


# ---------------------------------------------------------------------------------------------- html
def render_html(report: Report) -> bytes:
    e = html.escape
    parts = [f"<!doctype html><html lang='zh'><meta charset='utf-8'><title>{e(_title(report))}</title>",
             "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin:.5em 0}"
             "td,th{border:1px solid #999;padding:2px 6px;font-size:12px}.bad{color:#b00;font-weight:bold}"
             ".inv{color:#888}@media print{section{page-break-after:always}}</style>",
             f"<h1>{e(_title(report))}</h1>"]
    unit = "day" if report.kind == "monthly" else "hour"
    for site in report.sites:
        parts.append(f"<section><h2>{e(site.name_zh or '')} {e(site.name)} ({e(site.site)})</h2>")
        for s in site.sensors:
            zh, en = _verdict(s.total)
            parts.append(f"<h3>{e(s.ref.sensor.name_zh or '')} {e(s.ref.sensor.name)} — {e(s.ref.key)} "
                         f"({e(s.ref.sensor.unit)})</h3><p>{'月' if report.kind == 'monthly' else '日'}均值 "
                         f"{'Monthly' if report.kind == 'monthly' else 'Daily'} mean: "
                         f"<b>{fmt_mean(s.total.mean) or '—'}</b> · "
                         f"{HEAD['limit'][0]} {HEAD['limit'][1]}: {e(s.total.limit or '—')} · "
                         f"{HEAD['verdict'][0]} {HEAD['verdict'][1]}: <b>{zh} {en}</b> · "
                         f"{HEAD['capture'][0]} {HEAD['capture'][1]}: {s.capture:.1%} · "
                         f"{HEAD['exceed_periods'][0]} {HEAD['exceed_periods'][1]}: {len(s.exceedance_hours)}</p>")
            parts.append("<table><tr>" + "".join(f"<th>{HEAD[k][0]}<br>{HEAD[k][1]}</th>" for k in
                                                  (unit, "mean", "n", "valid", "limit", "exceeded")) + "</tr>")
            for p in s.hours:
                cls = " class='bad'" if p.exceeded else "" if p.valid else " class='inv'"
                label = report.iso(p.start)[:10] if report.kind == "monthly" else report.iso(p.start)[11:16]
                parts.append(f"<tr{cls}><td>{label}</td><td>{fmt_mean(p.mean)}</td><td>{p.valid_count}</td>"
                             f"<td>{_bool(p.valid)}</td><td>{e(p.limit)}</td><td>{_bool(p.exceeded)}</td></tr>")
            parts.append("</table>")
            if s.excursions:
                parts.append(f"<p>{HEAD['excursions'][0]} {HEAD['excursions'][1]}: " + ", ".join(
                    f"{report.iso(t)[11:16]} {m:.1f}" for t, m in s.excursions) + "</p>")
        parts.append(f"<h3>{HEAD['alarms'][0]} {HEAD['alarms'][1]}</h3><table><tr><th>time</th><th>sensor</th>"
                     "<th>rule</th><th>event</th><th>state</th><th>operator</th><th>message</th></tr>")
        for row in _alarm_rows(site.alarms, report):
            parts.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>")
        parts.append("</table></section>")
    parts.append("</html>")
    return "\n".join(parts).encode("utf-8")


# ---------------------------------------------------------------------------------------------- pdf
_FONT = "smartpark-cjk"


def _font() -> str:
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    if _FONT not in pdfmetrics.getRegisteredFontNames():
        if not CJK_FONT.exists():
            raise RuntimeError(f"the CJK font {CJK_FONT} is missing (Debian package fonts-wqy-microhei)")
        pdfmetrics.registerFont(TTFont(_FONT, str(CJK_FONT), subfontIndex=0))
    return _FONT


def _trend(s: SensorReport, report: Report, font: str, width: float, height: float) -> object:
    """The sensor's valid readings (five-minute means, or the days of a month) with its regulatory limits as
    dashed red lines: a vector drawing, a hundred times cheaper than a plotted image."""
    from reportlab.graphics.shapes import Drawing, Line, PolyLine, String
    from reportlab.lib import colors

    span = report.end - report.start
    step = FIVE_MIN_MS if report.kind == "daily" else 86_400_000
    sums: dict[int, list[float]] = {}
    for ts, v in s.trend:
        sums.setdefault((ts - report.start) // step, []).append(v)
    pts = sorted((k * step + step / 2, sum(v) / len(v)) for k, v in sums.items())
    limits = [x for reg in s.ref.sensor.regulatory
              for x in (reg.limit if isinstance(reg.limit, tuple) else (reg.limit,))]
    values = [float(v) for _, v in pts] + [float(v) for v in limits]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 1, hi + 1
    lo, hi = lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo)
    left, bottom, right, top = 26.0, 12.0, width - 4, height - 10
    d = Drawing(width, height)

    def x(t: float) -> float:
        return left + (right - left) * t / span

    def y(v: float) -> float:
        return bottom + (top - bottom) * (v - lo) / (hi - lo)

    d.add(Line(left, bottom, right, bottom, strokeColor=colors.grey, strokeWidth=0.4))
    d.add(Line(left, bottom, left, top, strokeColor=colors.grey, strokeWidth=0.4))
    for v in (lo, (lo + hi) / 2, hi):
        d.add(String(left - 2, y(v) - 2, f"{v:.4g}", fontName=font, fontSize=5, textAnchor="end"))
    ticks = range(0, 25, 6) if report.kind == "daily" else range(0, span // 86_400_000 + 1, 5)
    for k in ticks:
        tick = k * (3_600_000 if report.kind == "daily" else 86_400_000)
        d.add(String(x(tick), bottom - 7, str(k), fontName=font, fontSize=5, textAnchor="middle"))
    for lim in limits:
        d.add(Line(left, y(lim), right, y(lim), strokeColor=colors.HexColor("#c0392b"), strokeWidth=0.6,
                   strokeDashArray=[2, 2]))
    run: list[float] = []
    last: float | None = None
    for t, v in pts:  # a gap of more than one step breaks the line, as a missing hour should show
        if last is not None and t - last > 1.5 * step and len(run) >= 4:
            d.add(PolyLine(run, strokeColor=colors.HexColor("#1f5fa8"), strokeWidth=0.6))
            run = []
        elif last is not None and t - last > 1.5 * step:
            run = []
        run += [x(t), y(v)]
        last = t
    if len(run) >= 4:
        d.add(PolyLine(run, strokeColor=colors.HexColor("#1f5fa8"), strokeWidth=0.6))
    d.add(String(left, height - 7, f"{s.ref.sensor.id} ({s.ref.sensor.unit}) · "
                 + ("h" if report.kind == "daily" else "day"), fontName=font, fontSize=6))
    return d


def render_pdf(report: Report) -> bytes:
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.platypus import PageBreak, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    font = _font()
    h1 = ParagraphStyle("h1", fontName=font, fontSize=13, leading=17)
    h2 = ParagraphStyle("h2", fontName=font, fontSize=11, leading=14, spaceBefore=4)
    h3 = ParagraphStyle("h3", fontName=font, fontSize=9, leading=12, spaceBefore=6)
    body = ParagraphStyle("body", fontName=font, fontSize=7.5, leading=10)
    unit = "day" if report.kind == "monthly" else "hour"
    story: list[object] = []
    for i, site in enumerate(report.sites):
        if i:
            story.append(PageBreak())
        story += [Paragraph(html.escape(_title(report)), h1),
                  Paragraph(html.escape(f"{site.name_zh or ''} {site.name} ({site.site})"), h2)]
        for s in site.sensors:
            zh, en = _verdict(s.total)
            story.append(Paragraph(html.escape(f"{s.ref.sensor.name_zh or ''} {s.ref.sensor.name} — {s.ref.key} "
                                               f"({s.ref.sensor.unit})"), h3))
            summary = (f"{'月' if report.kind == 'monthly' else '日'}均值 mean {fmt_mean(s.total.mean) or '—'} · "
                       f"限值 limit {s.total.limit or '—'} · 结论 verdict {zh} {en} · "
                       f"{HEAD['days' if unit == 'day' else 'hours'][0]} {s.total.valid_count} · "
                       f"采集率 capture {s.capture:.1%} · 超标 exceedances {len(s.exceedance_hours)}")
            if s.excursions:
                summary += f" · 五分钟超限 5-min excursions {len(s.excursions)}"
            story.append(Paragraph(html.escape(summary), body))
            rows = [[f"{HEAD[k][0]}\n{HEAD[k][1]}" for k in (unit, "mean", "n", "valid")]]
            style = [("FONT", (0, 0), (-1, -1), font, 6), ("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
                     ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#dde6f0"))]
            half = (len(s.hours) + 1) // 2
            for j, p in enumerate(s.hours):
                label = report.iso(p.start)[5:10] if report.kind == "monthly" else report.iso(p.start)[11:16]
                cells = [label, fmt_mean(p.mean), str(p.valid_count), "√" if p.valid else "×"]
                if j < half:
                    rows.append(cells)
                else:
                    rows[j - half + 1] += cells
                if p.exceeded:
                    col = 0 if j < half else 4
                    style.append(("TEXTCOLOR", (col, j % half + 1), (col + 3, j % half + 1), colors.red))
            if len(s.hours) > 1:
                rows[0] += rows[0][:4]
            rows = [r + [""] * (len(rows[0]) - len(r)) for r in rows]
            widths = [11 * mm, 15 * mm, 15 * mm, 9 * mm] * (len(rows[0]) // 4)
            table = Table(rows, style=TableStyle(style), colWidths=widths, rowHeights=[15] + [8.5] * (len(rows) - 1))
            img = _trend(s, report, font, 72 * mm, 30 * mm)
            story.append(Table([[table, img]], style=TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP")])))
        story += [Spacer(1, 4), Paragraph(f"{HEAD['alarms'][0]} {HEAD['alarms'][1]}", h3)]
        alarm_rows = _alarm_rows(site.alarms, report)
        if alarm_rows:
            story.append(Table([["time", "sensor", "rule", "event", "state", "operator", "message"], *alarm_rows],
                               style=TableStyle([("FONT", (0, 0), (-1, -1), font, 6),
                                                 ("GRID", (0, 0), (-1, -1), 0.25, colors.grey)])))
        else:
            story.append(Paragraph("无 none", body))
    out = io.BytesIO()
    doc = SimpleDocTemplate(out, pagesize=A4, leftMargin=12 * mm, rightMargin=12 * mm, topMargin=12 * mm,
                            bottomMargin=12 * mm, title=_title(report), author="smartpark")
    doc.build(story)
    return out.getvalue()


RENDERERS: dict[str, Callable[[Report], bytes]] = {"csv": render_csv, "xlsx": render_xlsx, "html": render_html,
                                                   "pdf": render_pdf}
