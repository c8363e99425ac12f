"""The rules file: custom rules, plant states that suppress alarms by design, notification routes.

The park model already defines every limit, rate, flat-line and regulatory rule (CONTRACT §4); this file
adds only what the park model cannot say. Like the park model it is checked before any I/O and a mistake
is one line naming the file, the line and the key::

    rules:
      - name: scc_cold_feed                 # rule name, becomes the last part of the alarm id
        sensor: hw_center/scc/temp          # the sensor the alarm is attached to
        when: "temp < 1100 and rotary_kiln.feed_rate > 0"   # sensors of the same asset, or asset.sensor
        priority: high
        message: SCC below 1100 C while feeding waste
        message_zh: 投料时二燃室温度低于1100℃
        suppressed_by: [incinerator_off]
    states:
      - name: incinerator_off
        site: hw_center
        when: "rotary_kiln.feed_rate < 0.1 and scc.temp < 850"
        suppresses: ["hw_center/stack_cems/*"]   # alarm-id globs: site/asset/sensor[/rule]
    routes:
      - notify: "dingtalk://token/"          # an apprise URL, or  webhook: http://...
        sites: [hw_center]
        priorities: [high, medium]
        repeat_min: 30                      # repeat while unacknowledged
        escalate_after_min: 15
        escalate_to: "mailto://user:pass@example.com"
"""

from __future__ import annotations

import ast
import fnmatch
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from smartpark.errors import ConfigError
from smartpark.park import ID_RE, Park, load_yaml_with_lines, locate, validate_document
from smartpark.schema import RESERVED_RULES, is_regulatory

Name = Annotated[str, Field(pattern=ID_RE.pattern)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CustomRuleSpec(_Strict):
    name: Name
    sensor: str
    when: str
    priority: Literal["high", "medium", "low"] = "medium"
    message: str | None = None
    message_zh: str | None = None
    on_delay_s: float = Field(default=0.0, ge=0)
    off_delay_s: float = Field(default=0.0, ge=0)
    suppressed_by: list[Name] = []


class StateSpec(_Strict):
    name: Name
    site: Name
    when: str
    suppresses: list[str] = []


class RouteSpec(_Strict):
    notify: str | None = None
    webhook: str | None = None
    sites: list[Name] = []
    priorities: list[Literal["high", "medium", "low"]] = []
    repeat_min: float | None = Field(default=None, gt=0)
    escalate_after_min: float | None = Field(default=None, gt=0)
    escalate_to: str | None = None


class RulesFile(_Strict):
    rules: list[CustomRuleSpec] = []
    states: list[StateSpec] = []
    routes: list[RouteSpec] = []
    max_shelve_h: float = Field(default=24.0, gt=0)


# --------------------------------------------------------------------------- expressions

_ALLOWED = (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.UAdd, ast.Compare,
            ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Eq, ast.NotEq, ast.BinOp, ast.Add, ast.Sub, ast.Mult, ast.Div,
            ast.Constant, ast.Name, ast.Attribute, ast.Load, ast.Call)
_FUNCS = {"abs": abs, "min": min, "max": max}


@dataclass(frozen=True)
class Expression:
    """A compiled boolean expression over sensor values. ``fn(values)`` with ``values[index]``."""

    text: str
    indexes: tuple[int, ...]
    fn: Callable[[Sequence[float | None]], bool]


def compile_expression(text: str, park: Park, site: str, asset: str | None) -> Expression:
    """Compile ``text``; names are ``sensor`` (of ``asset``) or ``asset.sensor`` (of ``site``).

    Only comparisons, arithmetic, and/or/not, numbers and abs/min/max are allowed: a rules file is
    configuration, not code. Raises ValueError with the reason."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"bad expression {text!r}: {exc.msg}") from None
    indexes: list[int] = []

    def ref(node: ast.AST) -> str:
        if isinstance(node, ast.Name):
            if asset is None:
                raise ValueError(f"{node.id!r}: write asset.sensor in a plant state")
            key = f"{site}/{asset}/{node.id}"
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            key = f"{site}/{node.value.id}/{node.attr}"
        else:
            raise ValueError(f"bad expression {text!r}: only sensor or asset.sensor names")
        r = park.lookup(*key.split("/"))
        if r is None:
            raise ValueError(f"unknown sensor {key!r} in expression {text!r}")
        if r.index not in indexes:
            indexes.append(r.index)
        return f"v[{r.index}]"

    def emit(node: ast.AST) -> str:
        if not isinstance(node, _ALLOWED):
            raise ValueError(f"bad expression {text!r}: {type(node).__name__} is not allowed")
        if isinstance(node, ast.Expression):
            return emit(node.body)
        if isinstance(node, ast.BoolOp):
            op = " and " if isinstance(node.op, ast.And) else " or "
            return "(" + op.join(emit(v) for v in node.values) + ")"
        if isinstance(node, ast.UnaryOp):
            op = {ast.Not: "not ", ast.USub: "-", ast.UAdd: "+"}[type(node.op)]
            return f"({op}{emit(node.operand)})"
        if isinstance(node, ast.Compare):
            ops = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}
            out = emit(node.left)
            for o, c in zip(node.ops, node.comparators, strict=True):
                out += f" {ops[type(o)]} {emit(c)}"
            return f"({out})"
        if isinstance(node, ast.BinOp):
            ops2 = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
            if type(node.op) not in ops2:
                raise ValueError(f"bad expression {text!r}: operator not allowed")
            return f"({emit(node.left)} {ops2[type(node.op)]} {emit(node.right)})"
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
                raise ValueError(f"bad expression {text!r}: only numbers are allowed as constants")
            return repr(node.value)
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCS or node.keywords:
                raise ValueError(f"bad expression {text!r}: only abs(), min(), max() may be called")
            return f"{node.func.id}(" + ", ".join(emit(a) for a in node.args) + ")"
        return ref(node)

    body = emit(tree)
    if not indexes:
        raise ValueError(f"expression {text!r} names no sensor")
    code = compile(f"lambda v: bool({body})", "<rule>", "eval")
    fn = eval(code, {"__builtins__": {}, "bool": bool, **_FUNCS})  # the AST was restricted above
    return Expression(text, tuple(indexes), fn)


# --------------------------------------------------------------------------- compiled rule set

@dataclass(frozen=True)
class CustomRule:
    spec: CustomRuleSpec
    site: str
    asset: str
    sensor: str
    index: int  # the anchor sensor
    expr: Expression


@dataclass(frozen=True)
class PlantState:
    spec: StateSpec
    expr: Expression


@dataclass
class RuleSet:
    """Everything the engine needs beyond the park model; empty by default."""

    custom: list[CustomRule] = field(default_factory=list)
    states: list[PlantState] = field(default_factory=list)
    routes: list[RouteSpec] = field(default_factory=list)
    max_shelve_s: float = 24 * 3600.0
    file: str | None = None

    def suppressors(self, alarm_id: str, custom: CustomRule | None = None) -> list[str]:
        """Names of the plant states that suppress an alarm by design."""
        out = [s.spec.name for s in self.states
               if any(fnmatch.fnmatchcase(alarm_id, g) or fnmatch.fnmatchcase(alarm_id, g.rstrip("/") + "/*")
                      for g in s.spec.suppresses)]
        if custom is not None:
            out += [n for n in custom.spec.suppressed_by if n not in out]
        return out


def parse_rules(text: str, park: Park, file: str = "<rules>") -> RuleSet:
    data = load_yaml_with_lines(text, file)
    if data is None:
        return RuleSet(file=file)
    spec = validate_document(RulesFile, data, file, "a rules file is a mapping with rules, states, routes")

    def err(msg: str, *loc: object) -> ConfigError:
        line, key = locate(data, tuple(loc))
        return ConfigError(msg, file=file, line=line, key=key or None)

    state_names = {s.name for s in spec.states}
    states: list[PlantState] = []
    for i, st in enumerate(spec.states):
        if park.site(st.site) is None:
            raise err(f"unknown site {st.site!r}", "states", i, "site")
        try:
            states.append(PlantState(st, compile_expression(st.when, park, st.site, None)))
        except ValueError as exc:
            raise err(str(exc), "states", i, "when") from None
    custom: list[CustomRule] = []
    seen: set[str] = set()
    for i, r in enumerate(spec.rules):
        parts = r.sensor.split("/")
        ref = park.lookup(*parts) if len(parts) == 3 else None
        if ref is None:
            raise err(f"unknown sensor {r.sensor!r}", "rules", i, "sensor")
        if r.name in RESERVED_RULES or is_regulatory(r.name):
            raise err(f"rule name {r.name!r} is reserved for the park model's rules", "rules", i, "name")
        if f"{r.sensor}/{r.name}" in seen:
            raise err(f"duplicate rule {r.name!r} on {r.sensor}", "rules", i, "name")
        seen.add(f"{r.sensor}/{r.name}")
        for n in r.suppressed_by:
            if n not in state_names:
                raise err(f"unknown plant state {n!r}", "rules", i, "suppressed_by")
        try:
            expr = compile_expression(r.when, park, ref.site, ref.asset)
        except ValueError as exc:
            raise err(str(exc), "rules", i, "when") from None
        custom.append(CustomRule(r, ref.site, ref.asset, ref.sensor.id, ref.index, expr))
    for i, rt in enumerate(spec.routes):
        if bool(rt.notify) == bool(rt.webhook):
            raise err("a route has exactly one of notify (apprise URL) or webhook", "routes", i)
        for s in rt.sites:
            if park.site(s) is None:
                raise err(f"unknown site {s!r}", "routes", i, "sites")
    return RuleSet(custom, states, list(spec.routes), spec.max_shelve_h * 3600.0, file)


def load_rules(path: str | os.PathLike[str] | None, park: Park) -> RuleSet:
    """Load a rules file; ``None`` means no custom rules."""
    if path is None:
        return RuleSet()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read rules file: {exc.strerror}", file=str(p)) from None
    return parse_rules(text, park, str(p))
