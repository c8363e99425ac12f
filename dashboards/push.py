"""Upload the generated dashboards through Grafana's HTTP API, idempotently by uid.

Provisioning (``dashboards/provisioning/``) is the way for a Grafana we start ourselves; ``push`` is for a
Grafana someone else runs. Each site gets its own folder (uid ``smartpark-<site>``), the park-wide
dashboards go to a ``smartpark`` folder; folders are created when missing and renamed when their title
changed; dashboards are saved with ``overwrite: true`` so that pushing twice is the same as once.

The token comes from the environment (``GRAFANA_TOKEN``: a service-account token), the URL from
``GRAFANA_URL`` or ``--grafana-url``. There is deliberately no default password.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from grafana_client import AsyncGrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException

from smartpark.errors import ConfigError
from smartpark.park import Park

from .build import bilingual
from .grafana import Json

log = logging.getLogger(__name__)
PARK_FOLDER_UID = "smartpark"


class PushError(Exception):
    """Grafana refused a folder or a dashboard; ``status`` is its HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int = 0) -> None:
        self.status = status
        super().__init__(message)


@dataclass
class PushReport:
    folders_created: list[str] = field(default_factory=list)
    folders_updated: list[str] = field(default_factory=list)
    dashboards: dict[str, str] = field(default_factory=dict)  # uid -> folder uid


def folder_for(dash: Json) -> str:
    """The folder uid of a dashboard: its site's folder, or the park folder."""
    for tag in dash.get("tags", []):
        if dash["uid"] == f"smartpark-site-{tag}":
            return f"smartpark-{tag}"
    return PARK_FOLDER_UID


def folder_titles(park: Park) -> dict[str, str]:
    titles = {PARK_FOLDER_UID: bilingual(park.park.name_zh, park.park.name)}
    for site in park.sites:
        titles[f"smartpark-{site.id}"] = bilingual(site.name_zh, site.name)
    return titles


def connect(url: str, token: str | None, timeout: float = 10.0) -> AsyncGrafanaApi:
    if not url:
        raise ConfigError("no Grafana URL: set GRAFANA_URL or --grafana-url", key="GRAFANA_URL")
    if not token:
        raise ConfigError("no Grafana token: set GRAFANA_TOKEN (a service-account token)", key="GRAFANA_TOKEN")
    return AsyncGrafanaApi.from_url(url, credential=token, timeout=timeout)


async def _ensure_folder(api: AsyncGrafanaApi, uid: str, title: str, report: PushReport) -> None:
    try:
        existing: dict[str, Any] = await api.folder.get_folder(uid)
    except GrafanaClientError as exc:
        if exc.status_code != 404:
            raise PushError(f"Grafana refused to read folder {uid}: {exc.message}", exc.status_code) from exc
        await api.folder.create_folder(title, uid=uid)
        report.folders_created.append(uid)
        return
    if existing.get("title") != title:
        await api.folder.update_folder(uid, title=title, overwrite=True)
        report.folders_updated.append(uid)


async def push(api: AsyncGrafanaApi, park: Park, dashboards: list[Json], *,
               message: str = "smartpark dashboards push") -> PushReport:
    """Create the folders that are missing, then save every dashboard (overwrite by uid)."""
    report = PushReport()
    titles = folder_titles(park)
    try:
        for uid in sorted({folder_for(d) for d in dashboards}):
            await _ensure_folder(api, uid, titles.get(uid, uid), report)
        for dash in dashboards:
            body = {"dashboard": {**dash, "id": None}, "folderUid": folder_for(dash), "overwrite": True,
                    "message": message}
            answer = await api.dashboard.update_dashboard(body)
            if isinstance(answer, dict) and answer.get("status") not in (None, "success"):
                raise PushError(f"Grafana did not save {dash['uid']}: {answer}")
            report.dashboards[dash["uid"]] = folder_for(dash)
            log.info("pushed %s to folder %s", dash["uid"], folder_for(dash))
    except GrafanaException as exc:
        raise PushError(f"Grafana: {exc.message}", exc.status_code or 0) from exc
    return report
