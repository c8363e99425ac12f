"""Reports as bytes, for the command line and for any service that serves them (the operator console)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from smartpark.config import Settings
from smartpark.errors import UsageError
from smartpark.influx import InfluxClient
from smartpark.park import Park

from .compute import Report, daily_report, monthly_report
from .render import RENDERERS


def report_day(text: str | None, tz: str) -> date:
    """``YYYY-MM-DD``, or yesterday in the park's time zone when empty (CONTRACT §11)."""
    if not text:
        return datetime.now(ZoneInfo(tz)).date() - timedelta(days=1)
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"the date must be YYYY-MM-DD, got {text[:40]!r}") from None


def report_month(text: str | None, tz: str) -> tuple[int, int]:
    """``YYYY-MM``, or last month in the park's time zone when empty."""
    if not text:
        last = datetime.now(ZoneInfo(tz)).date().replace(day=1) - timedelta(days=1)
        return last.year, last.month
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", text):
        raise UsageError(f"the month must be YYYY-MM, got {text[:40]!r}")
    return int(text[:4]), int(text[5:])


def report_name(kind: str, period: str, site: str | None, fmt: str) -> str:
    """``smartpark-daily-2026-11-20[-wwtp].pdf``: the file name the CLI writes and the console offers."""
    return f"smartpark-{kind}-{period}{'-' + site if site else ''}.{fmt}"


async def render(report: Report, fmt: str) -> bytes:
    """Render off the event loop: a PDF of a whole park takes a noticeable part of a second."""
    return await asyncio.to_thread(RENDERERS[fmt], report)


def _check(park: Park, site: str | None, fmt: str) -> None:
    if fmt not in RENDERERS:
        raise UsageError(f"unknown report format {fmt!r}; one of {', '.join(RENDERERS)}")
    if site is not None and park.site(site) is None:
        raise UsageError(f"no site {site!r} in the park model")


async def daily(db: InfluxClient, park: Park, day: date, site: str | None = None, fmt: str = "pdf") -> bytes:
    """The daily report of ``day`` (in the park's time zone) rendered as ``fmt``, with an open client."""
    _check(park, site, fmt)
    return await render(await daily_report(db, park, day, site), fmt)


async def monthly(db: InfluxClient, park: Park, year: int, month: int, site: str | None = None,
                  fmt: str = "pdf") -> bytes:
    _check(park, site, fmt)
    return await render(await monthly_report(db, park, year, month, site), fmt)


async def _with_client(settings: Settings, make: Callable[[InfluxClient], Awaitable[bytes]]) -> bytes:
    async with InfluxClient(settings.influx(), timeout=120.0) as db:
        return await make(db)


def build_daily(settings: Settings, park: Park, day: date, site: str | None = None, fmt: str = "pdf") -> bytes:
    """``reports.build_daily(settings, park, date(2026, 11, 20), fmt="csv") -> bytes`` (not in an event loop)."""
    return asyncio.run(_with_client(settings, lambda db: daily(db, park, day, site, fmt)))


def build_monthly(settings: Settings, park: Park, year: int, month: int, site: str | None = None,
                  fmt: str = "pdf") -> bytes:
    return asyncio.run(_with_client(settings, lambda db: monthly(db, park, year, month, site, fmt)))


__all__ = ["Report", "build_daily", "build_monthly", "daily", "monthly", "report_day", "report_month",
           "report_name"]
