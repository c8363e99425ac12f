"""Run a dashboard's panels against InfluxDB the way Grafana would, without Grafana.

Template variables are resolved by running their own queries (``SHOW TAG VALUES ...``) with the values of
the variables before them, "All" standing for every value found; each target is expanded by
:func:`dashboards.macros.expand` and sent to InfluxDB's ``/query``. The answers keep InfluxDB's shape
(series with tags, columns and rows), with the legend name Grafana would show (``alias`` patterns).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from smartpark.influx import InfluxClient

from .grafana import Json, iter_panels
from .macros import TimeRange, expand, format_variable, panel_interval_ms

_ALIAS = re.compile(r"\$(?:tag_(\w+)|(col)|(measurement)|(m))\b|\[\[tag_(\w+)\]\]")


@dataclass
class Series:
    name: str
    columns: list[str]
    values: list[list[Any]]
    tags: dict[str, str] = field(default_factory=dict)
    ref_id: str = "A"

    def column(self, name: str) -> list[Any]:
        i = self.columns.index(name)
        return [row[i] for row in self.values]


@dataclass
class PanelResult:
    dashboard_uid: str
    panel: Json
    queries: dict[str, str]  # refId -> expanded InfluxQL
    series: list[Series]

    @property
    def title(self) -> str:
        return str(self.panel.get("title", ""))

    @property
    def has_data(self) -> bool:
        return any(s.values for s in self.series)


def legend_name(alias: str | None, measurement: str, column: str, tags: dict[str, str]) -> str:
    """Grafana's InfluxQL series naming: the alias with ``$tag_x``/``$col``/``$m`` replaced, else
    ``measurement.column {k: v}``."""
    if not alias:
        suffix = (" {" + ", ".join(f"{k}: {v}" for k, v in sorted(tags.items())) + "}") if tags else ""
        return f"{measurement}.{column}{suffix}"

    def sub(m: re.Match[str]) -> str:
        tag = m.group(1) or m.group(5)
        if tag:
            return tags.get(tag, m.group(0))
        if m.group(2):
            return column
        return measurement

    return _ALIAS.sub(sub, alias)


def _series(result: dict[str, Any], target: Json) -> list[Series]:
    out: list[Series] = []
    for s in result.get("series", []):
        tags = s.get("tags") or {}
        cols = s.get("columns", [])
        value_cols = [c for c in cols if c != "time"] or cols
        name = legend_name(target.get("alias"), s.get("name", ""), value_cols[0] if value_cols else "", tags)
        out.append(Series(name, cols, s.get("values", []), tags, target.get("refId", "A")))
    return out


async def resolve_variables(dash: Json, client: InfluxClient, tr: TimeRange) -> dict[str, str]:
    """Every template variable at its default ("All": every value its query finds), already formatted."""
    resolved: dict[str, str] = {}
    for var in dash.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        q = expand(str(var["query"]), tr, 1000, resolved)
        values: list[str] = []
        for result in await client.query(q):
            for s in result.get("series", []):
                cols = s.get("columns", [])
                i = cols.index("value") if "value" in cols else len(cols) - 1
                values.extend(str(row[i]) for row in s.get("values", []))
        values = sorted(set(values))
        multi = bool(var.get("multi") or var.get("includeAll"))
        current = var.get("current", {}).get("value")
        current = [current] if isinstance(current, str) else list(current or [])
        if var.get("includeAll") and "$__all" in current:
            chosen = values  # "All" without a custom value: every option
        else:  # Grafana keeps the saved selection if it still exists, else selects the first option
            chosen = [v for v in current if v in values] or values[:1]
        # a variable with no value expands to a regex that matches nothing rather than everything
        resolved[var["name"]] = format_variable(chosen, multi=multi) if chosen else "(?!)"
    return resolved


def panel_queries(panel: Json, tr: TimeRange, variables: dict[str, str]) -> dict[str, str]:
    interval = panel_interval_ms(panel, tr)
    return {t.get("refId", "A"): expand(t["query"], tr, interval, variables) for t in panel.get("targets", [])}


async def run_panel(client: InfluxClient, dash_uid: str, panel: Json, tr: TimeRange,
                    variables: dict[str, str]) -> PanelResult:
    """Run every target of a panel; InfluxQL errors raise ValueError naming the panel and the query."""
    queries = panel_queries(panel, tr, variables)
    series: list[Series] = []
    for t in panel.get("targets", []):
        q = queries[t.get("refId", "A")]
        try:
            results = await client.query(q)
        except ValueError as exc:
            raise ValueError(f"{dash_uid} / {panel.get('title')!r} / {t.get('refId')}: {exc}\n  query: {q}") from exc
        for r in results:
            series.extend(_series(r, t))
    return PanelResult(dash_uid, panel, queries, series)


async def run_dashboard(client: InfluxClient, dash: Json, tr: TimeRange) -> list[PanelResult]:
    variables = await resolve_variables(dash, client, tr)
    return [await run_panel(client, dash["uid"], p, tr, variables) for p in iter_panels(dash)]


def annotation_queries(dash: Json, tr: TimeRange, variables: dict[str, str]) -> dict[str, str]:
    """Expanded queries of the dashboard's InfluxQL annotations, by annotation name."""
    out: dict[str, str] = {}
    for a in dash.get("annotations", {}).get("list", []):
        if a.get("datasource", {}).get("type") == "influxdb":
            out[a["name"]] = expand(a["query"], tr, 1000, variables)
    return out
