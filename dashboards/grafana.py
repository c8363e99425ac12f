"""Small builders for Grafana dashboard JSON (schemaVersion 39): panels, InfluxQL targets, thresholds.

Dashboards are plain dicts so that the generated files are exactly what Grafana stores and what its HTTP
API takes. Everything that depends on the park (limits, normal bands, units, names) is passed in by
:mod:`dashboards.build`; nothing here knows a sensor, so a limit lives only in the park model.
"""

from __future__ import annotations

from typing import Any

SCHEMA_VERSION = 39
DATASOURCE_UID = "smartpark-influxdb"  # set by dashboards/provisioning/datasources/influxdb.yaml
DATASOURCE = {"type": "influxdb", "uid": DATASOURCE_UID}
GRID_WIDTH = 24

# Threshold colours: ISA-18.2 alarm zones in red/orange, the normal band green, the rest see-through.
RED = "red"
ORANGE = "orange"
GREEN = "green"
CLEAR = "transparent"

Json = dict[str, Any]


def target(query: str, ref_id: str = "A", *, alias: str | None = None, table: bool = False) -> Json:
    """A raw InfluxQL target, the form Grafana saves when the query editor is in raw mode."""
    t: Json = {
        "datasource": dict(DATASOURCE),
        "query": query,
        "rawQuery": True,
        "refId": ref_id,
        "resultFormat": "table" if table else "time_series",
    }
    if alias:
        t["alias"] = alias
    return t


def threshold_steps(zones: list[tuple[float, str]], base: str) -> Json:
    """``thresholds`` from a base colour and (value, colour) steps; equal neighbours are merged."""
    steps: list[Json] = [{"color": base, "value": None}]
    for value, color in sorted(zones, key=lambda z: z[0]):
        if color != steps[-1]["color"]:
            steps.append({"color": color, "value": value})
    return {"mode": "absolute", "steps": steps}


def grid(x: int, y: int, w: int, h: int) -> Json:
    return {"h": h, "w": w, "x": x, "y": y}


def _panel(kind: str, title: str, description: str, targets: list[Json], *, field_config: Json, options: Json,
           max_data_points: int = 500, min_interval: str | None = None, **before_targets: Any) -> Json:
    """The keys of every panel, in the order Grafana writes them; ``before_targets`` (a table's
    ``transformations``) stand between the options and the targets."""
    panel: Json = {"type": kind, "title": title, "description": description, "datasource": dict(DATASOURCE),
                   "maxDataPoints": max_data_points, "fieldConfig": field_config, "options": options,
                   **before_targets, "targets": targets}
    if min_interval:
        panel["interval"] = min_interval
    return panel


def timeseries(title: str, targets: list[Json], *, unit: str = "", thresholds: Json | None = None,
               threshold_style: str = "line+area", description: str = "", min_interval: str | None = None,
               max_data_points: int = 500, soft_min: float | None = None, soft_max: float | None = None,
               bars: bool = False, stack: bool = False, overrides: list[Json] | None = None) -> Json:
    custom: Json = {
        "drawStyle": "bars" if bars else "line",
        "lineWidth": 1,
        "fillOpacity": 60 if bars else 0,
        "spanNulls": True,
        "showPoints": "never",
        "thresholdsStyle": {"mode": threshold_style if thresholds else "off"},
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
    }
    if soft_min is not None:
        custom["axisSoftMin"] = soft_min
    if soft_max is not None:
        custom["axisSoftMax"] = soft_max
    return _panel("timeseries", title, description, targets, max_data_points=max_data_points,
                  min_interval=min_interval,
                  field_config={"defaults": {"unit": unit, "custom": custom, "color": {"mode": "palette-classic"},
                                             "thresholds": thresholds or threshold_steps([], GREEN)},
                                "overrides": overrides or []},
                  options={"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                           "tooltip": {"mode": "multi", "sort": "none"}})


def stat(title: str, targets: list[Json], *, unit: str = "", thresholds: Json | None = None,
         description: str = "", calc: str = "lastNotNull", decimals: int | None = None,
         no_value: str | None = None, color_mode: str = "background", min_interval: str | None = None,
         text_mode: str = "auto") -> Json:
    defaults: Json = {"unit": unit, "color": {"mode": "thresholds"},
                      "thresholds": thresholds or threshold_steps([], GREEN)}
    if decimals is not None:
        defaults["decimals"] = decimals
    if no_value is not None:
        defaults["noValue"] = no_value
    return _panel("stat", title, description, targets, min_interval=min_interval,
                  field_config={"defaults": defaults, "overrides": []},
                  options={"reduceOptions": {"calcs": [calc], "fields": "", "values": False},
                           "colorMode": color_mode, "graphMode": "none", "justifyMode": "auto",
                           "orientation": "auto", "textMode": text_mode, "wideLayout": True})


def table(title: str, targets: list[Json], *, description: str = "", transformations: list[Json] | None = None,
          overrides: list[Json] | None = None) -> Json:
    return _panel("table", title, description, targets,
                  field_config={"defaults": {"custom": {"align": "auto", "cellOptions": {"type": "auto"}}},
                                "overrides": overrides or []},
                  options={"showHeader": True, "cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"]}},
                  transformations=transformations or [])


def piechart(title: str, targets: list[Json], *, description: str = "") -> Json:
    return _panel("piechart", title, description, targets,
                  field_config={"defaults": {"color": {"mode": "palette-classic"}}, "overrides": []},
                  options={"reduceOptions": {"calcs": ["sum"], "fields": "", "values": False},
                           "pieType": "donut", "legend": {"displayMode": "table", "placement": "right",
                                                          "showLegend": True, "values": ["value"]}})


def state_timeline(title: str, targets: list[Json], *, thresholds: Json, description: str = "",
                   mappings: list[Json] | None = None, min_interval: str | None = None) -> Json:
    return _panel("state-timeline", title, description, targets, min_interval=min_interval,
                  field_config={"defaults": {"color": {"mode": "thresholds"}, "thresholds": thresholds,
                                             "mappings": mappings or []}, "overrides": []},
                  options={"showValue": "auto", "mergeValues": True, "rowHeight": 0.9,
                           "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}})


def row(title: str, *, collapsed: bool = False, panels: list[Json] | None = None) -> Json:
    return {"type": "row", "title": title, "collapsed": collapsed, "panels": panels or []}


def color_override(name: str, color: str) -> Json:
    """Pin one series (by its display name) to a fixed colour."""
    return {"matcher": {"id": "byName", "options": name},
            "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": color}}]}


def query_variable(name: str, label: str, query: str, *, multi: bool = True, include_all: bool = True) -> Json:
    """A template variable filled from InfluxDB (``SHOW TAG VALUES ...``), refreshed on time-range change."""
    return {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": dict(DATASOURCE),
        "definition": query,
        "query": query,
        "refresh": 2,
        "multi": multi,
        "includeAll": include_all,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]} if include_all else {},
        "options": [],
        "sort": 1,
        "hide": 0,
        "skipUrlSync": False,
    }


def annotation(name: str, query: str, *, color: str, enable: bool = True) -> Json:
    """An InfluxQL annotation; Grafana draws it on every time-series panel of the dashboard."""
    return {
        "name": name,
        "datasource": dict(DATASOURCE),
        "enable": enable,
        "hide": False,
        "iconColor": color,
        "query": query,
        # Grafana 10+ reads the query and the column mapping from the target; the copies above are the
        # legacy (pre-10) place, which Grafana migrates from
        "target": {"query": query, "rawQuery": True, "refId": "Anno", "resultFormat": "table",
                   "textColumn": "message", "tagsColumn": "rule", "titleColumn": "sensor"},
        "textColumn": "message",
        "tagsColumn": "rule",
        "titleColumn": "sensor",
    }


BUILTIN_ANNOTATION: Json = {
    "builtIn": 1,
    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
    "enable": True,
    "hide": True,
    "iconColor": "rgba(0, 211, 255, 1)",
    "name": "Annotations & Alerts",
    "type": "dashboard",
}


def layout(panels: list[Json], *, width: int = 8, height: int = 8) -> list[Json]:
    """Place panels left to right, top to bottom; rows span the whole width and start a new line.

    Panels may carry ``_w``/``_h`` hints (removed here). Ids are assigned in order so the JSON is stable.
    """
    out: list[Json] = []
    x = y = 0
    line_h = 0
    for i, p in enumerate(panels, start=1):
        w = p.pop("_w", GRID_WIDTH if p["type"] == "row" else width)
        h = p.pop("_h", 1 if p["type"] == "row" else height)
        if p["type"] == "row" or x + w > GRID_WIDTH:
            y += line_h
            x, line_h = 0, 0
        p["gridPos"] = grid(x, y, w, h)
        p["id"] = i
        out.append(p)
        x += w
        line_h = max(line_h, h)
        if p["type"] == "row":
            y += h
            x, line_h = 0, 0
    return out


def dashboard(uid: str, title: str, *, tags: list[str], panels: list[Json], description: str = "",
              variables: list[Json] | None = None, annotations: list[Json] | None = None,
              time_from: str = "now-24h", refresh: str = "1m", version: int = 1,
              timezone: str = "browser", links: list[Json] | None = None) -> Json:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": tags,
        "id": None,
        "version": version,
        "schemaVersion": SCHEMA_VERSION,
        "editable": True,
        "graphTooltip": 1,
        "liveNow": False,
        "refresh": refresh,
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        "timezone": timezone,
        "weekStart": "",
        "fiscalYearStartMonth": 0,
        "links": links or [],
        "annotations": {"list": [dict(BUILTIN_ANNOTATION), *(annotations or [])]},
        "templating": {"list": variables or []},
        "panels": panels,
    }


def iter_panels(dash: Json) -> list[Json]:
    """Every non-row panel of a dashboard, including those inside collapsed rows."""
    out: list[Json] = []
    for p in dash.get("panels", []):
        if p.get("type") == "row":
            out.extend(p.get("panels", []))
        else:
            out.append(p)
    return out
