"""The collector's counts are kept once, in its Prometheus registry: the status, the ``collector`` measurement
and ``Collector.counters`` read them from there."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from test_collector_support import big_park, settings_for

from collector import Collector


def collector(tmp_path: Path) -> Collector:
    park_path, park = big_park(tmp_path)
    return Collector(settings_for("mqtt://127.0.0.1:1", "http://127.0.0.1:1", "db", park_path, tmp_path), park,
                     instance="m1")


class TestCountsKeptOnce:
    """Every count has one store; everything that shows a count reads that store."""

    def test_counters_read_the_registry(self, tmp_path: Path) -> None:
        """What the Prometheus counters hold is what ``counters``, ``stats()`` and the status line say."""
        c = collector(tmp_path)
        m = c.metrics
        m.received.inc(7)
        m.written.inc(5)
        m.spooled.inc(3)
        m.retries.inc(2)
        m.dead_letters.labels("bad_json").inc()
        m.dead_letters.labels("unknown_sensor").inc(2)
        expected = {"received": 7, "written": 5, "invalid": 3, "spooled": 3, "retries": 2}
        assert dataclasses.asdict(c.counters) == expected
        assert c.stats() == expected
        line = c._status_line()
        assert line.startswith("collector,instance=m1 received=7i,written=5i,invalid=3i,spooled=3i,retries=2i ")
        r = m.registry
        assert r.get_sample_value("smartpark_collector_received_total") == 7
        assert r.get_sample_value("smartpark_collector_dead_letters_total", {"reason": "unknown_sensor"}) == 2

    def test_counters_are_a_read_only_view(self, tmp_path: Path) -> None:
        """No second count can be kept beside the registry: the view cannot be written or replaced."""
        c = collector(tmp_path)
        with pytest.raises(dataclasses.FrozenInstanceError):
            c.counters.received = 1  # type: ignore[misc]  # the assignment is what the test refuses
        with pytest.raises(AttributeError):
            c.counters = c.counters  # type: ignore[misc]  # a property without a setter
        assert c.counters.received == 0
