"""smartpark.numbers: a value printed beside its limit is never rounded onto it or past it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devstack.parks import asset, park_yaml, site
from smartpark.numbers import beside_limit, number


class TestBesideLimit:
    @pytest.mark.parametrize(("value", "limit", "shown"), [
        (1099.6, 1100, ("1099.6", "1100")),
        (1099.26, 1100, ("1099", "1100")),
        (1099.9996, 1100, ("1099.9996", "1100")),
        (1100.04, 1100, ("1100.04", "1100")),
        (1100.0, 1100, ("1100", "1100")),
        (50.004, 50, ("50.004", "50")),
        (0.49996, 0.5, ("0.49996", "0.5")),
        (41.73, 50, ("41.73", "50")),
        (123456.7, 100000, ("123457", "100000")),
    ])
    def test_examples(self, value: float, limit: float, shown: tuple[str, str]) -> None:
        """Four significant digits when far from the limit, more only when they decide the side."""
        assert beside_limit(value, limit) == shown

    @given(st.floats(-1e9, 1e9, allow_nan=False), st.floats(-1e9, 1e9, allow_nan=False))
    def test_the_printed_value_is_on_the_side_of_the_value(self, value: float, limit: float) -> None:
        """For any pair, the printed numbers compare as the numbers do."""
        v, lim = beside_limit(value, limit)
        assert (float(v) > float(lim)) == (value > limit)
        assert (float(v) < float(lim)) == (value < limit)

    def test_missing_and_non_finite(self) -> None:
        """No limit, no value or an infinite one: plain numbers, '-' for none."""
        assert beside_limit(None, 1100) == ("-", "1100")
        assert beside_limit(1099.6, None) == ("1100", "-")  # nothing to compare with
        assert number(float("inf")) == "inf"


PARK = park_yaml(site("hw", "Incinerator", asset(
    "scc", "Secondary chamber",
    "{id: temp, name: Furnace temperature, unit: degC, range: [0, 1600], normal: [1100, 1250], interval_s: 5, "
    'regulatory: [{limit: 1100, averaging: instant, comparator: min, source: "GB 18484-2020"}]}')))


def test_the_engine_message_shows_the_side_of_the_limit() -> None:
    """An alarm raised at 1099.97 degC against a minimum of 1100 says 1099.97, not 1100 (limit 1100)."""
    from alerts import Engine, ManualClock
    from smartpark.decode import Reading
    from smartpark.park import parse_park

    park = parse_park(PARK, "park.yaml")
    t0 = 1_764_201_600_000
    eng = Engine(park, None, ManualClock(t0))
    events = eng.process(Reading(park.get("hw/scc/temp"), 1099.97, t0, "good"))
    raised = [e for e in events if e.rule == "reg_instant"]
    assert raised and "1099.97 degC (limit 1100)" in raised[0].message, [e.message for e in events]
