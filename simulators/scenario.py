"""Incident scenarios: YAML files with a timeline of shapes and the golden alarm outcome.

A scenario says what happens to which sensors (``timeline``) and which alarms the alert engine must raise
(``expect``: sensor, rule, window of scenario time) and which notable ones it must not (``forbid``). Scenario
time t=0 is the incident start; the run starts at ``-warmup_s`` with normal operation so that rolling
averages have data. ``checks`` state the signal shape that the end-to-end test finds in InfluxDB.

Mistakes (unknown sensor, unknown shape, a parameter the shape does not take, times out of order, a rule the
sensor has no limit for) are reported as one :class:`~smartpark.errors.ConfigError` naming file, line and key.
"""

from __future__ import annotations

import fnmatch
import re
from datetime import date as Date
from datetime import datetime, time
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from smartpark.errors import ConfigError
from smartpark.park import LIMIT_KEYS, Park, load_yaml_with_lines, validate_document
from smartpark.schema import REG_5MIN_EXCURSIONS, RESERVED_RULES, is_regulatory

from .shapes import COMMON_KEYS, GARBAGE_KINDS, SHAPES, ShapeContext, Trace, apply_shape

ShapeName = Literal[tuple(SHAPES)]  # type: ignore[valid-type]  # the registry's names, checked by pydantic
RULE_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
DEFAULT_DATE = Date(2026, 11, 2)  # a Monday: scenarios replay on a fixed day so that runs are reproducible


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Event(_Strict):
    """One timeline entry. Which parameters a shape takes is in :data:`simulators.shapes.SHAPES`."""

    t_s: float
    sensor: str
    shape: ShapeName  # type: ignore[valid-type]  # a Literal built from the SHAPES registry at import
    note: str | None = None
    clock: str | None = None
    noise: float | None = Field(default=None, ge=0)  # multiplier of the sensor's noise from t_s on
    from_: float | None = Field(default=None, alias="from")
    to: float | None = None
    toward: float | None = None
    tau_s: float | None = Field(default=None, gt=0)
    until_s: float | None = None
    hold_s: float | None = Field(default=None, ge=0)
    duration_s: float | None = Field(default=None, gt=0)
    then: dict[str, Any] | None = None
    value: float | None = None
    of: str | None = None
    offset: float | None = None
    depth: float | None = None
    recovery_s: float | None = Field(default=None, gt=0)
    peak: float | None = None
    peak_at_s: float | None = Field(default=None, gt=0)
    then_to: float | None = None
    rate_per_h: float | None = None
    kind: str | None = None
    count: int | None = Field(default=None, ge=1, le=10_000)
    every_s: float | None = Field(default=None, gt=0)

    def params(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


class Expectation(_Strict):
    """An alarm the engine must raise (event ``raised``) in ``raise_s`` and, if given, clear in ``clear_s``."""

    sensor: str
    rule: str
    raise_s: tuple[float, float]
    clear_s: tuple[float, float] | None = None
    note: str | None = None


class Forbid(_Strict):
    """A notable alarm that must not happen (documentation: the golden rule forbids every unexpected alarm)."""

    sensor: str
    rule: str = "*"
    note: str | None = None


class Check(_Strict):
    """The signal shape the end-to-end test finds with InfluxQL: ``agg(value)`` over a window ``op`` a number."""

    sensor: str
    window_s: tuple[float, float]
    agg: Literal["min", "max", "mean", "count", "first", "last"]
    op: Literal["<", "<=", ">", ">="]
    value: float
    note: str | None = None

    def holds(self, observed: float) -> bool:
        return {"<": observed < self.value, "<=": observed <= self.value,
                ">": observed > self.value, ">=": observed >= self.value}[self.op]


class Scenario(_Strict):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    title: str
    title_zh: str
    site: str
    duration_s: float = Field(gt=0)
    warmup_s: float = Field(default=600, ge=0)
    t0: str = Field(default="10:00", pattern=r"^\d{2}:\d{2}(:\d{2})?$")  # local clock time of t=0
    date: Date = DEFAULT_DATE
    sensors: list[str] = []  # the incident's sensors (the others of the site run normally)
    timeline: list[Event] = Field(min_length=1)
    expect: list[Expectation] = []
    forbid: list[Forbid] = []
    checks: list[Check] = []
    basis: str | None = None
    notes: str | None = None
    file: str | None = Field(default=None, exclude=True)

    def t0_ms(self, park: Park) -> int:
        """Epoch milliseconds of scenario time 0 on the scenario's default day."""
        tz = ZoneInfo(park.park.timezone)
        dt = datetime.combine(self.date, time.fromisoformat(self.t0), tzinfo=tz)
        return int(dt.timestamp() * 1000)

    def default_start_ms(self, park: Park) -> int:
        """Epoch milliseconds of t=-warmup_s: where a run starts unless told otherwise."""
        return self.t0_ms(park) - int(self.warmup_s * 1000)

    @property
    def run_s(self) -> float:
        return self.warmup_s + self.duration_s


# --------------------------------------------------------------------------- loading and checking

def scenarios_dir() -> Path:
    return Path(str(resources.files("simulators") / "scenarios"))


def parse_scenario(text: str, park: Park, file: str = "<scenario>") -> Scenario:
    data = load_yaml_with_lines(text, file)
    scn = validate_document(Scenario, data, file,
                            "a scenario file is a mapping with id, title, site, timeline, expect")
    _check(scn, data, park, file)
    return scn.model_copy(update={"file": file})


def load_scenario(name_or_path: str | Path, park: Park) -> Scenario:
    """A shipped scenario by id (``sc01_scc_temp_drop_on_feed``, or its prefix ``sc01``) or a YAML file path."""
    text_path = Path(name_or_path)
    if not text_path.suffix and not text_path.exists():
        matches = sorted(p for p in scenarios_dir().glob("*.yaml")
                         if p.stem == str(name_or_path) or p.stem.startswith(f"{name_or_path}_"))
        if len(matches) != 1:
            known = ", ".join(p.stem for p in sorted(scenarios_dir().glob("*.yaml")))
            raise ConfigError(f"no scenario {str(name_or_path)!r} (shipped: {known}; or give a .yaml path)",
                              key="scenario")
        text_path = matches[0]
    try:
        text = text_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read scenario: {exc.strerror}", file=str(text_path)) from None
    return parse_scenario(text, park, str(text_path))


def list_scenarios(park: Park | None = None) -> list[Scenario]:
    """The shipped scenarios, in file-name order (sc01 ... sc10)."""
    from smartpark.park import load_park

    park = park or load_park()
    return [load_scenario(p, park) for p in sorted(scenarios_dir().glob("*.yaml"))]


def _line(data: Any, *path: Any) -> int | None:
    """Line of ``data[path...]`` in the YAML (the key's line for mappings, the item's for lists)."""
    node, line = data, getattr(data, "line", None)
    for part in path:
        lines = getattr(node, "lines", None)
        try:
            if isinstance(node, dict) and part in node:
                line = lines.get(part, line) if lines is not None else line
                node = node[part]
            elif isinstance(node, list) and isinstance(part, int) and part < len(node):
                line = lines[part] if lines is not None else line
                node = node[part]
            else:
                break
        except (AttributeError, IndexError, TypeError):
            break
    return line


def resolve_sensors(park: Park, pattern: str) -> list[str]:
    """``site/asset/sensor`` or a glob of keys (``hw_center/stack_cems/*``) -> the park's keys, in park order."""
    if any(c in pattern for c in "*?["):
        return [r.key for r in park if fnmatch.fnmatchcase(r.key, pattern)]
    try:
        return [park.get(pattern).key]
    except KeyError:
        return []


def _check(scn: Scenario, data: Any, park: Park, file: str) -> None:
    def err(msg: str, *path: Any) -> ConfigError:
        key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
        return ConfigError(msg, file=file, line=_line(data, *path), key=key)

    if park.site(scn.site) is None:
        raise err(f"unknown site {scn.site!r} (park sites: {', '.join(s.id for s in park.sites)})", "site")
    for i, s in enumerate(scn.sensors):
        if not resolve_sensors(park, s):
            raise err(f"unknown sensor {s!r}", "sensors", i)
    last = -float("inf")
    for i, ev in enumerate(scn.timeline):
        if not resolve_sensors(park, ev.sensor):
            raise err(f"unknown sensor {ev.sensor!r} (site/asset/sensor of the park model)", "timeline", i, "sensor")
        if ev.t_s < last:
            raise err(f"times out of order: t_s {ev.t_s:g} comes after t_s {last:g}", "timeline", i, "t_s")
        last = ev.t_s
        if not -scn.warmup_s <= ev.t_s <= scn.duration_s:
            raise err(f"t_s {ev.t_s:g} lies outside the run [-{scn.warmup_s:g}, {scn.duration_s:g}]",
                      "timeline", i, "t_s")
        _check_params(ev.params(), park, lambda msg, *p, i=i: err(msg, "timeline", i, *p), ev.t_s)
    for i, ex in enumerate(scn.expect):
        keys = resolve_sensors(park, ex.sensor)
        if not keys:
            raise err(f"unknown sensor {ex.sensor!r}", "expect", i, "sensor")
        for key in keys:
            problem = _rule_problem(park, key, ex.rule)
            if problem:
                raise err(problem, "expect", i, "rule")
        if ex.raise_s[0] > ex.raise_s[1]:
            raise err(f"times out of order: raise_s {list(ex.raise_s)}", "expect", i, "raise_s")
        if ex.clear_s is not None and (ex.clear_s[0] > ex.clear_s[1] or ex.clear_s[1] < ex.raise_s[0]):
            raise err(f"times out of order: clear_s {list(ex.clear_s)} vs raise_s {list(ex.raise_s)}",
                      "expect", i, "clear_s")
    for i, fb in enumerate(scn.forbid):
        if fb.sensor != "*" and not resolve_sensors(park, fb.sensor):
            raise err(f"unknown sensor {fb.sensor!r}", "forbid", i, "sensor")
    for i, ck in enumerate(scn.checks):
        if not resolve_sensors(park, ck.sensor):
            raise err(f"unknown sensor {ck.sensor!r}", "checks", i, "sensor")
        if ck.window_s[0] > ck.window_s[1]:
            raise err(f"times out of order: window_s {list(ck.window_s)}", "checks", i, "window_s")


def _check_params(params: dict[str, Any], park: Park, err: Any, t: float, *path: Any) -> None:
    shape = params.get("shape")
    if shape not in SHAPES:
        raise err(f"unknown shape {shape!r} (known: {', '.join(SHAPES)})", *path, "shape")
    spec = SHAPES[shape]
    for name in spec.required:
        if name not in params:
            raise err(f"shape {shape!r} needs {name!r}", *path, "shape")
    allowed = set(spec.required) | set(spec.optional) | set(COMMON_KEYS)
    for name in params:
        if name not in allowed:
            raise err(f"{name!r} does not apply to shape {shape!r} (it takes "
                      f"{', '.join(spec.required + spec.optional) or 'nothing'})", *path, name)
    if "until_s" in params and float(params["until_s"]) < t:
        raise err(f"times out of order: until_s {params['until_s']} before t_s {t:g}", *path, "until_s")
    if shape == "lag" and not resolve_sensors(park, str(params["of"])):
        raise err(f"unknown sensor {params['of']!r}", *path, "of")
    if shape == "garbage" and params.get("kind", "bad_json") not in GARBAGE_KINDS:
        raise err(f"unknown garbage kind {params.get('kind')!r} (known: {', '.join(GARBAGE_KINDS)})", *path, "kind")
    then = params.get("then")
    if then is not None:
        if not isinstance(then, dict):
            raise err("'then' is a shape: {shape: ..., ...}", *path, "then")
        end = params.get("until_s", t + float(params.get("hold_s", params.get("duration_s", 0))))
        _check_params({k: v for k, v in then.items()}, park, err, float(end), *path, "then")


def _rule_problem(park: Park, key: str, rule: str) -> str | None:
    sensor = park.get(key).sensor
    if rule in LIMIT_KEYS:
        if dict(sensor.limits.items()).get(rule) is None:
            return f"{key} has no {rule!r} limit in the park model"
        return None
    if is_regulatory(rule) and rule != REG_5MIN_EXCURSIONS:
        if rule not in {r.rule for r in sensor.regulatory}:
            return f"{key} has no regulatory limit {rule!r} (it has: {[r.rule for r in sensor.regulatory]})"
        return None
    if rule in RESERVED_RULES or RULE_RE.match(rule):
        return None
    return f"rule {rule!r} is not a rule name"


# --------------------------------------------------------------------------- compiling to traces

class Compiled:
    """A scenario drawn on a 1 s grid: the per-sensor :class:`Trace` arrays and the garbage messages."""

    def __init__(self, scn: Scenario, park: Park, nominals: dict[str, float]) -> None:
        self.scenario = scn
        self.t_first = -scn.warmup_s
        self.n = int(np.ceil(scn.run_s)) + 2
        self.traces: dict[str, Trace] = {}
        self.garbage: list[tuple[float, str, str]] = []  # (scenario t, sensor key, kind)
        for ev in scn.timeline:
            params = ev.params()
            for key in resolve_sensors(park, ev.sensor):
                if params["shape"] == "garbage":
                    count, every = int(params.get("count", 1)), float(params.get("every_s", 1.0))
                    self.garbage += [(ev.t_s + k * every, key, str(params.get("kind", "bad_json")))
                                     for k in range(count)]
                    continue
                if params["shape"] == "note":
                    continue
                trace = self.traces.setdefault(key, Trace.empty(self.n))
                sensor = park.get(key).sensor
                ctx = ShapeContext(self.t_first, self.n, nominals[key], trace, self.traces, nominals, sensor.range)
                apply_shape(ctx, params, ev.t_s)
        self.garbage.sort(key=lambda g: g[0])

    def index(self, t_rel: np.ndarray) -> np.ndarray:
        """Scenario times (s) -> trace indexes (the last grid second at or before each time)."""
        return np.clip(np.floor(t_rel - self.t_first + 1e-9).astype(np.int64), 0, self.n - 1)

