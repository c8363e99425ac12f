"""Grafana's expansion of InfluxQL queries, reproduced so that panels can be run without a Grafana.

What Grafana does with a raw InfluxQL target before sending it to InfluxDB:

1. The frontend computes the panel's interval (``rangeutil.calculateInterval``): the time range divided by
   the panel's ``maxDataPoints`` (its width in pixels when unset), rounded to a "nice" interval
   (``roundInterval``), and raised to the lower limit: the panel's ``interval`` (min interval) or else the
   data source's ``timeInterval``. It is sent as ``intervalMs``.
2. Template variables are replaced (``interpolateQueryExpr``): a single value as is; a multi-value or
   "All" variable as a regex alternation ``(a|b)`` of regex-escaped values, to be used as
   ``=~ /^$var$/``. "All" without a custom value is every option of the variable.
3. The backend (``pkg/tsdb/influxdb/models/query.go``) replaces ``$timeFilter`` with
   ``time >= <from>ms and time <= <to>ms``, ``$interval`` and ``$__interval`` with the interval formatted
   by ``gtime.FormatInterval`` (``2m``, ``1h``) and ``$__interval_ms`` with its milliseconds.

The same functions drive ``dashboards preview`` and the test that runs every panel's queries.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

DEFAULT_RESOLUTION = 1500  # Grafana's default when a panel gives no maxDataPoints and no width
DATASOURCE_MIN_INTERVAL = "10s"  # jsonData.timeInterval of the provisioned data source

_ROUND_STEPS_MS: tuple[tuple[float, int], ...] = (
    (10, 1), (15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500),
    (1500, 1000), (3500, 2000), (7500, 5000), (12500, 10000), (17500, 15000), (25000, 20000),
    (45000, 30000), (90000, 60000), (210000, 120000), (450000, 300000), (750000, 600000),
    (1050000, 900000), (1500000, 1200000), (2700000, 1800000), (5400000, 3600000), (9000000, 7200000),
    (16200000, 10800000), (32400000, 21600000), (86400000, 43200000), (604800000, 86400000),
    (1814400000, 604800000), (3628800000, 2592000000),
)
_YEAR_MS = 31536000000

_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000,
            "M": 2_592_000_000, "y": _YEAR_MS}
_INTERVAL_RE = re.compile(r"^[<>]?(-?\d+(?:\.\d+)?)(ms|[Mwdhmsy])?$")
_REGEX_SPECIAL = re.compile(r"([\\/^$*+?.()|\[\]{}])")


@dataclass(frozen=True)
class TimeRange:
    """Absolute range in epoch milliseconds (Grafana resolves ``now-24h`` to this before querying)."""

    from_ms: int
    to_ms: int

    @classmethod
    def last(cls, seconds: float, now_ms: int) -> TimeRange:
        return cls(int(now_ms - seconds * 1000), int(now_ms))


def round_interval(ms: float) -> int:
    """Grafana's ``rangeutil.roundInterval``: snap a raw interval to 1s, 2s, 5s, 10s, ... 1d, 1w, 30d, 1y."""
    for below, value in _ROUND_STEPS_MS:
        if ms < below:
            return value
    return _YEAR_MS


def interval_to_ms(text: str) -> int:
    """``10s`` / ``>10s`` / ``5m`` / ``30`` (seconds) -> milliseconds, as ``rangeutil.intervalToMs``."""
    m = _INTERVAL_RE.match(text.strip())
    if not m:
        raise ValueError(f"not a Grafana interval: {text!r}")
    count = int(float(m.group(1)))
    return count * _UNIT_MS[m.group(2) or "s"]


def calculate_interval_ms(tr: TimeRange, max_data_points: int | None, min_interval: str | None) -> int:
    """``rangeutil.calculateInterval``: round(range / resolution), but never below the lower limit."""
    resolution = max_data_points or DEFAULT_RESOLUTION
    ms = round_interval((tr.to_ms - tr.from_ms) / resolution)
    low = interval_to_ms(min_interval) if min_interval else 1
    return max(ms, low)


def format_interval(ms: int) -> str:
    """``gtime.FormatInterval``: the largest whole unit, truncated (90 s -> ``1m``)."""
    for unit, size in (("y", _YEAR_MS), ("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms >= size:
            return f"{ms // size}{unit}"
    return f"{ms}ms" if ms >= 1 else "1ms"


def regex_escape(value: str) -> str:
    """``influxSpecialRegexEscape``: escape what a regex would read as syntax."""
    return _REGEX_SPECIAL.sub(r"\\\1", value)


def format_variable(values: Sequence[str], *, multi: bool) -> str:
    """``interpolateQueryExpr`` for a resolved variable."""
    if not multi:
        return values[0] if values else ""
    escaped = [regex_escape(v) for v in values]
    if len(escaped) == 1:
        return escaped[0]
    return "(" + "|".join(escaped) + ")"


def panel_interval_ms(panel: Mapping[str, object], tr: TimeRange,
                      datasource_min: str = DATASOURCE_MIN_INTERVAL) -> int:
    min_interval = panel.get("interval") or datasource_min
    mdp = panel.get("maxDataPoints")
    return calculate_interval_ms(tr, int(mdp) if isinstance(mdp, int) else None, str(min_interval))


def expand(query: str, tr: TimeRange, interval_ms: int, variables: Mapping[str, str] | None = None) -> str:
    """The InfluxQL Grafana sends for ``query``: variables first (frontend), then the backend macros."""
    for name, value in sorted((variables or {}).items(), key=lambda kv: -len(kv[0])):
        query = query.replace(f"${{{name}}}", value).replace(f"${name}", value)
    text = format_interval(interval_ms)
    # Grafana's global variables of the time range (epoch ms), used by the raw/rollup split of long ranges
    query = query.replace("${__from}", str(tr.from_ms)).replace("${__to}", str(tr.to_ms))
    query = query.replace("${__range_ms}", str(tr.to_ms - tr.from_ms))
    query = query.replace("$timeFilter", f"time >= {tr.from_ms}ms and time <= {tr.to_ms}ms")
    query = query.replace("$interval", text)  # the legacy name; '$__interval' is untouched by this
    query = query.replace("$__interval_ms", str(interval_ms))
    return query.replace("$__interval", text)
