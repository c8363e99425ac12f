"""The environmental compliance officer's reports (CONTRACT §11): hourly means, valid hours, daily and monthly
means against GB 18484 / GB 18918 / GB 13271 limits, in pdf, xlsx, csv and html.

``build_daily(settings, park, day, site, fmt) -> bytes`` is the plain entry point; inside an event loop use
``await daily(db, park, day, site, fmt)`` with an open :class:`smartpark.influx.InfluxClient`.
"""

from .build import build_daily, build_monthly, daily, monthly, report_day, report_month, report_name
from .compute import Period, Report, SensorReport, SiteReport, daily_report, monthly_report
from .render import CSV_COLUMNS, RENDERERS

__all__ = ["CSV_COLUMNS", "RENDERERS", "Period", "Report", "SensorReport", "SiteReport", "build_daily",
           "build_monthly", "daily", "daily_report", "monthly", "monthly_report", "report_day", "report_month",
           "report_name"]
