"""Properties of the engine over random inputs (hypothesis): alternation of events, determinism of replay."""

from __future__ import annotations

import json

from alerts_helpers import PARK
from hypothesis import given, settings
from hypothesis import strategies as st

from alerts import Engine, ManualClock
from alerts.events import AlarmEvent
from smartpark.decode import Reading

T0 = 1_772_416_800_000
KEYS = ["plant/tank/level", "plant/tank/temp", "other/pump/flow"]
steps = st.lists(st.tuples(st.sampled_from(KEYS), st.floats(-5, 105, allow_nan=False), st.integers(1, 40_000),
                           st.sampled_from(["good", "good", "good", "uncertain", "bad"])), max_size=120)


def feed(e: Engine, seq: list[tuple[str, float, int, str]], t: int = T0) -> tuple[list[AlarmEvent], int]:
    out: list[AlarmEvent] = []
    for key, v, dt, q in seq:
        t += dt
        out += e.process(Reading(PARK.get(key), v, t, q))
        out += e.tick(t)
    return out, t


class TestProperties:
    """Invariants that every rule must keep, whatever the readings."""

    @settings(max_examples=150, deadline=None)
    @given(steps)
    def test_raised_and_cleared_alternate(self, seq: list[tuple[str, float, int, str]]) -> None:
        """Per alarm, events alternate raised/cleared starting with raised, and the state agrees."""
        e = Engine(PARK, None, ManualClock(T0))
        events, _ = feed(e, seq)
        last: dict[str, str] = {}
        for ev in events:
            assert last.get(ev.id, "cleared") != ev.event, (ev.id, ev.event)
            last[ev.id] = ev.event
            assert ev.state == ("UNACK" if ev.event == "raised" else "RTNUN")
        for aid, kind in last.items():
            assert e.get(aid).active == (kind == "raised")

    @settings(max_examples=100, deadline=None)
    @given(steps, steps)
    def test_snapshot_then_continue_is_deterministic(self, a: list[tuple[str, float, int, str]],
                                                     b: list[tuple[str, float, int, str]]) -> None:
        """State dumped to JSON and loaded into a fresh engine continues exactly like the original: what
        the durable snapshot relies on."""
        e1 = Engine(PARK, None, ManualClock(T0))
        _, t = feed(e1, a)
        e2 = Engine(PARK, None, ManualClock(T0))
        e2.load(json.loads(json.dumps(e1.dump())))
        out1, _ = feed(e1, b, t)
        out2, _ = feed(e2, b, t)
        assert [x.to_dict() for x in out1] == [x.to_dict() for x in out2]
        assert [x.seq for x in out1] == [x.seq for x in out2]
