"""A data logger's packet -> the points it carries, validated against the park model like an MQTT reading.

:class:`LoggerMap` finds a logger by MN (CONTRACT §4). :class:`PacketDecoder` turns real-time data (2011)
into ``reading`` points: the mapped codes' values become the MQTT snapshot ``{"ts", "values", "quality",
"flags"}`` of their asset (one per quality), which :class:`smartpark.decode.Decoder` validates as it would any
snapshot, so range checks, ``out_of_range`` (stored with quality bad and dead-lettered), ``bad_ts`` and
quality have one definition for both inputs; each code's ``-Flag`` is then added as the ``flag`` field, and
the same snapshot is what the alarm engine receives. Minute, hour and day data (2051, 2061, 2031) become
``hj212`` points.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from smartpark.decode import TS_MAX_MS, TS_MIN_MS, Decoder, Rejected
from smartpark.park import Hj212Code, Hj212Logger, Park, SensorRef
from smartpark.points import PERIOD_CNS, flag_quality, period_line, reading_line, reading_prefix, with_flag
from smartpark.schema import BAD_TS, BAD_VALUE, HJ212_FRAME, OUT_OF_RANGE
from smartpark.topics import hj212_topic as dead_letter_topic
from smartpark.topics import snapshot_topic

from .packet import NUMBER, Packet, PacketError, datatime_ms


def realtime_values_py(items: dict[str, str], spec: tuple[tuple[str, str, str], ...],
                       keys: frozenset[str]) -> dict[str, float] | None:
    """The values of a real-time packet's CP ``items`` by sensor, for a logger's ``spec`` (:attr:`Logger.realtime`),
    when every key is one of ``keys`` (:attr:`Logger.realtime_keys`), every value a number (``NUMBER``) and
    every flag ``N`` or absent; else None. The reference of :func:`realtime_values`, which is
    ``hj212._speedups.realtime_values`` when the extension is built (it also returns None for non-ASCII
    values, which the general path then reads; tests/test_hj212_speedups.py compares the two)."""
    if not spec or not items.keys() <= keys:
        return None
    values: dict[str, float] = {}
    number = NUMBER.fullmatch
    for value_key, flag_key, sensor in spec:
        value = items.get(value_key)
        flag = items.get(flag_key)
        if value is None or (flag and flag != "N") or not number(value):
            return None
        values[sensor] = float(value)
    return values


try:
    from hj212._speedups import realtime_values
except ImportError:  # not built: the same in Python
    realtime_values = realtime_values_py


def kept_json(doc: object) -> bytes:
    """``orjson.dumps(doc)`` in a buffer of its own size, for a payload that is held (the engine feed's, until
    the broker's PUBACK). orjson 3.12 and later return their output in the buffer they wrote it in, at least
    4 KiB, and do not shrink it (ijl/orjson; Home Assistant trims its cached outputs the same way): 5,000
    snapshots of a burst of loggers held 20 MB, 4 KiB a packet, each a fresh page the kernel zeroes. The copy
    costs less than that: 0.8 against 2.0 us a snapshot held (docs/benchmarks/hj212.md §6)."""
    return bytes(memoryview(orjson.dumps(doc)))

REALTIME = "2011"
_REALTIME_FIELDS = ("Rtd", "ZsRtd", "Flag", "SampleTime", "EFlag")  # of a mapped code, in 2011 data


@dataclass(frozen=True, slots=True)
class Logger:
    """A logger of the park: its configuration and, per pollutant code, the sensor and which value it takes."""

    site: str
    asset: str
    config: Hj212Logger
    codes: dict[str, tuple[SensorRef, Hj212Code]]
    # the fast path of real-time data (PacketDecoder.realtime_fast): per mapped code of this asset, the key of
    # the value it takes, the key of its flag and its sensor; and every key such a packet may hold
    realtime: tuple[tuple[str, str, str], ...] = ()
    realtime_keys: frozenset[str] = frozenset()
    topic: str = ""  # the asset's snapshot topic
    # the configuration's MN (the map's key, the very object) and PW, read per packet without the model
    mn: str = ""
    pw: str | None = None


class LoggerMap:
    """MN -> :class:`Logger`, built once from the park."""

    def __init__(self, park: Park) -> None:
        self.by_mn: dict[str, Logger] = {}
        # loggers with the same codes share one spec and one key set, their strings interned: a burst of
        # thousands of loggers then reads the same few objects, not thousands of cold copies
        # (docs/benchmarks/hj212.md §10)
        specs: dict[Any, Any] = {}
        for site in park.sites:
            for asset in site.assets:
                for cfg in asset.hj212:
                    codes = {code: (park.get(f"{site.id}/{asset.id}/{t.sensor}"), t)
                             for code, t in cfg.code_map().items()}
                    realtime = tuple(tuple(sys.intern(x) for x in (
                        f"{code}-{'ZsRtd' if t.value == 'converted' else 'Rtd'}", f"{code}-Flag", ref.sensor.id))
                        for code, (ref, t) in codes.items())
                    keys = frozenset(sys.intern(k) for k in
                                     {"DataTime"} | {f"{code}-{name}" for code in codes for name in _REALTIME_FIELDS})
                    self.by_mn[cfg.mn] = Logger(site.id, asset.id, cfg, codes, specs.setdefault(realtime, realtime),
                                                 specs.setdefault(keys, keys),
                                                 sys.intern(snapshot_topic(site.id, asset.id)), cfg.mn, cfg.pw)

    def get(self, mn: str) -> Logger | None:
        return self.by_mn.get(mn)

    def __len__(self) -> int:
        return len(self.by_mn)


@dataclass(slots=True)
class Points:
    """What one packet becomes: lines at millisecond precision, dead letters, the readings for the alarm
    engine as MQTT snapshots (topic, payload) and the codes nobody mapped."""

    lines: list[str] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    feed: list[tuple[str, bytes]] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)


class PacketDecoder:
    """``decode(packet, logger, raw)`` -> :class:`Points`; raises :class:`PacketError` for a packet without a
    usable ``DataTime``. ``raw`` (the whole packet) is the payload of its dead letters."""

    def __init__(self, park: Park) -> None:
        self.tz = ZoneInfo(park.park.timezone)
        self.decoder = Decoder(park)
        refs = park.sensors()
        self._prefix = [reading_prefix(ref) for ref in refs]  # by sensor index: built once, not per reading

    def decode(self, p: Packet, logger: Logger, raw: bytes, received_ms: int | None = None) -> Points:
        out = Points()
        if p.cn != REALTIME and p.cn not in PERIOD_CNS:
            return out
        # DataTime and the pollutant fields in one pass (what Packet.items() and Packet.data() give)
        text: str | None = None
        data: dict[str, dict[str, str]] = {}
        for group in p.cp:
            for key, value in group:
                code, sep, name = key.rpartition("-")
                if sep and code and name:
                    fields = data.get(code)
                    if fields is None:
                        fields = data[code] = {}
                    fields[name] = value
                elif key == "DataTime":
                    text = value
        if text is None:
            raise PacketError(HJ212_FRAME, f"CN={p.cn} without DataTime", p.mn)
        ts = datatime_ms(text, self.tz)
        topic = dead_letter_topic(p.mn)
        if not TS_MIN_MS <= ts < TS_MAX_MS:
            out.rejected.append(Rejected(BAD_TS, f"DataTime {text} is outside 2000..2100", topic, raw))
            return out
        snapshots: dict[tuple[str, str], tuple[dict[str, float], dict[str, str]]] = {}
        for code, fields in data.items():
            target = logger.codes.get(code)
            if target is None:
                out.unmapped.append(code)
                continue
            ref, how = target
            if p.cn == REALTIME:
                self._realtime(out, snapshots, logger.topic, code, fields, ref, how, topic, raw)
            else:
                self._period(out, p.cn, code, fields, ref, how, ts, topic, raw)
        # one snapshot per asset and quality (CONTRACT §2), usually one per packet: validated by the MQTT
        # path's decoder as it stands, and the very message that the alarm engine receives
        for (asset_topic, quality), (values, flags) in snapshots.items():
            doc: dict[str, object] = {"ts": ts, "values": values}
            if quality != "good":
                doc["quality"] = quality
            if flags:
                doc["flags"] = flags
            payload = kept_json(doc)
            if flags:
                decoded = self.decoder.decode(asset_topic, payload, received_ms)
                lines = [with_flag(reading_line(self._prefix[r.ref.index], r), flags.get(r.ref.sensor.id))
                         for r in decoded.readings]
                rejected = decoded.rejected
            else:  # no flag field to add: the collector's own path from message to lines (its fast path)
                lines, rejected = self.decoder.lines(asset_topic, payload, received_ms)
            out.lines += lines
            out.rejected += [Rejected(rej.reason, rej.detail, topic, raw) for rej in rejected]
            if lines:
                if any(rej.reason == OUT_OF_RANGE for rej in rejected):
                    # dead-lettered here, once (topic hj212/<MN>, the packet): the collector, which stores
                    # the fed snapshot too, keeps the reading as bad without a second dead letter
                    doc["origin"] = topic
                    payload = kept_json(doc)
                out.feed.append((asset_topic, payload))
        return out

    def realtime_fast(self, logger: Logger, items: dict[str, str],
                      received_ms: int | None = None) -> tuple[list[str], tuple[str, bytes]] | None:
        """Real-time data (2011) as :meth:`decode` makes them, for the packet nearly every logger sends: every
        code mapped and every value a finite number in range with flag ``N``. ``(lines, (topic, snapshot))``
        for the engine feed, or None for any other packet, which :meth:`decode` then takes whole (so dead
        letters, flags, qualities and unmapped codes keep one definition). ``items``: :func:`cp_items` of the
        CP. tests/test_hj212_fastpath.py checks that both give the same points."""
        values = realtime_values(items, logger.realtime, logger.realtime_keys)
        if values is None:
            return None
        text = items.get("DataTime")
        if text is None:
            return None
        try:
            ts = datatime_ms(text, self.tz)
        except PacketError:
            return None
        topic = logger.topic
        lines = self.decoder.snapshot_lines(topic, ts, values, received_ms)
        if lines is None:
            return None
        # orjson.dumps({"ts": ts, "values": values}) byte for byte, held in a buffer of its size (kept_json)
        # without a copy: orjson's 4 KiB buffer is only the values' and freed at once
        return lines, (topic, b'{"ts":%d,"values":%b}' % (ts, orjson.dumps(values)))

    def _realtime(self, out: Points, snapshots: dict[tuple[str, str], tuple[dict[str, float], dict[str, str]]],
                  asset_topic: str, code: str, fields: dict[str, str], ref: SensorRef, how: Hj212Code, topic: str,
                  raw: bytes) -> None:
        """A code's value into the snapshot of its asset and quality (validated there, by the decoder)."""
        name = "ZsRtd" if how.value == "converted" else "Rtd"
        text = fields.get(name)
        if text is None:
            out.rejected.append(Rejected(BAD_VALUE, f"{code} has no -{name} ({ref.key} takes its {how.value} "
                                         "value)", topic, raw))
            return
        value = _number(out, code, name, text, topic, raw)
        if value is None:
            return
        flag = fields.get("Flag") or None
        values, flags = snapshots.setdefault((asset_topic, flag_quality(flag)), ({}, {}))
        values[ref.sensor.id] = value
        if flag is not None and flag != "N":
            flags[ref.sensor.id] = flag

    def _period(self, out: Points, cn: str, code: str, fields: dict[str, str], ref: SensorRef, how: Hj212Code,
                ts: int, topic: str, raw: bytes) -> None:
        zs = how.value == "converted"
        values: dict[str, float] = {}
        for key in ("Avg", "Min", "Max", "Cou"):
            name = "Zs" + key if zs and (key != "Cou" or "ZsCou" in fields) else key
            text = fields.get(name)
            if text is None:
                continue
            value = _number(out, code, name, text, topic, raw)
            if value is None:
                return
            values[key.lower()] = value
        if values:
            out.lines.append(period_line(ref, cn, values, fields.get("Flag") or None, ts))


def _number(out: Points, code: str, name: str, text: str, topic: str, raw: bytes) -> float | None:
    """The field's value as a finite number; None, with its dead letter added to ``out``, when it is not one."""
    if NUMBER.fullmatch(text):
        value = float(text)
        if math.isfinite(value):
            return value
    out.rejected.append(Rejected(BAD_VALUE, f"{code}-{name}={text[:32]!r} is not a finite number", topic, raw))
    return None
