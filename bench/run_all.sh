#!/usr/bin/env bash
# Every benchmark of docs/BENCHMARKS.md, one after the other (each measures its own ceilings in the same run).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
py=.venv/bin/python
$py bench/bench_wire.py
$py bench/bench_collector.py --n 200000 --repeat 3
$py bench/bench_alerts.py --eval-readings 300000 --seconds 60 --probe-hz 4
$py bench/bench_simulators.py
$py bench/bench_dashboards.py --repeat 5
$py bench/bench_mqtt_window.py --n 3000 --repeat 3
$py bench/bench_console.py --seconds 20 --eval-seconds 8 --eval-repeat 3
$py bench/bench_rollups.py --days 30 --year-days 365 --repeat 3
