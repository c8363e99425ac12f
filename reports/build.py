"""Reports as bytes, for the command line and for any service that serves them (the operator console)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import date

from smartpark.config import Settings
from smartpark.errors import UsageError
from smartpark.influx import InfluxClient
from smartpark.park import Park

from .compute import Report, daily_report, monthly_report
from .render import RENDERERS


def _check(park: Park, site: str | None, fmt: str) -> None:
    if fmt not in RENDERERS:
        raise UsageError(f"unknown report format {fmt!r}; one of {', '.join(RENDERERS)}")
    if site is not None and park.site(site) is None:
        raise UsageError(f"no site {site!r} in the park model")


async def daily(db: InfluxClient, park: Park, day: date, site: str | None = None, fmt: str = "pdf") -> bytes:
    """The daily report of ``day`` (in the park's time zone) rendered as ``fmt``, with an open client."""
    _check(park, site, fmt)
    return RENDERERS[fmt](await daily_report(db, park, day, site))


async def monthly(db: InfluxClient, park: Park, year: int, month: int, site: str | None = None,
                  fmt: str = "pdf") -> bytes:
    _check(park, site, fmt)
    return RENDERERS[fmt](await monthly_report(db, park, year, month, site))


async def _with_client(settings: Settings, make: Callable[[InfluxClient], Awaitable[bytes]]) -> bytes:
    async with InfluxClient(settings.influx(), timeout=120.0) as db:
        return await make(db)


def build_daily(settings: Settings, park: Park, day: date, site: str | None = None, fmt: str = "pdf") -> bytes:
    """``reports.build_daily(settings, park, date(2026, 11, 20), fmt="csv") -> bytes`` (not in an event loop)."""
    return asyncio.run(_with_client(settings, lambda db: daily(db, park, day, site, fmt)))


def build_monthly(settings: Settings, park: Park, year: int, month: int, site: str | None = None,
                  fmt: str = "pdf") -> bytes:
    return asyncio.run(_with_client(settings, lambda db: monthly(db, park, year, month, site, fmt)))


__all__ = ["Report", "build_daily", "build_monthly", "daily", "monthly"]
