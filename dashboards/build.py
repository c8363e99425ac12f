"""The dashboards, generated from the park model: overview, one per site, alarms, collector health, explorer.

Why generated: dashboards drawn by hand drift from the alarm limits. Here every threshold line, unit, name
and regulatory limit is read from the park model at build time, so a limit changed in ``park.yaml`` shows
everywhere after ``smartpark dashboards build`` (and the test that compares the committed JSON with a
fresh build fails until it is run).

Measurements and fields are those of CONTRACT §3: ``reading`` (site, asset, sensor; value), ``alarm``
(site, asset, sensor, rule, priority; state, event, message, operator, value, limit), ``dead_letter``
(reason; topic, payload, detail) and ``collector`` (instance; received, written, invalid, spooled, retries).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from smartpark import kpis
from smartpark.averages import FIVE_MIN_MS, day_need, five_min_need, hour_need
from smartpark.lineproto import quote_ident, quote_literal
from smartpark.park import Asset, Park, Regulatory, Sensor, Site
from smartpark.schema import (
    ACTIVE_STATES,
    ALARM,
    CLEARED,
    COLLECTOR,
    DEAD_LETTER,
    RAISED,
    READING,
    READING_1H,
    ROLLUP_RP,
    SHLVD,
)

from . import grafana as g
from .grafana import CLEAR, GREEN, ORANGE, RED, Json

GENERATED_DIR = Path(__file__).parent / "generated"
TAG = "smartpark"

# Figures the control room wants on the overview, by sensor key; those missing from a park are skipped.
KEY_FIGURES: tuple[tuple[str, str, str], ...] = (
    ("wwtp/effluent/cod", "出水COD", "Effluent COD"),
    ("energy_hub/mp_header/pressure", "中压蒸汽母管压力", "MP steam header pressure"),
    ("energy_hub/lp_header/pressure", "低压蒸汽母管压力", "LP steam header pressure"),
    ("hw_center/scc/temp", "二燃室温度", "Furnace (SCC) temperature"),
    ("hw_center/rotary_kiln/outlet_temp", "回转窑出口温度", "Rotary kiln outlet temperature"),
)

# Regulatory averages drawn as their own panels (regulatory_query), those the alert engine judges.
REG_AVERAGES = ("5min", "1h", "24h")
REG_LABEL = {"5min": ("5分钟均值", "5-min mean"), "1h": ("小时均值", "hourly mean"), "24h": ("日均值", "daily mean")}

# the measurements as InfluxQL identifiers
_READING, _ALARM, _DEAD_LETTER, _COLLECTOR = (quote_ident(m) for m in (READING, ALARM, DEAD_LETTER, COLLECTOR))
_READING_1H = f"{quote_ident(ROLLUP_RP)}.{quote_ident(READING_1H)}"
PRIORITY_COLORS = {"high": RED, "medium": ORANGE, "low": "yellow"}

# Grafana's unit ids for the park's units; others are shown as a suffix.
UNITS = {"degC": "celsius", "%": "percent", "Pa": "pressurepa", "kW": "kwatt", "MW": "megwatt",
         "kV": "kvolt", "Hz": "hertz", "m": "lengthm", "s": "s", "mV": "mvolt", "-": "none"}


def bilingual(zh: str | None, en: str) -> str:
    """``中文 · English``: operators read Chinese, vendors and auditors English."""
    return f"{zh} · {en}" if zh else en


def grafana_unit(unit: str) -> str:
    return UNITS.get(unit, f"suffix: {unit}")


def fmt_interval(seconds: float) -> str:
    """A Grafana interval string (``10s``, ``5m``, ``1h``) for a whole number of seconds."""
    s = int(seconds)
    for size, suffix in ((86400, "d"), (3600, "h"), (60, "m")):
        if s >= size and s % size == 0:
            return f"{s // size}{suffix}"
    return f"{s}s"


# --------------------------------------------------------------------------------------------------
# queries (InfluxQL with Grafana macros)

def where_sensor(site: str, asset: str, sensor: str) -> str:
    return (f"{quote_ident('site')} = {quote_literal(site)} AND {quote_ident('asset')} = {quote_literal(asset)} "
            f"AND {quote_ident('sensor')} = {quote_literal(sensor)}")


def reading_query(site: str, asset: str, sensor: str, *, agg: str = "mean", bucket: str = "$__interval",
                  fill: str = "null", tz: str | None = None, valid: tuple[float, float] | None = None) -> str:
    """Aggregated readings of one sensor; ``valid`` (the instrument range) leaves out the out-of-range values
    that the collector stores with quality ``bad`` (InfluxQL cannot test a field that is usually absent)."""
    rng = f' AND "value" >= {valid[0]:g} AND "value" <= {valid[1]:g}' if valid else ""
    q = (f'SELECT {agg}("value") FROM {_READING} WHERE {where_sensor(site, asset, sensor)}{rng} AND $timeFilter '
         f"GROUP BY time({bucket}) fill({fill})")
    return q + (f" tz({quote_literal(tz)})" if tz else "")


# --------------------------------------------------------------------------------------------------
# regulatory averages: the numbers the alert engine judges and the report prints (smartpark.averages), in InfluxQL

def _grid_s(interval_s: float) -> int:
    """The GROUP BY step of the rolling window: the sensor's interval when it divides 5 minutes, else 1 s."""
    step = int(interval_s)
    return step if step == interval_s and step >= 1 and FIVE_MIN_MS % (step * 1000) == 0 else 1


def valid_sums(where: str, step: str, zone: str = "") -> str:
    """Subqueries whose fields ``s`` and ``c``, summed per bucket of ``step``, are the sum and count of the
    *valid* readings (:func:`smartpark.averages.is_valid`).

    InfluxQL cannot test a field that is absent (``quality`` and ``flag`` usually are), so the valid readings'
    sum and count are all readings' minus those of quality ``bad``, minus those flagged other than N and S,
    plus those that are both: each a condition on a present field."""
    # a regex that needs a character: where no reading ever had a flag, InfluxDB takes "flag" for a tag whose
    # value is empty, which != 'N' would match
    not_ns = '"flag" =~ /^[^NS]/'
    return ", ".join(
        f'(SELECT sum("value"){sign} AS "s", count("value"){sign} AS "c" FROM {_READING} WHERE {where}{cond} '
        f"GROUP BY time({step}) fill(none){zone})"
        for sign, cond in (("", ""), (" * -1", " AND \"quality\" = 'bad'"), (" * -1", f" AND {not_ns}"),
                           ("", f" AND \"quality\" = 'bad' AND {not_ns}")))


def regulatory_query(site: str, asset: str, s: Sensor, reg: Regulatory, tz: str, *, provisional: bool = False) -> str:
    """The average that ``reg`` is judged on, one point per value the alert engine judges; the same hourly and
    daily means the compliance report prints. Valid readings only (:func:`valid_sums`), valid periods by
    :mod:`smartpark.averages`.

    - ``5min`` (GB 18484 furnace temperature): the engine's mean of the valid readings in the 5 minutes up to
      each valid reading, judged only with ``min_valid`` (75 %) of the expected readings. Here: valid sums and
      counts on a grid of the sensor's interval, their ``moving_average`` over 5 minutes divided (the exact
      mean of the window, also across gaps), shown at the buckets that hold a valid reading and have enough in
      their window. Tumbling ``GROUP BY time(5m)`` blocks hide a breach that straddles two blocks.
    - ``1h``: the clock-hour mean, only for valid hours (``min_valid`` of the expected readings, HJ 75).
    - ``24h``: the mean of the valid hours' means of each natural day in the park's time zone (not the mean of
      its readings), only for days with 20 valid hours (GB 18484-2020 3.18/3.19). With ``provisional`` the
      days that have fewer (today, or a day cut by the time range): where the day is heading, not a verdict.

    Points are at the start of their bucket (the hour, the day, the interval holding the reading); the engine
    stamps a period's event at its end.
    """
    where = f"{where_sensor(site, asset, s.id)} AND $timeFilter"
    zone = f" tz({quote_literal(tz)})"
    if reg.averaging == "5min":
        step = f"{_grid_s(s.interval_s)}s"
        width = FIVE_MIN_MS // (_grid_s(s.interval_s) * 1000)
        inner = (f'SELECT moving_average(sum("s"), {width}) / moving_average(sum("c"), {width}) AS "mean", '
                 f'moving_average(sum("c"), {width}) * {width} AS "n", sum("c") AS "here" '
                 f"FROM {valid_sums(where, step)} WHERE $timeFilter GROUP BY time({step}) fill(0)")
        return f'SELECT "mean" FROM ({inner}) WHERE "here" > 0.5 AND "n" > {five_min_need(s) - 0.5} AND $timeFilter'
    hours = (f'SELECT sum("s") / sum("c") AS "mean", sum("c") AS "n" FROM {valid_sums(where, "1h", zone)} '
             f"WHERE $timeFilter GROUP BY time(1h) fill(none){zone}")
    valid_hours = f'FROM ({hours}) WHERE "n" > {hour_need(s) - 0.5} AND $timeFilter'
    if reg.averaging == "1h":
        return f'SELECT "mean" {valid_hours}'
    days = f'SELECT mean("mean") AS "mean", count("mean") AS "hours" {valid_hours} GROUP BY time(1d) fill(none){zone}'
    keep = f'"hours" < {day_need(s) - 0.5}' if provisional else f'"hours" > {day_need(s) - 0.5}'
    return f'SELECT "mean" FROM ({days}) WHERE {keep} AND $timeFilter'


# Ranges up to two days read raw; from three days on, the hourly rollups (CONTRACT §10); in between the
# split point moves from the range's start to its end: raw after it, the hours that begin up to it before (the
# hour holding the split point is drawn from both).
RAW_MAX_RANGE_MS = 2 * 86_400_000
_SPLIT = "${__from}ms" + f" + ${{__range_ms}}ms - {RAW_MAX_RANGE_MS}ms" * 3


def tiered_targets(site: str, asset: str, sensor: str, alias: str, valid: tuple[float, float] | None = None
                   ) -> list[Json]:
    """A sensor's trend: raw readings after the split point, ``rollup.reading_1h`` means before it."""
    raw = reading_query(site, asset, sensor, valid=valid).replace(
        "$timeFilter", f"$timeFilter AND time > {_SPLIT}")
    rollup = (f'SELECT mean("mean") FROM {_READING_1H} WHERE {where_sensor(site, asset, sensor)} '
              f"AND $timeFilter AND time <= {_SPLIT} GROUP BY time($__interval) fill(none)")
    return [g.target(raw, "A", alias=alias), g.target(rollup, "B", alias=alias)]


def last_state_subquery(where: str, group: str) -> str:
    """The latest state of every alarm (one series per alarm id) within the time range."""
    return f'SELECT last("state") AS "state" FROM {_ALARM} WHERE {where}$timeFilter GROUP BY {group}'


def active_filter() -> str:
    return " OR ".join(f'"state" = {quote_literal(s)}' for s in ACTIVE_STATES)


def active_count_query(where: str) -> str:
    """Active alarms by priority: ISA-18.2 state of each alarm's last event is UNACK, ACKED or RTNUN."""
    inner = last_state_subquery(where, '"site", "asset", "sensor", "rule", "priority"')
    return f'SELECT count("state") FROM ({inner}) WHERE {active_filter()} GROUP BY "priority"'


# --------------------------------------------------------------------------------------------------
# thresholds from the park model

def sensor_thresholds(s: Sensor) -> Json:
    """Alarm zones (ll/hh red, l/h orange) and the normal band (green) as Grafana threshold steps."""
    lim = dict(s.limits.items())
    lo, hi = s.normal

    def zone(v: float) -> str:
        if "hh" in lim and v >= lim["hh"]:
            return RED
        if "h" in lim and v >= lim["h"]:
            return ORANGE
        if "ll" in lim and v < lim["ll"]:
            return RED
        if "l" in lim and v < lim["l"]:
            return ORANGE
        return GREEN if lo <= v < hi else CLEAR

    points = sorted({*lim.values(), lo, hi})
    return g.threshold_steps([(p, zone(p)) for p in points], zone(float("-inf")))


def regulatory_thresholds(reg: Regulatory) -> Json:
    if reg.comparator == "range":
        assert isinstance(reg.limit, tuple)
        return g.threshold_steps([(reg.limit[0], CLEAR), (reg.limit[1], RED)], RED)
    assert not isinstance(reg.limit, tuple)
    if reg.comparator == "min":
        return g.threshold_steps([(reg.limit, CLEAR)], RED)
    return g.threshold_steps([(reg.limit, RED)], CLEAR)


def _decimals(x: float) -> int:
    """Decimal places of a limit as the park model writes it (1100 -> 0, 0.5 -> 1, 7.1 -> 1)."""
    text = f"{x:g}"
    return len(text.split(".")[1]) if "." in text and "e" not in text else 0


def near_limit_display(limits: list[float]) -> tuple[int, list[Json]]:
    """Decimals for a panel, and value mappings so that no value is rounded onto a limit.

    Grafana rounds to the panel's decimals: with one decimal, 1099.96 shows as "1100.0" beside a limit of 1100.
    One digit more than the most precise limit is shown; the values that would still round onto a limit
    (within half a step of it, the limit itself excluded) are shown as "<1100.0" or ">1100.0" instead."""
    d = max((_decimals(x) for x in limits), default=0) + 1
    half = 0.5 * 10.0 ** -d
    mappings: list[Json] = []
    for lim in sorted(set(limits)):
        tiny = 1e-9 * max(1.0, abs(lim))
        shown = f"{lim:.{d}f}"
        for lo, hi, text in ((lim - half, lim - tiny, f"<{shown}"), (lim + tiny, lim + half, f">{shown}")):
            mappings.append({"type": "range", "options": {"from": lo, "to": hi, "result": {"text": text}}})
    return d, mappings


def _show_limits_exactly(panel: Json, limits: list[float]) -> Json:
    d, mappings = near_limit_display(limits)
    panel["fieldConfig"]["defaults"]["decimals"] = d
    panel["fieldConfig"]["defaults"]["mappings"] = mappings
    return panel


def _sensor_limits(s: Sensor) -> list[float]:
    out = [float(v) for _, v in s.limits.items()]
    for reg in s.regulatory:
        out += [float(x) for x in (reg.limit if isinstance(reg.limit, tuple) else (reg.limit,))]
    return out


def limits_text(s: Sensor) -> str:
    parts = [f"{k}={v:g}" for k, v in s.limits.items()]
    parts.append(f"normal {s.normal[0]:g}..{s.normal[1]:g}")
    for reg in s.regulatory:
        lim = f"{reg.limit[0]:g}..{reg.limit[1]:g}" if isinstance(reg.limit, tuple) else f"{reg.limit:g}"
        parts.append(f"{reg.rule} {reg.comparator} {lim} ({reg.source})")
    return f"{s.unit}; " + ", ".join(parts)


# --------------------------------------------------------------------------------------------------
# dashboards

def _annotations(site: str | None) -> list[Json]:
    where = f'"site" = {quote_literal(site)} AND ' if site else ""
    out = []
    for prio, color in PRIORITY_COLORS.items():
        q = (f'SELECT "message", "rule", "sensor", "value" FROM {_ALARM} WHERE {where}"priority" = '
             f"{quote_literal(prio)} AND \"event\" = '{RAISED}' AND $timeFilter")
        out.append(g.annotation(f"报警 · Alarms raised ({prio})", q, color=color))
    q = (f'SELECT "message", "rule", "sensor", "value" FROM {_ALARM} WHERE {where}"event" = \'{CLEARED}\' '
         "AND $timeFilter")
    out.append(g.annotation("恢复 · Alarms cleared", q, color=GREEN, enable=False))
    return out


def _priority_overrides() -> list[Json]:
    return [{"matcher": {"id": "byName", "options": prio},
             "properties": [{"id": "thresholds", "value": g.threshold_steps([(1, color)], GREEN)}]}
            for prio, color in PRIORITY_COLORS.items()]


def _status_tile(title: str, where: str, n_sensors: int, what: str) -> Json:
    """Active alarms by priority (the worst shows red or orange) and how many sensors reported."""
    reporting = (f'SELECT count("value") FROM (SELECT last("value") AS "value" FROM {_READING} WHERE {where}'
                 f'$timeFilter GROUP BY "asset", "sensor")')
    name = f"reporting / {n_sensors}"
    panel = g.stat(
        title, [g.target(active_count_query(where), "A", alias="$tag_priority"), g.target(reporting, "B", alias=name)],
        description=f"{what}: active alarms by priority (the worst is the red/orange one) and sensors that "
                    f"reported in the time range, of {n_sensors}.",
        no_value="0", text_mode="value_and_name",
    )
    panel["fieldConfig"]["overrides"] = [
        *_priority_overrides(),
        {"matcher": {"id": "byName", "options": name},
         "properties": [{"id": "thresholds", "value": g.threshold_steps([(n_sensors, "blue")], ORANGE)}]},
    ]
    panel["_w"], panel["_h"] = 6, 4
    return panel


def _asset_tile(site: Site, asset: Asset) -> Json:
    where = f'"site" = {quote_literal(site.id)} AND "asset" = {quote_literal(asset.id)} AND '
    return _status_tile(bilingual(asset.name_zh, asset.name), where, len(asset.sensors), f"{site.id}/{asset.id}")


def overview(park: Park) -> Json:
    panels: list[Json] = [g.row(bilingual("园区", "Park"))]
    total = g.stat("活动报警 · Active alarms", [g.target(active_count_query(""), "A", alias="$tag_priority")],
                   description="Alarms whose last event leaves them UNACK, ACKED or RTNUN, by priority.",
                   no_value="0", text_mode="value_and_name")
    total["fieldConfig"]["overrides"] = _priority_overrides()
    total["_w"], total["_h"] = 4, 5
    panels.append(total)
    for key, zh, en in KEY_FIGURES:
        try:
            ref = park.get(key)
        except KeyError:
            continue
        s = ref.sensor
        q = reading_query(ref.site, ref.asset, s.id, valid=s.range)
        p = g.stat(bilingual(zh, en), [g.target(q, "A", alias=s.name)],
                   unit=grafana_unit(s.unit), thresholds=sensor_thresholds(s), description=limits_text(s),
                   min_interval=fmt_interval(s.interval_s) if s.interval_s > 10 else None)
        p["options"]["graphMode"] = "area"
        p["_w"], p["_h"] = 4, 5
        panels.append(_show_limits_exactly(p, _sensor_limits(s)))
    for site in park.sites:
        panels.append(g.row(bilingual(site.name_zh, site.name)))
        n = sum(len(a.sensors) for a in site.assets)
        panels.append(_status_tile(f"全厂 · Whole site ({site.id})", f'"site" = {quote_literal(site.id)} AND ', n,
                                   site.id))
        panels.extend(_asset_tile(site, a) for a in site.assets)
    return g.dashboard(
        "smartpark-overview", bilingual(park.park.name_zh, park.park.name) + " · 总览 Overview",
        tags=[TAG, "overview"], panels=g.layout(panels), annotations=_annotations(None),
        description="One tile per asset with its active alarms; the park's key figures against their limits.",
        links=[{"type": "dashboards", "tags": [TAG], "asDropdown": True, "title": "smartpark"}],
        timezone=park.park.timezone,  # the control room's clock, whatever the browser's
    )


def _sensor_panel(site: Site, asset: Asset, s: Sensor, tz: str) -> list[Json]:
    title = bilingual(s.name_zh, s.name)
    panel = g.timeseries(
        title, tiered_targets(site.id, asset.id, s.id, s.id, valid=s.range),
        unit=grafana_unit(s.unit), thresholds=sensor_thresholds(s), description=f"{site.id}/{asset.id}/{s.id}: "
        + limits_text(s), min_interval=fmt_interval(s.interval_s) if s.interval_s > 10 else None,
        soft_min=s.normal[0], soft_max=s.normal[1],
    )
    out = [_show_limits_exactly(panel, _sensor_limits(s))]
    for reg in s.regulatory:
        if reg.averaging not in REG_AVERAGES:
            continue  # instant limits are in the description and the alarm; monthly is a report, not a plot
        zh, en = REG_LABEL[reg.averaging]
        targets = [g.target(regulatory_query(site.id, asset.id, s, reg, tz), "A", alias=en)]
        if reg.averaging == "24h":
            targets.append(g.target(regulatory_query(site.id, asset.id, s, reg, tz, provisional=True), "B",
                                    alias=f"{en} so far (fewer than {day_need(s)} valid hours: no verdict)"))
        limits = reg.limit if isinstance(reg.limit, tuple) else (reg.limit,)
        p = g.timeseries(
            bilingual(f"{s.name_zh or s.name} {zh}", f"{s.name} {en}") + " vs limit",
            targets, unit=grafana_unit(s.unit), thresholds=regulatory_thresholds(reg),
            description=f"{reg.rule}: the {en} the standard evaluates ({reg.comparator} {reg.limit}); "
                        f"source {reg.source}. Daily means are calendar days in {tz}.",
            threshold_style="line+area", bars=reg.averaging == "24h",
            # the legal limit stays in view, so the distance to it can be read at a glance
            soft_min=min(s.normal[0], *limits), soft_max=max(s.normal[1], *limits) * 1.05,
        )
        p["fieldConfig"]["defaults"]["custom"]["showPoints"] = "always"
        out.append(_show_limits_exactly(p, [float(x) for x in limits]))
    return out


def site_dashboard(park: Park, site: Site) -> Json:
    panels: list[Json] = []
    for asset in site.assets:
        panels.append(g.row(bilingual(asset.name_zh, asset.name)))
        for s in asset.sensors:
            panels.extend(_sensor_panel(site, asset, s, park.park.timezone))
    return g.dashboard(
        f"smartpark-site-{site.id}", bilingual(site.name_zh, site.name), tags=[TAG, "site", site.id],
        panels=g.layout(panels), annotations=_annotations(site.id),
        description=f"Every sensor of {site.id}, grouped by asset, with its alarm limits and normal band; "
                    "regulatory averages against their legal limits; alarm events as annotations.",
        links=[{"type": "dashboards", "tags": [TAG], "asDropdown": True, "title": "smartpark"}],
        timezone=park.park.timezone,  # the control room's clock, whatever the browser's
    )


def _variables(*names: str, default_sensor: str | None = None) -> list[Json]:
    out = [g.query_variable("site", "厂区 Site", f'SHOW TAG VALUES FROM {_READING} WITH KEY = "site"')]
    if "asset" in names:
        out.append(g.query_variable("asset", "装置 Asset", f'SHOW TAG VALUES FROM {_READING} WITH KEY = "asset" '
                                    'WHERE "site" =~ /^$site$/'))
    if "sensor" in names:
        # no "All" here: every sensor of the park at once costs more than a full scan of the day (bench/)
        out.append(g.query_variable("sensor", "测点 Sensor", f'SHOW TAG VALUES FROM {_READING} WITH KEY = "sensor" '
                                    'WHERE "site" =~ /^$site$/ AND "asset" =~ /^$asset$/', include_all=False))
        if default_sensor:  # Grafana keeps a saved selection that still exists, else takes the first sensor
            out[-1]["current"] = {"selected": True, "text": [default_sensor], "value": [default_sensor]}
    return out


def alarms_dashboard(park: Park) -> Json:
    tags = '"site" =~ /^$site$/ AND "asset" =~ /^$asset$/'  # the variables; the KPIs of smartpark.kpis take them
    flt = f"{tags} AND "
    raised = f"{flt}\"event\" = '{RAISED}' AND "
    group = '"site", "asset", "sensor", "rule", "priority"'
    # every event carries state, event and message, so their last() values come from the same (latest) event
    latest = (f'SELECT last("state") AS "state", last("event") AS "event", last("message") AS "message" '
              f'FROM {_ALARM} WHERE {flt}$timeFilter GROUP BY {group}')
    active_q = (f'SELECT "state", "event", "message" FROM ({latest}) WHERE {active_filter()} '
                f"OR \"state\" = '{SHLVD}' GROUP BY {group}")
    history_q = (f'SELECT "site", "asset", "sensor", "rule", "priority", "event", "state", "value", "limit", '
                 f'"message", "operator" FROM {_ALARM} WHERE {flt}$timeFilter ORDER BY time DESC LIMIT 500')
    per10 = f'SELECT count("event") FROM {_ALARM} WHERE {raised}$timeFilter GROUP BY time(10m) fill(0)'
    per_hour = f'SELECT count("event") FROM {_ALARM} WHERE {raised}$timeFilter GROUP BY time(1h) fill(0)'
    flood, peak = kpis.flood_query(tags), kpis.peak_query(tags)
    chatter, stale = kpis.chattering_query(tags), kpis.stale_query(tags)
    by_prio = f'SELECT count("event") FROM {_ALARM} WHERE {raised}$timeFilter GROUP BY "priority"'
    bad_actors = (f'SELECT count("event") AS "raised" FROM {_ALARM} WHERE {raised}$timeFilter '
                  f"GROUP BY {group}")
    shelved = (f'SELECT count("state") FROM ({last_state_subquery(flt, group)}) WHERE "state" = \'{SHLVD}\'')

    kpi_rate = g.stat("平均报警率 · Average alarms per hour", [g.target(per_hour, "A", alias="alarms/h")],
                      calc="mean", decimals=1, no_value="0",
                      thresholds=g.threshold_steps([(6, ORANGE), (12, RED)], GREEN),
                      description="ISA-18.2 / EEMUA 191: about 6 per hour is acceptable, over 12 is overloaded.")
    window_min, flood_n = kpis.FLOOD_WINDOW_MS // 60_000, kpis.FLOOD_MORE_THAN
    chatter_n, chatter_s = kpis.CHATTER_RAISES, kpis.CHATTER_WINDOW_MS // 1000
    chatter_t = f"{chatter_s // 60} min" if chatter_s % 60 == 0 else f"{chatter_s} s"
    stale_h = kpis.STALE_AFTER_MS // 3_600_000
    kpi_peak = g.stat("10分钟峰值 · Peak alarms in 10 min", [g.target(peak, "A", alias="peak/10 min")],
                      calc="max", no_value="0",
                      thresholds=g.threshold_steps([(2, ORANGE), (flood_n + 1, RED)], GREEN),
                      description=f"Most alarms raised at one site in one {window_min}-minute period; "
                                  f"over {flood_n} is an alarm flood.")
    kpi_flood = g.stat("报警泛滥时段 · 10-min windows in flood", [g.target(flood, "A", alias="windows")],
                       no_value="0", thresholds=g.threshold_steps([(1, RED)], GREEN),
                       description=f"{window_min}-minute periods in which more than {flood_n} alarms were raised "
                                   "at one site (ISA-18.2 / EEMUA 191 flood), counted per site.")
    kpi_chatter = g.stat(f"振荡报警 · Chattering (≥{chatter_n} raises in {chatter_t})",
                         [g.target(chatter, "A", alias="alarms")], no_value="0",
                         thresholds=g.threshold_steps([(1, ORANGE)], GREEN),
                         description=f"Alarms raised {chatter_n} times or more within {chatter_t} "
                                     "(a sliding window).")
    kpi_stale = g.stat(f"陈旧报警 · Stale (standing > {stale_h} h)", [g.target(stale, "A", alias="alarms")],
                       no_value="0", thresholds=g.threshold_steps([(1, ORANGE)], GREEN),
                       description=f"Alarms still in alarm (unacknowledged or acknowledged) at the end of the "
                                   f"range and raised more than {stale_h} h before it, whatever the range.")
    kpi_shelved = g.stat("搁置 · Shelved alarms", [g.target(shelved, "A", alias="shelved")], no_value="0",
                         thresholds=g.threshold_steps([(1, "blue")], GREEN),
                         description="Alarms whose last event left them shelved (SHLVD).")
    for p, w in ((kpi_rate, 4), (kpi_peak, 3), (kpi_flood, 3), (kpi_chatter, 3), (kpi_stale, 4), (kpi_shelved, 3)):
        p["_w"], p["_h"] = w, 4
    active_count = g.stat("活动报警 · Active", [g.target(active_count_query(flt), "A", alias="$tag_priority")],
                          no_value="0", text_mode="value_and_name")
    active_count["fieldConfig"]["overrides"] = _priority_overrides()
    active_count["_w"], active_count["_h"] = 4, 4

    no_time = {"id": "organize", "options": {"excludeByName": {"Time": True}}}  # subquery times are not events
    active = g.table("活动报警列表 · Active alarms", [g.target(active_q, "A", table=True)], transformations=[no_time],
                     description="Last state of every alarm that is not back to normal and acknowledged. The "
                                 "alert engine's API (GET /alarms) is authoritative; this is its InfluxDB trace.")
    active["_w"], active["_h"] = 24, 8
    history = g.table("报警历史 · Alarm history", [g.target(history_q, "A", table=True)],
                      description="Every alarm event (raised, cleared, acked, shelved, ...), newest first.")
    history["_w"], history["_h"] = 24, 10
    rate = g.timeseries("报警率 · Alarms raised per 10 min", [g.target(per10, "A", alias="raised")], bars=True,
                        thresholds=g.threshold_steps([(1, ORANGE), (10, RED)], CLEAR), threshold_style="line",
                        description="Bars: alarms raised per 10 minutes; lines at 1 (target) and 10 (flood).")
    rate["_w"] = 12
    prio = g.piechart("优先级分布 · Priority distribution", [g.target(by_prio, "A", alias="$tag_priority")],
                      description="ISA-18.2 aims at roughly 80 % low, 15 % medium, 5 % high.")
    prio["_w"] = 6
    actors = g.table("频繁报警 · Top 10 bad actors", [g.target(bad_actors, "A", table=True)],
                     transformations=[{"id": "sortBy", "options": {"sort": [{"field": "raised", "desc": True}]}},
                                      {"id": "limit", "options": {"limitField": 10}}, no_time],
                     description="The alarms raised most often: first candidates for rationalisation.")
    actors["_w"] = 6
    panels = [g.row("关键指标 · KPIs"), active_count, kpi_rate, kpi_peak, kpi_flood, kpi_chatter, kpi_stale,
              kpi_shelved,
              rate, prio, actors, g.row("报警 · Alarms"), active, history]
    return g.dashboard(
        "smartpark-alarms", "报警 · Alarms", tags=[TAG, "alarms"], panels=g.layout(panels),
        variables=_variables("site", "asset"), annotations=_annotations(None), time_from="now-24h",
        description="Active alarms, their history and the ISA-18.2 alarm-management KPIs.",
        timezone=park.park.timezone,  # the control room's clock, whatever the browser's
    )


def collector_dashboard(park: Park) -> Json:
    def rate(field: str, per: str = "1s") -> str:
        return (f'SELECT non_negative_derivative(max("{field}"), {per}) FROM {_COLLECTOR} WHERE $timeFilter '
                'GROUP BY time($__interval), "instance" fill(null)')

    ingest = g.timeseries("接收速率 · Ingest rate (messages/s)",
                          [g.target(rate("received"), "A", alias="received $tag_instance"),
                           g.target(rate("written"), "B", alias="written $tag_instance")], unit="reqps",
                          min_interval="10s",
                          description="Rate of the collector's counters (CONTRACT §3 'collector').")
    points = g.timeseries("写入点数 · Readings stored per interval",
                          [g.target(f'SELECT count("value") FROM {_READING} WHERE $timeFilter '
                                    'GROUP BY time($__interval) fill(0)', "A", alias="points")], bars=True,
                          description=f"What InfluxDB holds: points of '{READING}' per interval, whoever wrote them.")
    lag = g.timeseries(
        "写入积压 · Unwritten messages (received − written − invalid)",
        [g.target(f'SELECT last("received") - last("written") - last("invalid") FROM {_COLLECTOR} WHERE $timeFilter '
                  'GROUP BY time($__interval), "instance" fill(null)', "A", alias="backlog $tag_instance")],
        min_interval="10s",
        description="Messages received but not yet in InfluxDB: batching and write latency show here as a "
                    "backlog; a growing line means InfluxDB is slow or down. An out-of-range reading counts as "
                    "written and invalid (stored with quality bad and dead-lettered), so the line can dip "
                    "below zero by their number.")
    spool = g.timeseries("缓存与重试 · Spooled and retried (per interval)",
                         [g.target(rate("spooled", "$__interval"), "A", alias="spooled $tag_instance"),
                          g.target(rate("retries", "$__interval"), "B", alias="retries $tag_instance")],
                         min_interval="10s", bars=True,
                         description="Batches put in the durable spool and write retries: non-zero while "
                                     "InfluxDB is unreachable.")
    dead = g.timeseries("死信 · Dead letters by reason",
                        [g.target(f'SELECT count("topic") FROM {_DEAD_LETTER} WHERE $timeFilter '
                                  'GROUP BY time($__interval), "reason" fill(0)', "A", alias="$tag_reason")],
                        bars=True, stack=True, description="Rejected messages (CONTRACT §3 reasons).")
    dead_tbl = g.table("最近死信 · Latest dead letters",
                       [g.target(f'SELECT "reason", "topic", "detail", "payload" FROM {_DEAD_LETTER} WHERE $timeFilter '
                                 'ORDER BY time DESC LIMIT 100', "A", table=True)])
    status = g.state_timeline(
        "服务状态 · Collector status (reports per interval)",
        [g.target(f'SELECT count("received") FROM {_COLLECTOR} WHERE $timeFilter '
                  'GROUP BY time($__interval), "instance" fill(0)', "A", alias="$tag_instance")],
        thresholds=g.threshold_steps([(1, GREEN)], RED), min_interval="1m",
        description="Green while a collector instance reports its counters; red when it stopped reporting.")
    fresh = g.table("数据新鲜度 · Latest reading per site",
                    [g.target(f'SELECT last("value") AS "value", "sensor" FROM {_READING} WHERE $timeFilter '
                              'GROUP BY "site"', "A", table=True)],
                    description="Time of the newest reading stored for each site: a site whose time lags the "
                                "others has lost its gateway, its network or the collector.")
    for p in (ingest, points, lag, spool, dead, dead_tbl, status, fresh):
        p["_w"] = 12
    status["_w"], status["_h"] = 16, 6
    fresh["_w"], fresh["_h"] = 8, 6
    return g.dashboard(
        "smartpark-collector", "采集服务 · Collector health", tags=[TAG, "collector"],
        panels=g.layout([status, fresh, ingest, points, lag, spool, dead, dead_tbl]), refresh="10s",
        time_from="now-1h",
        description="Ingest rate, backlog, spool, retries, dead letters and status of the collector instances.",
        timezone=park.park.timezone,  # the control room's clock, whatever the browser's
    )


def _first_key_figure(park: Park) -> str | None:
    for key, _, _ in KEY_FIGURES:
        try:
            return park.get(key).sensor.id
        except KeyError:
            continue
    return None


def explorer_dashboard(park: Park) -> Json:
    flt = '"site" =~ /^$site$/ AND "asset" =~ /^$asset$/ AND "sensor" =~ /^$sensor$/'
    series = g.timeseries(
        "测点 · Readings ($site/$asset/$sensor)",
        [g.target(f'SELECT mean("value") FROM {_READING} WHERE {flt} AND $timeFilter '
                  'GROUP BY time($__interval), "site", "asset", "sensor" fill(null)', "A",
                  alias="$tag_site/$tag_asset/$tag_sensor")],
        description="Any sensors side by side; pick site, asset and sensor above.")
    series["_w"], series["_h"] = 24, 10
    events = g.table("报警事件 · Alarm events of the selection",
                     [g.target(f'SELECT "sensor", "rule", "event", "state", "value", "limit", "message" FROM {_ALARM} '
                               f"WHERE {flt} AND $timeFilter ORDER BY time DESC LIMIT 200", "A", table=True)])
    events["_w"] = 24
    return g.dashboard(
        "smartpark-explorer", "测点浏览 · Sensor explorer", tags=[TAG, "explorer"],
        panels=g.layout([series, events]),
        variables=_variables("site", "asset", "sensor", default_sensor=_first_key_figure(park)),
        annotations=_annotations(None), description="Free comparison of sensors chosen with template variables.",
        timezone=park.park.timezone,  # the control room's clock, whatever the browser's
    )


def build_all(park: Park) -> list[Json]:
    """Every dashboard of the park, in a stable order."""
    return [overview(park), *(site_dashboard(park, s) for s in park.sites), alarms_dashboard(park),
            collector_dashboard(park), explorer_dashboard(park)]


def render(dash: Json) -> str:
    return json.dumps(dash, ensure_ascii=False, indent=2) + "\n"


def write_generated(park: Park, out_dir: Path = GENERATED_DIR) -> list[Path]:
    """Write every dashboard to ``<uid>.json``; files of dashboards that no longer exist are removed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for dash in build_all(park):
        path = out_dir / f"{dash['uid']}.json"
        text = render(dash)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        written.append(path)
    for stale in set(out_dir.glob("*.json")) - set(written):
        stale.unlink()
    return written


def stale_files(park: Park, out_dir: Path = GENERATED_DIR) -> list[str]:
    """Names of generated files that differ from a fresh build (missing, changed or extra)."""
    fresh = {f"{d['uid']}.json": render(d) for d in build_all(park)}
    have = {p.name: p.read_text(encoding="utf-8") for p in out_dir.glob("*.json")} if out_dir.exists() else {}
    return sorted(n for n in fresh.keys() | have.keys() if fresh.get(n) != have.get(n))


def load_generated(out_dir: Path = GENERATED_DIR) -> list[dict[str, Any]]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(out_dir.glob("*.json"))]
