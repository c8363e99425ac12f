"""Grafana dashboards generated from the park model, their provisioning, a push to Grafana's HTTP API and
PNG previews rendered from the same InfluxQL queries (``smartpark dashboards build | push | preview``)."""

from .build import GENERATED_DIR, build_all, load_generated, stale_files, write_generated
from .grafana import iter_panels
from .macros import TimeRange, calculate_interval_ms, expand, format_interval, round_interval
from .query import PanelResult, Series, resolve_variables, run_dashboard, run_panel

__all__ = [
    "GENERATED_DIR",
    "PanelResult",
    "Series",
    "TimeRange",
    "build_all",
    "calculate_interval_ms",
    "expand",
    "format_interval",
    "iter_panels",
    "load_generated",
    "resolve_variables",
    "round_interval",
    "run_dashboard",
    "run_panel",
    "stale_files",
    "write_generated",
]
