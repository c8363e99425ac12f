"""``Engine.process`` of this tree against the one of another tree, in one process, taking turns.

The evaluation benchmark of ``bench_alerts.py`` divides by a ceiling measured seconds earlier, which a shared,
loaded machine makes noisy; here the same readings go through both engines alternately (a fresh engine per
run, the order swapped every round), and the figure is the ratio of their CPU times, round by round.

    git archive REV | tar -x -C /tmp/before
    .venv/bin/python bench/bench_alerts_ab.py --before /tmp/before [--readings 300000] [--rounds 20]
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_alerts import park_readings  # this folder: run as bench/bench_alerts_ab.py

from alerts import Engine, EventClock
from smartpark.park import load_park


def before_engine(tree: Path, tmp: Path) -> tuple[Any, Any]:
    """``Engine`` and ``EventClock`` of the other tree's ``alerts`` package, imported as ``alerts_before``
    (its own imports are relative; the shared ``smartpark`` and ``simulators`` are this tree's)."""
    shutil.copytree(tree / "alerts", tmp / "alerts_before")
    sys.path.insert(0, str(tmp))
    return importlib.import_module("alerts_before").Engine, importlib.import_module("alerts_before.clock").EventClock


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, required=True, help="a tree (git archive) holding the other alerts/")
    ap.add_argument("--readings", type=int, default=300_000)
    ap.add_argument("--rounds", type=int, default=20)
    a = ap.parse_args()
    park = load_park()
    rs = park_readings(park, a.readings)
    with tempfile.TemporaryDirectory() as tmp:
        old_engine, old_clock = before_engine(a.before, Path(tmp))
        makers = {"before": lambda: old_engine(park, None, old_clock()),
                  "this": lambda: Engine(park, None, EventClock())}
        rates: dict[str, list[float]] = {"before": [], "this": []}
        for i in range(a.rounds):
            for name in ("before", "this") if i % 2 == 0 else ("this", "before"):
                process = makers[name]().process
                t = time.process_time()
                for r in rs:
                    process(r)
                rates[name].append(len(rs) / (time.process_time() - t))
    ratios = [x / y for x, y in zip(rates["this"], rates["before"], strict=True)]
    print(json.dumps({"readings": len(rs), "rounds": a.rounds,
                      "median_per_s": {k: round(statistics.median(v)) for k, v in rates.items()},
                      "ratio_per_round": [round(x, 3) for x in ratios],
                      "median_ratio": round(statistics.median(ratios), 3),
                      "ratio_of_bests": round(max(rates["this"]) / max(rates["before"]), 3)}))


if __name__ == "__main__":
    main()
