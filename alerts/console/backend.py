"""The console's view of the running engine: :class:`alerts.api.Backend` over an :class:`AlertService`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import reports
from smartpark.influx import InfluxClient

if TYPE_CHECKING:
    from ..events import AlarmEvent
    from ..service import AlertService


class ServiceBackend:
    """Reads go to the engine (alarm states) and to InfluxDB (history, trends, latest values)."""

    def __init__(self, service: AlertService, db: InfluxClient) -> None:
        self._svc = service
        self._db = db
        self.park = service.park
        self.hub = service.hub
        self.users = service.users
        self.token = service.token

    def active(self) -> list[dict[str, Any]]:
        return self._svc.engine.active()

    def has_alarm(self, alarm_id: str) -> bool:
        return alarm_id in self._svc.engine.alarms

    async def act(self, action: str, body: dict[str, Any]) -> AlarmEvent:
        return await self._svc.act(action, body)

    def status(self) -> dict[str, Any]:
        return self._svc.status()

    async def rows(self, q: str) -> list[dict[str, Any]]:
        return await self._db.rows(q)

    async def report(self, kind: str, period: str, site: str | None, fmt: str) -> tuple[str, bytes]:
        tz = self.park.park.timezone
        if kind == "daily":
            day = reports.report_day(period, tz)
            data = await reports.daily(self._db, self.park, day, site, fmt)
            return reports.report_name(kind, day.isoformat(), site, fmt), data
        year, month = reports.report_month(period, tz)
        data = await reports.monthly(self._db, self.park, year, month, site, fmt)
        return reports.report_name(kind, f"{year:04d}-{month:02d}", site, fmt), data
