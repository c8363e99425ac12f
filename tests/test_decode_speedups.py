"""smartpark/_speedups.c gives what its Python reference gives.

``smartpark._speedups.simple_snapshot`` (the decoder's lines of a snapshot whose every value is a known
sensor's finite float in range: every MQTT snapshot the collector takes, every HJ 212 real-time packet) must
equal :func:`smartpark.decode._simple_snapshot_py` on every input: the same lines, byte for byte, or None at the
same values, or the same exception. The inputs: the bundled park's assets with generated values of every kind
(floats at and past the bounds, infinities, NaN, -0.0, subnormals, huge and tiny magnitudes, ints, bools,
strings, None), unknown sensors, every quality, and bounds given as ints as the park's YAML may give them.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from smartpark import decode
from smartpark.decode import SPEEDUPS, Decoder, _Known, _simple_snapshot, _simple_snapshot_py
from smartpark.park import load_park

if not SPEEDUPS:  # make setup builds it (gcc and the Python headers are among its system packages)
    raise RuntimeError("smartpark._speedups is not built: `pip install -e .` with a C compiler builds it")

from smartpark import _speedups  # after the check above, for its message

PARK = load_park()
ASSETS = Decoder(PARK)._assets  # snapshot topic -> {sensor id: _Known}, as the decoder holds them
TOPICS = sorted(ASSETS)


def outcome(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception as exc:  # the same error type and text from both
        return type(exc), str(exc)


def same(sensors: dict[str, Any], values: dict[Any, Any], ts: Any, quality: Any) -> Any:
    got = outcome(_speedups.simple_snapshot, sensors, values, ts, quality)
    want = outcome(_simple_snapshot_py, sensors, values, ts, quality)
    assert got == want, (values, ts, quality, got, want)
    return got


def test_the_extension_is_what_runs() -> None:
    assert _simple_snapshot is _speedups.simple_snapshot is decode._simple_snapshot


def floats_near(known: _Known) -> st.SearchStrategy[Any]:
    lo, hi = float(known.lo), float(known.hi)
    edges = [lo, hi, math.nextafter(lo, -math.inf), math.nextafter(hi, math.inf), (lo + hi) / 2, -0.0, 0.0]
    return st.one_of(st.sampled_from(edges), st.floats(min_value=lo, max_value=hi), st.floats(),
                     st.floats(allow_subnormal=True, min_value=-1e-300, max_value=1e-300),
                     st.sampled_from([1e-7, 1e16, 1e22, 123456789012345678.0, 5e-324, math.inf, -math.inf, math.nan]))


VALUES = st.one_of(st.integers(-10**20, 10**20), st.booleans(), st.none(), st.text(max_size=5),
                   st.decimals(allow_nan=False, allow_infinity=False, places=2))


@st.composite
def snapshots(draw: st.DrawFn) -> tuple[dict[str, _Known], dict[Any, Any]]:
    sensors = ASSETS[draw(st.sampled_from(TOPICS))]
    names = draw(st.lists(st.sampled_from(sorted(sensors)), unique=True, max_size=len(sensors)))
    values: dict[Any, Any] = {}
    for name in names:
        kind = draw(st.integers(0, 9))
        values[name] = draw(VALUES) if kind == 0 else draw(floats_near(sensors[name]))
    if draw(st.integers(0, 9)) == 0:
        values[draw(st.text(max_size=8))] = 1.0  # a sensor the asset does not have (or one it has)
    if draw(st.booleans()):
        # the park's YAML may give a range as ints: compared as Python compares an int with a float
        name = draw(st.sampled_from(sorted(sensors)))
        k = sensors[name]
        sensors = {**sensors, name: k._replace(lo=math.floor(k.lo), hi=math.ceil(k.hi))}
    return sensors, values


QUALITY = st.sampled_from([None, "good", "uncertain", "bad", "stale"])
TS = st.one_of(st.integers(0, 2**62), st.integers(-2**63, 2**70))


@settings(max_examples=3000, deadline=None)
@given(snapshots(), TS, QUALITY)
@example((ASSETS[TOPICS[0]], {}), 1, None)
def test_generated_snapshots(snap: tuple[dict[str, _Known], dict[Any, Any]], ts: int, quality: str | None) -> None:
    same(*snap, ts, quality)


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(TOPICS), TS, QUALITY, st.data())
def test_every_value_in_range_gives_lines(topic: str, ts: int, quality: str | None, data: st.DataObject) -> None:
    """The common case answers (not None) and names every sensor, in the values' order."""
    sensors = ASSETS[topic]
    values = {name: data.draw(st.floats(min_value=float(k.lo), max_value=float(k.hi))) for name, k in sensors.items()}
    lines = same(sensors, values, ts, quality)
    assert isinstance(lines, list) and len(lines) == len(values)
    for line, (name, k) in zip(lines, sensors.items(), strict=True):
        assert line.startswith(k.line) and line.endswith(f" {ts}"), (line, name)


def test_unicode_prefixes_and_odd_arguments() -> None:
    """A tag of the park in Chinese (not ASCII: joined the slow way), the first bad value ends the answer, no
    infinity or NaN within unbounded limits, and wrong argument types raise."""
    sensors = {"温度": _Known(None, 0.0, 100.0, "reading,site=一厂 value="),  # type: ignore[arg-type]
               "b": _Known(None, 0, 10, "r,b value=")}  # type: ignore[arg-type]  # no ref: not read here
    assert same(sensors, {"温度": 20.5, "b": 3.0}, 7, None) == ["reading,site=一厂 value=20.5 7", "r,b value=3.0 7"]
    assert same(sensors, {"温度": 20.5, "b": 30.0}, 7, "bad") is None
    assert same(sensors, {"b": 1.5}, 7, "uncertain") == ['r,b value=1.5,quality="uncertain" 7']
    assert same(sensors, {1: 1.0, "b": 1.0}, 7, None) is None  # not a sensor's name
    unbounded = {"x": _Known(None, -math.inf, math.inf, "r,x value=")}  # type: ignore[arg-type]
    for v in (math.inf, -math.inf, math.nan):  # within any bounds, still not a reading
        assert same(unbounded, {"x": v}, 7, None) is None
    assert same(unbounded, {"x": -1e308}, 7, None) == ["r,x value=-1e+308 7"]
    with pytest.raises(TypeError):
        _speedups.simple_snapshot(sensors, [], 7, None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _speedups.simple_snapshot(sensors, {})  # type: ignore[call-arg]
