"""``smartpark demo`` end to end, non-interactively: the parts fit together and stop cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from devstack import SMARTPARK, pid_alive
from simulators import load_scenario
from smartpark.park import load_park


def _our_processes(marker: str) -> list[str]:
    """Command lines of live processes that mention ``marker`` (the demo's state dir)."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = next((ln for ln in (d / "status").read_text().splitlines() if ln.startswith("State:")), "")
        except OSError:
            continue
        if marker in cmd and "Z" not in state.split()[1:2]:
            found.append(cmd)
    return found


def _demo(state: Path, out: Path) -> list[str]:
    return [*SMARTPARK, "--state-dir", str(state), "demo", "--no-live", "--history", "30m",
            "--play-seconds", "20", "--no-preview", "--json", str(out)]


def _assert_nothing_left(state: Path) -> None:
    for pid_file in (state / "demo" / "stack").glob("*.pid"):
        pid = json.loads(pid_file.read_text())["pid"]
        assert not pid_alive(pid)
    assert _our_processes(str(state)) == []


def _logger_readings(scenario_id: str, seed: int = 7) -> int:
    """How many readings of the sensors the park maps to HJ 212 loggers the demo's simulation has."""
    from hj212.decode import LoggerMap
    from simulators import Simulator

    park = load_park()
    mapped = {ref.index for logger in LoggerMap(park).by_mn.values() for ref, _how in logger.codes.values()}
    sim = Simulator(park, scenario=load_scenario(scenario_id, park), seed=seed, start_ms=0,
                    sites=[site.id for site in park.sites])
    return sum(len(b.ts) for blocks in sim.blocks() for b in blocks if b.index in mapped)


@pytest.mark.timeout(480)
@pytest.mark.ci
def test_demo_runs_the_park_end_to_end(tmp_path: Path) -> None:
    """Ctrl-C stops a first run cleanly; a second run ingests every published reading, over MQTT and for the
    mapped sensors over HJ 212 too, raises exactly the scenario's alarms, notifies, acks one, and leaves nothing
    running."""
    state = tmp_path / "state"
    out = tmp_path / "outcome.json"
    env = {**os.environ, "COLUMNS": "160"}

    # a first run, interrupted while the incident plays, as an operator's Ctrl-C would
    first = subprocess.Popen(_demo(state, out), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, env=env, text=True)
    assert first.stdout is not None
    for line in first.stdout:
        if "readings" in line and "dead letters" in line:  # the live status: the incident is playing
            break
    first.send_signal(signal.SIGINT)
    rest = first.communicate(timeout=120)[0]
    assert first.returncode == 130, rest[-3000:]
    assert "interrupted" in rest
    _assert_nothing_left(state)

    # a second run in the same state directory
    proc = subprocess.run(_demo(state, out), capture_output=True, text=True, timeout=400, stdin=subprocess.DEVNULL,
                          env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    o = json.loads(out.read_text())

    # every reading the simulator published reached InfluxDB through the collector
    assert o["published"] > 10_000
    assert o["readings"] == o["published"]
    assert o["backfilled"] > 0

    # exactly the alarms the scenario declares (its golden outcome), nothing else, each once
    scenario = load_scenario(o["scenario"], load_park())
    expected = sorted((e.sensor, e.rule) for e in scenario.expect)
    raised = sorted((f"{a['site']}/{a['asset']}/{a['sensor']}", a["rule"]) for a in o["alarms"])
    assert raised == expected

    # on-call staff were notified through the webhook, and the operator's ack took effect and is audited
    assert o["notifications"] >= len(expected)
    assert o["acked"] is not None and o["acked_state"] in ("ACKED", "NORM")
    assert o["acked_events"] >= 1

    # the CEMS and outfall loggers spoke HJ 212 to the platform: every packet acknowledged (9014), its readings
    # stored; they are the MQTT readings (same timestamp and value), so readings == published above still holds
    # and the alarms stay the scenario's
    assert o["hj212_sent"] > 100
    assert o["hj212_acked"] == o["hj212_sent"]
    assert o["hj212_readings"] == _logger_readings(o["scenario"])  # every reading of a mapped sensor
    assert f"{o['hj212_acked']:,} acknowledged (9014)" in proc.stdout
    assert "hj212 serve --hj212-listen" in proc.stdout  # how to point a logger at it

    # clean shutdown: the services exited 0, the stack is down, no stray process mentions the state dir
    assert o["exit_codes"] == {"collector": 0, "alerts": 0, "hj212": 0}
    _assert_nothing_left(state)
    assert "summary" in proc.stdout


def test_the_summary_never_rounds_a_value_onto_its_limit() -> None:
    """The summary's value and limit columns: a 5-minute mean of 1099.6 degC beside a minimum of 1100 reads
    1099.6, and a breach just above a maximum keeps the digits that show it."""
    from demo.demo import _value_and_limit

    assert _value_and_limit({"value": 1099.6, "limit": 1100}) == ("1099.6", "1100")
    assert _value_and_limit({"value": 50.0004, "limit": 50}) == ("50.0004", "50")
    assert _value_and_limit({"value": 41.7, "limit": None}) == ("41.7", "")
