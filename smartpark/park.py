"""The park model (CONTRACT §4): sites, assets, sensors, units, ranges and limits.

It is the single source of truth that the collector, the alarm engine, the dashboards and the simulators
all read. :func:`load_park` validates a YAML file with pydantic and reports the first mistake as a
:class:`~smartpark.errors.ConfigError` naming the file, the line and the key.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
import reprlib
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .schema import LIMIT_RULES
from .topics import sensor_topic

ID_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
Id = Annotated[str, Field(pattern=ID_RE.pattern)]
Averaging = Literal["instant", "5min", "1h", "24h", "monthly"]
Priority = Literal["high", "medium", "low"]
LIMIT_KEYS = LIMIT_RULES  # each limit key raises the rule of its name
AVERAGING_SECONDS: dict[str, int] = {"instant": 0, "5min": 300, "1h": 3600, "24h": 86400, "monthly": 30 * 86400}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ParkInfo(_Strict):
    id: Id
    name: str
    name_zh: str | None = None
    timezone: str = "Asia/Shanghai"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        """Checked here, so that an unknown zone is a configuration error and not a crash of a service."""
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(f"unknown time zone {v[:64]!r} (an IANA name such as Asia/Shanghai or UTC)") from None
        return v


class Limits(_Strict):
    ll: float | None = None
    l: float | None = None  # noqa: E741  # the ISA-18.2 name of the low limit
    h: float | None = None
    hh: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Limits:
        present = [(k, getattr(self, k)) for k in LIMIT_KEYS if getattr(self, k) is not None]
        for (k1, v1), (k2, v2) in itertools.pairwise(present):
            if v1 > v2:
                raise ValueError(f"limits are inverted: {k1}={v1} > {k2}={v2}")
        return self

    def items(self) -> list[tuple[str, float]]:
        return [(k, v) for k in LIMIT_KEYS if (v := getattr(self, k)) is not None]


class Regulatory(_Strict):
    """A legal limit on an average: evaluated on the mean the standard defines, not on raw readings."""

    limit: float | tuple[float, float]
    averaging: Averaging
    comparator: Literal["max", "min", "range"] = "max"
    source: str
    min_valid: float | None = Field(default=None, gt=0, le=1)  # share of valid data for a valid average

    @model_validator(mode="after")
    def _shape(self) -> Regulatory:
        if self.comparator == "range":
            if not isinstance(self.limit, tuple) or self.limit[0] > self.limit[1]:
                raise ValueError("a 'range' regulatory limit is [low, high]")
        elif isinstance(self.limit, tuple):
            raise ValueError(f"a '{self.comparator}' regulatory limit is one number")
        return self

    @property
    def rule(self) -> str:
        return f"reg_{self.averaging}"


class Sensor(_Strict):
    id: Id
    name: str
    name_zh: str | None = None
    unit: str = Field(min_length=1)
    range: tuple[float, float]
    normal: tuple[float, float]
    interval_s: float = Field(gt=0)
    sample_cycle_s: float | None = Field(default=None, gt=0)
    limits: Limits = Limits()
    deadband: float = Field(default=0.0, ge=0)
    on_delay_s: float = Field(default=0.0, ge=0)
    off_delay_s: float = Field(default=0.0, ge=0)
    rate_per_min: float | None = Field(default=None, gt=0)  # rate-of-change alarm, units per minute
    stuck_s: float | None = Field(default=None, gt=0)  # flat-line window override
    bad_quality_s: float | None = Field(default=None, gt=0)  # bad-quality alarm after this (default 3 x interval)
    priority: dict[str, Priority] = {}
    regulatory: list[Regulatory] = []
    sim: dict[str, Any] = {}

    @field_validator("range", "normal")
    @classmethod
    def _increasing(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] >= v[1]:
            raise ValueError(f"must be [low, high] with low < high, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Sensor:
        lo, hi = self.range
        if self.normal[0] < lo or self.normal[1] > hi:
            raise ValueError(f"normal band {list(self.normal)} lies outside the instrument range "
                             f"{list(self.range)}")
        seen: set[str] = set()
        for reg in self.regulatory:
            if reg.rule in seen:
                raise ValueError(f"two regulatory limits with averaging {reg.averaging}")
            seen.add(reg.rule)
        return self

    @property
    def report_cycle_s(self) -> float:
        """How often a *new* value appears (analyzers publish a staircase)."""
        return self.sample_cycle_s or self.interval_s


class Hj212Code(_Strict):
    """A pollutant code's sensor, and which of the packet's values it takes (CONTRACT §4, §7)."""

    sensor: Id
    value: Literal["measured", "converted"] = "measured"


class Hj212Logger(_Strict):
    """An HJ 212 data logger that reports for the asset, found by its MN (CONTRACT §7)."""

    mn: str = Field(pattern=r"^[0-9A-Za-z\-_]{1,32}$")
    pw: str | None = Field(default=None, pattern=r"^[!-~]{0,9}$")
    sm4_key: str | None = Field(default=None, pattern=r"^[0-9A-Fa-f]{32}$")
    codes: dict[str, Hj212Code] = Field(min_length=1)  # ``code: sensor`` is short for ``{sensor: ...}``

    @field_validator("codes", mode="before")
    @classmethod
    def _string_codes(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        for code in v:
            if not isinstance(code, str) or not re.fullmatch(r"[A-Za-z0-9_]{1,16}", code):
                raise ValueError(f"pollutant code {code!r} must be a string of letters and digits "
                                 "(quote codes such as \"011\")")
        return {code: {"sensor": t} if isinstance(t, str) else t for code, t in v.items()}

    def code_map(self) -> dict[str, Hj212Code]:
        return dict(self.codes)


def _ids_once(what: str) -> AfterValidator:
    """Refuses a list of sites, assets or sensors in which an id appears twice."""
    def check(v: list[Any]) -> list[Any]:
        _check_unique([x.id for x in v], what)
        return v
    return AfterValidator(check)


class Asset(_Strict):
    id: Id
    name: str
    name_zh: str | None = None
    hj212: list[Hj212Logger] = []
    sensors: Annotated[list[Sensor], _ids_once("sensor")] = Field(min_length=1)

    @model_validator(mode="after")
    def _hj212_sensors(self) -> Asset:
        ids = {s.id for s in self.sensors}
        for logger in self.hj212:
            for code, target in logger.code_map().items():
                if target.sensor not in ids:
                    raise ValueError(f"hj212 logger {logger.mn}: code {code} names sensor {target.sensor!r}, "
                                     f"which asset {self.id} does not have")
        return self


class Site(_Strict):
    id: Id
    name: str
    name_zh: str | None = None
    assets: Annotated[list[Asset], _ids_once("asset")] = Field(min_length=1)


def _check_unique(ids: list[str], what: str) -> None:
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise ValueError(f"duplicate {what} id {i!r}")
        seen.add(i)


class SensorRef(BaseModel):
    """A sensor with its place in the park; what the pipeline looks up per message."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)
    site: str
    asset: str
    sensor: Sensor
    index: int  # dense 0..n-1, stable for a given park file: lets numpy arrays be indexed by sensor

    @property
    def key(self) -> str:
        return f"{self.site}/{self.asset}/{self.sensor.id}"

    @property
    def topic(self) -> str:
        return sensor_topic(self.key)


class Park(_Strict):
    park: ParkInfo
    sites: list[Site] = Field(min_length=1)

    @field_validator("sites")
    @classmethod
    def _unique(cls, v: list[Site]) -> list[Site]:
        _check_unique([s.id for s in v], "site")
        if any(s.id in RESERVED_SITES for s in v):
            raise ValueError(f"site ids {sorted(RESERVED_SITES)} are reserved by the contract")
        return v

    @model_validator(mode="after")
    def _mn_once(self) -> Park:
        seen: dict[str, str] = {}
        for site in self.sites:
            for asset in site.assets:
                for logger in asset.hj212:
                    where = f"{site.id}/{asset.id}"
                    if logger.mn in seen:
                        raise ValueError(f"hj212 MN {logger.mn} appears twice ({seen[logger.mn]} and {where})")
                    seen[logger.mn] = where
        return self

    # --- lookups (built once, the model is frozen) ---
    @functools.cached_property
    def _index(self) -> dict[str, SensorRef]:
        out: dict[str, SensorRef] = {}
        for site in self.sites:
            for asset in site.assets:
                for sensor in asset.sensors:
                    ref = SensorRef(site=site.id, asset=asset.id, sensor=sensor, index=len(out))
                    out[ref.key] = ref
        return out

    @functools.cached_property
    def _assets(self) -> dict[str, Asset]:
        return {f"{s.id}/{a.id}": a for s in self.sites for a in s.assets}

    def sensors(self) -> list[SensorRef]:
        return list(self._index.values())

    def lookup(self, site: str, asset: str, sensor: str) -> SensorRef | None:
        return self._index.get(f"{site}/{asset}/{sensor}")

    def get(self, key: str) -> SensorRef:
        """``site/asset/sensor`` -> reference; KeyError when unknown."""
        return self._index[key]

    def asset(self, site: str, asset: str) -> Asset | None:
        return self._assets.get(f"{site}/{asset}")

    def site(self, site_id: str) -> Site | None:
        return next((s for s in self.sites if s.id == site_id), None)

    def __iter__(self) -> Iterator[SensorRef]:  # type: ignore[override]  # iterate sensors, not fields
        return iter(self._index.values())

    def __len__(self) -> int:
        return len(self._index)


# park/alarms/... is the alarm-state tree (CONTRACT §2); "_sys" already fails the id regex
RESERVED_SITES = frozenset({"alarms"})


# --------------------------------------------------------------------------- loading with line numbers

# Bounds of a model file: it is configuration, not data. Aliases are kept (they share one object), but the
# document they stand for may not grow past MAX_NODES nodes more than its own text has characters (a 700-byte
# "billion laughs" stands for 10^9; a document without aliases has fewer nodes than characters, however many
# thousand assets it describes), and nesting stops at MAX_DEPTH, well before Python's recursion limit.
MAX_NODES = 200_000
MAX_DEPTH = 64


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that records the line of every mapping key and value, refuses duplicate and unhashable keys,
    and bounds nesting and what aliases expand to; every refusal names the line and the key path."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._max_nodes = MAX_NODES + len(stream)
        self._path: list[Any] = []
        self._sizes: dict[int, int] = {}  # id(node) -> nodes it stands for, aliases expanded

    def _where(self) -> str:
        out = ""
        for part in self._path:
            if isinstance(part, int):
                out += f"[{part}]"
            elif isinstance(part, yaml.ScalarNode):
                out += ("." if out else "") + str(part.value)[:64]
        return out if len(out) <= 160 else out[:150] + "..."

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._path.append(index)
        try:
            if len(self._path) > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise ConfigError(f"nested more than {MAX_DEPTH} levels deep", line=mark.line + 1,
                                  key=self._where() or None)
            alias = self.check_event(yaml.AliasEvent)
            node = super().compose_node(parent, index)
            if alias:  # the anchored node itself: complete, or else it contains this alias
                if node is not None and id(node) not in self._sizes:
                    raise ConfigError("an alias refers to a node that contains it", line=node.start_mark.line + 1,
                                      key=self._where() or None)
                return node
            if isinstance(node, yaml.MappingNode):
                for key_node, _ in node.value:
                    if not isinstance(key_node, yaml.ScalarNode):  # a list or mapping as a key: unhashable
                        raise ConfigError("a key must be a plain value, not a list or mapping",
                                          line=key_node.start_mark.line + 1, key=self._where() or None)
            if node is not None and id(node) not in self._sizes:
                self._sizes[id(node)] = self._size(node)
            return node
        finally:
            self._path.pop()

    def _size(self, node: yaml.Node) -> int:
        if isinstance(node, yaml.ScalarNode):
            return 1
        children = node.value if isinstance(node, yaml.SequenceNode) else [n for kv in node.value for n in kv]
        size = 1
        for child in children:
            size += self._sizes[id(child)]  # composed before its parent, or an alias checked above
        if size > self._max_nodes:
            raise ConfigError(f"aliases expand this to more than {self._max_nodes:,} values (an alias bomb?)",
                              line=node.start_mark.line + 1, key=self._where() or None)
        return size


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    mapping: dict[Any, Any] = {}
    lines: dict[Any, int] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in mapping:
            raise ConfigError(f"duplicate key {key!r}", line=key_node.start_mark.line + 1, key=str(key))
        mapping[key] = loader.construct_object(value_node, deep=True)
        lines[key] = key_node.start_mark.line + 1
    return _Mapping(mapping, lines, node.start_mark.line + 1)


def _construct_sequence(loader: _LineLoader, node: yaml.SequenceNode, deep: bool = False) -> list[Any]:
    items = [loader.construct_object(child, deep=True) for child in node.value]
    return _Sequence(items, [c.start_mark.line + 1 for c in node.value], node.start_mark.line + 1)


class _Mapping(dict[Any, Any]):
    def __init__(self, data: dict[Any, Any], lines: dict[Any, int], line: int) -> None:
        super().__init__(data)
        self.lines = lines
        self.line = line


class _Sequence(list[Any]):
    def __init__(self, data: list[Any], lines: list[int], line: int) -> None:
        super().__init__(data)
        self.lines = lines
        self.line = line


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def load_yaml_with_lines(text: str, file: str) -> Any:
    """Parse YAML keeping line numbers (``.lines``/``.line`` on mappings and lists); errors name the file."""
    try:
        return yaml.load(text, Loader=_LineLoader)  # _LineLoader derives from SafeLoader
    except ConfigError as exc:
        raise ConfigError(exc.message, file=file, line=exc.line, key=exc.key) from None
    except RecursionError:  # not reached within MAX_DEPTH; kept so that no file can end in a traceback
        raise ConfigError("nested too deeply", file=file) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"not valid YAML: {problem}", file=file,
                          line=mark.line + 1 if mark else None) from None


def locate(data: Any, loc: tuple[Any, ...]) -> tuple[int | None, str]:
    """Follow a pydantic error location into the parsed YAML: (line, dotted key path with ids)."""
    line: int | None = getattr(data, "line", None)
    node = data
    names: list[str] = []
    for part in loc:
        if isinstance(node, _Mapping) and part in node:
            line = node.lines.get(part, line)
            names.append(str(part))
            node = node[part]
        elif isinstance(node, _Sequence) and isinstance(part, int) and 0 <= part < len(node):
            line = node.lines[part]
            item = node[part]
            ident = item.get("id") if isinstance(item, dict) else None
            names.append(f"[{ident}]" if ident is not None else f"[{part}]")
            node = item
        else:
            if isinstance(part, str) and not part.startswith(("function-", "tuple[", "list[", "float", "int")):
                names.append(part)
            break
    return line, ".".join(names).replace(".[", "[")


def validation_error(exc: ValidationError, data: Any, file: str) -> ConfigError:
    """The first pydantic error as one ConfigError with file, line and key."""
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    line, key = locate(data, loc)
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = f"unknown key {loc[-1]!r}"
    elif err["type"] == "missing":
        msg = f"missing required key {loc[-1]!r}"
    elif err["type"] == "literal_error":
        msg = f"{msg}, got {reprlib.repr(err.get('input'))}"  # bounded, whatever the input holds
    return ConfigError(msg, file=file, line=line, key=key or None)


M = TypeVar("M", bound=BaseModel)


def validate_document(model: type[M], data: Any, file: str, shape: str) -> M:
    """Validate a YAML document read with :func:`load_yaml_with_lines` against ``model``; every mistake is one
    :class:`ConfigError` with file, line and key. ``shape`` says what the top level should be.

    The park model, the alert rules and the scenarios are all checked this way."""
    if not isinstance(data, dict):
        raise ConfigError(shape, file=file, line=1)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, data, file) from None


def parse_park(text: str, file: str = "<park>") -> Park:
    return validate_document(Park, load_yaml_with_lines(text, file), file,
                             "a park file is a mapping with 'park' and 'sites'")


def default_park_path() -> Path:
    return Path(str(resources.files("smartpark") / "data" / "park.yaml"))


def read_text(path: str, what: str = "park model") -> str:
    """A model file as text; not UTF-8 is a :class:`ConfigError` at the line (and key) of the first bad byte."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what}: {exc.strerror}", file=path) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        text = data.split(b"\n")[line - 1].decode("utf-8", "replace")
        m = re.match(r"\s*(?:-\s*)?([A-Za-z_][\w-]*)\s*:", text)
        column = exc.start - data.rfind(b"\n", 0, exc.start)
        raise ConfigError(f"not UTF-8: byte 0x{data[exc.start]:02x} at column {column}", file=path, line=line,
                          key=m.group(1) if m else None) from None


@functools.lru_cache(maxsize=8)
def _load_cached(path: str, mtime: float) -> Park:
    return parse_park(read_text(path), path)


def load_park(path: str | os.PathLike[str] | None = None) -> Park:
    """Load and validate a park model; ``None`` means the bundled one."""
    p = Path(path) if path else default_park_path()
    try:
        mtime = p.stat().st_mtime
    except OSError as exc:
        raise ConfigError(f"cannot read park model: {exc.strerror}", file=str(p)) from None
    return _load_cached(str(p), mtime)
