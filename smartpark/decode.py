"""Decode and validate: an MQTT message of CONTRACT §2 -> accepted readings and dead letters.

This is the first stage of the one pipeline: MQTT message -> decode -> validate against the park model ->
points (:mod:`smartpark.points`). The collector and the alarm engine both call :class:`Decoder`, so a reading
means the same to both; the HJ 212 input hands its readings to the same decoder.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import orjson

from .errors import DecodeError
from .park import Park, SensorRef
from .points import PointEncoder, reading_prefix
from .schema import (
    BAD_JSON,
    BAD_TS,
    BAD_VALUE,
    DEAD_LETTER_PAYLOAD_BYTES,
    FLAG_QUALITY,
    MAX_PAYLOAD,
    OUT_OF_RANGE,
    QUALITIES,
    TOO_LARGE,
    UNKNOWN_SENSOR,
)
from .topics import (
    ROOT,
    is_service_topic,
    reading_parts,
    sensor_path,
    snapshot_topic,
)

# epoch milliseconds accepted as a reading's time: 2000-01-01 .. 2100-01-01. Outside is almost always
# seconds sent as milliseconds (or the reverse), which would silently land in 1970.
TS_MIN_MS = 946_684_800_000
TS_MAX_MS = 4_102_444_800_000


# --------------------------------------------------------------------------- decoded data

class Reading(NamedTuple):
    """An accepted reading of one sensor.

    A NamedTuple rather than a frozen dataclass: it is built once per reading on the hot path, and a
    tuple is built in a third of the time (bench/bench_wire.py).
    """

    ref: SensorRef
    value: float
    ts_ms: int
    quality: str = "good"
    flag: str | None = None  # HJ 212 data flag, when the message carried one

    @property
    def key(self) -> str:
        return self.ref.key


@dataclass(slots=True, frozen=True)
class Rejected:
    """A message or snapshot entry that becomes a dead letter."""

    reason: str
    detail: str
    topic: str
    payload: bytes


@dataclass(slots=True)
class Decoded:
    readings: list[Reading]
    rejected: list[Rejected]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# RFC 3339 date-time with an offset; datetime.fromisoformat alone also takes ISO 8601 forms that are not
# RFC 3339 (week dates, basic format) and trailing characters
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:[Zz]|[+-]\d\d:\d\d)")


def shown(raw: Any) -> str:
    """A short description of any decoded JSON value for a dead letter's detail: never recursive, never long.

    ``repr`` of a deeply nested list raises RecursionError, and of a 4,000-digit integer fills the detail."""
    if type(raw) is str:
        return repr(raw[:32]) + ("..." if len(raw) > 32 else "")
    if type(raw) is int and raw.bit_length() > 64:
        return f"an integer of {raw.bit_length()} bits"
    if raw is None or type(raw) in (int, float, bool):
        return repr(raw)
    if type(raw) in (list, dict):
        return f"a {'list' if type(raw) is list else 'JSON object'} of {len(raw)} items"
    return f"a {type(raw).__name__}"


def parse_ts(raw: Any) -> int:
    """``ts`` as epoch milliseconds (integer) or an RFC 3339 string with offset -> epoch ms."""
    if isinstance(raw, bool):
        raise DecodeError(BAD_TS, "ts is a boolean")
    if isinstance(raw, int):
        ms = raw
    elif isinstance(raw, float):
        if not math.isfinite(raw) or raw != int(raw):
            raise DecodeError(BAD_TS, f"ts {raw!r} is not whole epoch milliseconds")
        ms = int(raw)
    elif isinstance(raw, str):
        if not _RFC3339.fullmatch(raw):
            raise DecodeError(BAD_TS, f"ts {shown(raw)} is not RFC 3339")
        try:
            dt = datetime.fromisoformat(raw)
            stamp = dt.timestamp()
        except (ValueError, OverflowError):
            raise DecodeError(BAD_TS, f"ts {shown(raw)} is not RFC 3339") from None
        ms = int(stamp * 1000 + (0.5 if stamp >= 0 else -0.5)) if dt.microsecond % 1000 else \
            int(stamp) * 1000 + dt.microsecond // 1000
    else:
        raise DecodeError(BAD_TS, f"ts is {shown(raw)}, not epoch milliseconds or RFC 3339")
    if not TS_MIN_MS <= ms < TS_MAX_MS:
        raise DecodeError(BAD_TS, f"ts {shown(ms)} is outside 2000..2100 (seconds sent as milliseconds?)")
    return ms


def parse_value(raw: Any) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise DecodeError(BAD_VALUE, f"value is {shown(raw)}, not a number")
    try:
        value = float(raw)
    except OverflowError:  # an integer beyond the largest double
        raise DecodeError(BAD_VALUE, f"value {shown(raw)} is too large for a double") from None
    if not math.isfinite(value):
        raise DecodeError(BAD_VALUE, f"value {raw!r} is not finite")
    return value


def parse_quality(raw: Any) -> str:
    if raw is None:
        return "good"
    if type(raw) is not str or raw not in QUALITIES:
        raise DecodeError(BAD_VALUE, f"quality {shown(raw)} is not one of good, uncertain, bad")
    return raw


def parse_flag(raw: Any) -> str | None:
    """An HJ 212 data flag, or None when absent."""
    if raw is None:
        return None
    if type(raw) is not str or raw not in FLAG_QUALITY:
        raise DecodeError(BAD_VALUE, f"flag {shown(raw)} is not an HJ 212 data flag ({', '.join(FLAG_QUALITY)})")
    return raw


def reading_quality(quality: Any, flag: str | None) -> str:
    """The quality given, else the one that follows from the flag (CONTRACT §2), else ``good``."""
    if quality is None:
        return FLAG_QUALITY[flag] if flag is not None else "good"
    return parse_quality(quality)


class _NotANumber(ValueError):
    """A JSON number no double can hold, or NaN/Infinity (not JSON at all): ``bad_value``."""


class _DuplicateKey(ValueError):
    """An object names a key twice: parsers disagree on which one counts, so neither does (``bad_json``)."""


def _reject_constant(name: str) -> float:
    raise _NotANumber(f"{name} is not a number")


def _parse_int(text: str) -> int:
    if len(text) > 320:  # beyond 1e308 whatever its sign; refused before int() spends time on it
        raise _NotANumber(f"an integer of {len(text)} digits is not a number a double can hold")
    return int(text)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]  # add() is None: the `or` records k
        raise _DuplicateKey(f"duplicate key {shown(dup)}")
    return doc


# One decoder for every message: json.loads(..., parse_constant=...) would build a new one per call.
_JSON = json.JSONDecoder(parse_constant=_reject_constant, parse_int=_parse_int, object_pairs_hook=_unique_keys)


def key_count(doc: Any) -> tuple[int, int]:
    """How many object keys a decoded document holds at any depth, and how many colons its strings (keys and
    values) hold (without recursion)."""
    keys = colons = 0
    todo = [doc]
    while todo:
        x = todo.pop()
        if type(x) is dict:
            keys += len(x)
            for k, v in x.items():
                colons += k.count(":")
                if type(v) is str:
                    colons += v.count(":")
                elif type(v) in (dict, list):
                    todo.append(v)
        elif type(x) is list:
            for v in x:
                if type(v) is str:
                    colons += v.count(":")
                elif type(v) in (dict, list):
                    todo.append(v)
    return keys, colons


def loads(payload: bytes) -> Any:
    """JSON with NaN/Infinity, duplicate keys and numbers beyond a double refused; nesting bounded.

    orjson parses the payloads that are valid (5x faster than the standard library here, bench/bench_wire.py);
    what it refuses is parsed again by the standard library, whose error decides the dead-letter reason
    (NaN/Infinity and numbers too large for a double: ``bad_value``; the rest: ``bad_json``) and which also
    accepts the few documents orjson is stricter about (integers beyond 64 bits, lone surrogates).
    orjson keeps the last of duplicate keys without a word. Every key is followed by a colon, and the other
    colons are inside strings: without ``\\u`` escapes (which could hide a colon) a document whose colons are
    its keys' plus its strings' has each key once. Only the others are parsed again to look.
    """
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        pass
    else:
        keys, in_strings = key_count(doc)
        colons = payload.count(b":")
        if colons == keys or (colons == keys + in_strings and b"\\u" not in payload):
            return doc
    try:
        return _JSON.decode(payload.decode("utf-8"))
    except _NotANumber as exc:
        raise DecodeError(BAD_VALUE, str(exc)) from None
    except RecursionError:
        raise DecodeError(BAD_JSON, "JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, _DuplicateKey
        raise DecodeError(BAD_JSON, str(exc)[:200]) from None


class _Known(NamedTuple):
    """What the decoder needs of a sensor, looked up once per message by its topic or snapshot key."""

    ref: SensorRef
    lo: float
    hi: float
    line: str  # its point's line protocol up to the value: ``reading,asset=..,sensor=..,site=.. value=``


def _simple_snapshot_py(sensors: dict[str, _Known], values: dict[str, Any], ts: int,
                        quality: str | None) -> list[str] | None:
    """Lines of a snapshot's values when every one is a known sensor's finite float in range, else None.

    The reference of :func:`_simple_snapshot`, which is ``smartpark._speedups.simple_snapshot`` (C,
    smartpark/_speedups.c) when the extension is built: tests/test_decode_speedups.py compares the two."""
    prefixes: list[str] = []
    floats: list[float] = []
    for name, raw in values.items():
        known = sensors.get(name)
        if known is None or type(raw) is not float or raw - raw != 0.0 or not known.lo <= raw <= known.hi:
            return None
        prefixes.append(known.line)
        floats.append(raw)
    # one orjson call formats them all (format_float's text: JSON floats hold no comma)
    texts = orjson.dumps(floats).decode()[1:-1].split(",") if floats else []
    tail = f" {ts}" if quality is None or quality == "good" else f',quality="{quality}" {ts}'
    return [f"{p}{t}{tail}" for p, t in zip(prefixes, texts, strict=True)]


try:
    from smartpark._speedups import simple_snapshot as _simple_snapshot
    SPEEDUPS = True
except ImportError:  # not built (no C compiler where smartpark was installed): the same in Python
    _simple_snapshot = _simple_snapshot_py
    SPEEDUPS = False


class Decoder:
    """Turns one MQTT message into accepted readings and dead letters, validated against the park.

    The alarm-state and service-status trees (``park/alarms/...``, ``park/_sys/...``) decode to nothing:
    they are the services' own topics, neither readings nor mistakes.

    Topics are looked up whole in dicts built once from the park (no splitting on the hot path), and the
    common payloads — a float value and an integer ``ts`` — take a fast path that checks exactly what
    :func:`parse_value` and :func:`parse_ts` check.

    :meth:`decode` and :meth:`lines` never raise: a payload that meets anything unforeseen in the code
    below is one dead letter (``bad_value``, naming the exception), so one device cannot stop a service.
    """

    def __init__(self, park: Park, *, max_age_ms: int | None = None) -> None:
        self.park = park
        self._max_age_ms = max_age_ms  # readings older than the raw retention (CONTRACT §10): bad_ts
        self._sensors: dict[str, _Known] = {}
        self._assets: dict[str, dict[str, _Known]] = {}
        self._encoder = PointEncoder(park)  # the slow path's lines: exactly what the points stage makes
        # the bounds as one float object per value, the topics and sensor ids interned: what a message's
        # lookups touch is then shared by the sensors and assets that have it, and stays in the cache when
        # thousands of them report at once (an HJ 212 burst: docs/benchmarks/hj212.md §10)
        bounds: dict[float, float] = {}
        for ref in park:
            lo, hi = (bounds.setdefault(float(b), float(b)) for b in ref.sensor.range)
            known = _Known(ref, lo, hi, reading_prefix(ref))
            self._sensors[ref.topic] = known
            self._assets.setdefault(sys.intern(snapshot_topic(ref.site, ref.asset)), {})[
                sys.intern(ref.sensor.id)] = known

    def decode(self, topic: str, payload: bytes, received_ms: int | None = None) -> Decoded:
        try:
            return self._decode(topic, payload, received_ms)
        except Exception as exc:  # the last guard: whatever a payload does, it becomes a dead letter
            return Decoded([], [Rejected(BAD_VALUE, unexpected(exc), topic, payload)])

    def _decode(self, topic: str, payload: bytes, received_ms: int | None) -> Decoded:
        out = Decoded([], [])
        if len(payload) > MAX_PAYLOAD:
            out.rejected.append(Rejected(TOO_LARGE, f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}",
                                         topic, payload))
            return out
        known = self._sensors.get(topic)
        if known is not None:
            try:
                self._reading(known, loads(payload), received_ms, out, payload)
            except DecodeError as exc:
                out.rejected.append(Rejected(exc.reason, exc.detail, topic, payload))
            return out
        sensors = self._assets.get(topic)
        if sensors is not None:
            try:
                self._snapshot(sensors, topic, payload, received_ms, out)
            except DecodeError as exc:
                out.rejected.append(Rejected(exc.reason, exc.detail, topic, payload))
            return out
        if is_service_topic(topic):  # alarm states and service status: under park/ but not readings
            return out
        parts = reading_parts(topic)
        if parts is not None:
            detail = f"no sensor {'/'.join(parts)} in the park model"
        else:
            detail = (f"topic is not {ROOT}/{{site}}/{{asset}}/{{sensor}} of a known sensor "
                      f"nor {ROOT}/{{site}}/{{asset}} of a known asset")
        out.rejected.append(Rejected(UNKNOWN_SENSOR, detail, topic, payload))
        return out

    def lines(self, topic: str, payload: bytes, received_ms: int | None = None) -> tuple[list[str], list[Rejected]]:
        """:meth:`decode` straight to line protocol (what :class:`PointEncoder` makes of its readings).

        The collector's hot path. A message whose every reading is a finite float in range with an integer
        ``ts``, a known quality, no flag and no duplicate key becomes lines without a :class:`Reading` per
        entry (half the CPU per snapshot reading, bench/bench_wire.py); anything else goes through
        :meth:`decode` whole, so that validation and dead-letter reasons have one definition.
        tests/test_wire.py checks that both agree.
        """
        ts_min = self._ts_min(received_ms)
        try:
            fast = self._fast_lines(topic, payload, ts_min)
        except Exception:  # whatever the fast path meets, decode() decides and never raises
            fast = None
        if fast is not None:
            return fast, []
        decoded = self.decode(topic, payload, received_ms)
        readings, rejected = decoded.readings, decoded.rejected
        max_age = self._max_age_ms
        if max_age is not None and any(r.ts_ms < ts_min for r in readings):
            days = max_age / 86_400_000
            rejected = rejected + [Rejected(BAD_TS, f"reading at {r.ts_ms} ms is older than the raw retention "
                                            f"({days:g} days): InfluxDB would not keep it", topic, payload)
                                   for r in readings if r.ts_ms < ts_min]
            readings = [r for r in readings if r.ts_ms >= ts_min]
        try:
            return [self._encoder.reading(r) for r in readings], rejected
        except Exception as exc:
            return [], [Rejected(BAD_VALUE, unexpected(exc), topic, payload)]

    def snapshot_lines(self, topic: str, ts: int, values: dict[str, Any],
                       received_ms: int | None = None) -> list[str] | None:
        """The lines of the good-quality snapshot ``{"ts": ts, "values": values}`` on ``topic`` when it needs
        no more than :meth:`lines`' fast path checks (the same checks, by the same function), else None: then
        :meth:`lines` of its JSON decides. For an input that holds the numbers already (HJ 212's real-time
        data) and would otherwise format and parse a JSON document per packet."""
        sensors = self._assets.get(topic)
        if sensors is None or type(ts) is not int or not self._ts_min(received_ms) <= ts < TS_MAX_MS:
            return None
        return _simple_snapshot(sensors, values, ts, None)

    def _ts_min(self, received_ms: int | None) -> int:
        """The earliest ``ts`` the raw retention keeps (or 2000-01-01 when it keeps everything)."""
        max_age = self._max_age_ms
        return TS_MIN_MS if max_age is None else max(TS_MIN_MS, (received_ms or now_ms()) - max_age)

    def _fast_lines(self, topic: str, payload: bytes, ts_min: int) -> list[str] | None:
        """Lines of a message that needs no more than the checks below, or None: :meth:`decode` decides."""
        if len(payload) > MAX_PAYLOAD:
            return None
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None
        if type(doc) is not dict:
            return None
        sensors = self._assets.get(topic)
        if sensors is not None:
            values, ts, quality = doc.get("values"), doc.get("ts"), doc.get("quality")
            if (type(values) is dict and type(ts) is int and ts_min <= ts < TS_MAX_MS
                    and (quality is None or quality in QUALITIES) and doc.get("flags") is None
                    and payload.count(b":") == len(doc) + len(values)):  # no nested keys, none twice
                return _simple_snapshot(sensors, values, ts, quality)
            return None
        known = self._sensors.get(topic)
        if known is not None:
            raw, ts, quality = doc.get("value"), doc.get("ts"), doc.get("quality")
            if (type(raw) is float and raw - raw == 0.0 and known.lo <= raw <= known.hi
                    and type(ts) is int and ts_min <= ts < TS_MAX_MS
                    and (quality is None or quality in QUALITIES) and doc.get("flag") is None
                    and payload.count(b":") == len(doc)):
                text = orjson.dumps(raw).decode()
                if quality is None or quality == "good":
                    return [f"{known.line}{text} {ts}"]
                return [f'{known.line}{text},quality="{quality}" {ts}']
        return None


    def _reading(self, known: _Known, doc: Any, received_ms: int | None, out: Decoded, payload: bytes) -> None:
        if type(doc) is dict:
            raw = doc.get("value", _MISSING)
            if raw is _MISSING:
                raise DecodeError(BAD_VALUE, "no 'value' in the reading")
            value = raw if type(raw) is float and raw - raw == 0.0 else parse_value(raw)
            ts = _message_ts(doc.get("ts"), received_ms)
            quality, flag = doc.get("quality"), doc.get("flag")
            if flag is None and (quality is None or quality == "good"):
                quality = "good"
            else:
                flag = parse_flag(flag)
                quality = reading_quality(quality, flag)
        else:
            value = parse_value(doc)
            ts = received_ms or now_ms()
            quality, flag = "good", None
        if known.lo <= value <= known.hi:
            out.readings.append(Reading(known.ref, value, ts, quality, flag))
        else:
            self._out_of_range(known, value, ts, flag, out, known.ref.topic, payload)

    def _out_of_range(self, known: _Known, value: float, ts: int, flag: str | None, out: Decoded, topic: str,
                      payload: bytes) -> None:
        """Stored with quality bad *and* dead-lettered (CONTRACT §3)."""
        ref = known.ref
        out.readings.append(Reading(ref, value, ts, "bad", flag))
        out.rejected.append(Rejected(OUT_OF_RANGE, f"{ref.key} value {value!r} outside instrument range "
                                     f"[{known.lo:g}, {known.hi:g}] {ref.sensor.unit}; stored with quality bad",
                                     topic, payload))

    def _snapshot(self, sensors: dict[str, _Known], topic: str, payload: bytes, received_ms: int | None,
                  out: Decoded) -> None:
        doc = loads(payload)
        if type(doc) is not dict or type(doc.get("values")) is not dict:
            raise DecodeError(BAD_VALUE, "a snapshot is {\"ts\": ..., \"values\": {sensor: number}}")
        ts = _message_ts(doc.get("ts"), received_ms)
        # "quality": one for every entry, or {sensor: quality}; "flags": {sensor: flag} (CONTRACT §2)
        quality = doc.get("quality")
        qualities: dict[str, Any] = {}
        if type(quality) is dict:
            qualities, quality = quality, None
        elif quality is not None:
            quality = parse_quality(quality)
        flags = doc.get("flags")
        if flags is None:
            flags = {}
        elif type(flags) is not dict:
            raise DecodeError(BAD_VALUE, f"flags is {shown(flags)}, not {{sensor: HJ 212 flag}}")
        # "origin": the snapshot's readings were validated, stored and dead-lettered at their source
        # (hj212 serve's engine feed, "hj212/<MN>"): an entry out of range is a bad reading here, not a
        # second dead letter
        origin = doc.get("origin")
        append = out.readings.append
        for name, raw in doc["values"].items():
            known = sensors.get(name)
            if known is None:
                out.rejected.append(Rejected(UNKNOWN_SENSOR, f"snapshot entry {shown(name)}: no such sensor "
                                             f"in {sensor_path(topic)}", topic, _entry_payload(name, raw)))
                continue
            equality, eflag = qualities.get(name, quality), flags.get(name)
            if (type(raw) is float and raw - raw == 0.0 and known.lo <= raw <= known.hi and eflag is None
                    and (equality is None or (type(equality) is str and equality in QUALITIES))):
                append(Reading(known.ref, raw, ts, equality or "good"))  # the common case, checked in full
                continue
            try:
                if type(raw) is dict:
                    value = parse_value(raw.get("value"))
                    ets = parse_ts(raw["ts"]) if raw.get("ts") is not None else ts
                    equality = raw.get("quality", equality)
                    eflag = raw.get("flag", eflag)
                else:
                    value, ets = parse_value(raw), ts
                eflag = parse_flag(eflag)
                equality = reading_quality(equality, eflag)
            except DecodeError as exc:
                out.rejected.append(Rejected(exc.reason, f"snapshot entry {shown(name)}: {exc.detail}", topic,
                                             _entry_payload(name, raw)))
                continue
            except Exception as exc:  # one odd entry is its own dead letter; the others are kept
                out.rejected.append(Rejected(BAD_VALUE, f"snapshot entry {shown(name)}: {unexpected(exc)}", topic,
                                             _entry_payload(name, raw)))
                continue
            if known.lo <= value <= known.hi:
                append(Reading(known.ref, value, ets, equality, eflag))
            elif origin is not None:
                append(Reading(known.ref, value, ets, "bad", eflag))
            else:
                # the entry's dead-letter payload is built only when needed: it was a third of the decode time
                self._out_of_range(known, value, ets, eflag, out, topic, _entry_payload(name, raw))


def unexpected(exc: BaseException) -> str:
    """The detail of a dead letter for an exception nobody foresaw: its type and (short) text."""
    try:
        text = str(exc)
    except Exception:  # an exception whose text cannot be made
        text = ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


_MISSING = object()


def _message_ts(raw: Any, received_ms: int | None) -> int:
    """A message's ``ts``: absent -> the receive time; integer epoch ms in range -> itself (the fast path)."""
    if raw is None:
        return received_ms or now_ms()
    if type(raw) is int and TS_MIN_MS <= raw < TS_MAX_MS:
        return raw
    return parse_ts(raw)


def _entry_payload(name: str, raw: Any) -> bytes:
    """A snapshot entry as its own small JSON document, for its dead letter.

    orjson refuses what nests deeper than 254 levels or holds integers beyond 64 bits, where the standard
    library would recurse or spend time; such an entry is described instead of copied."""
    try:
        return orjson.dumps({name: raw})[:DEAD_LETTER_PAYLOAD_BYTES]
    except (orjson.JSONEncodeError, TypeError):
        pass
    try:  # a lone surrogate, which only the standard library writes (as an escape)
        return json.dumps({name: raw}).encode()[:DEAD_LETTER_PAYLOAD_BYTES]
    except (RecursionError, ValueError, TypeError):
        return json.dumps({name: shown(raw)}).encode()[:DEAD_LETTER_PAYLOAD_BYTES]
