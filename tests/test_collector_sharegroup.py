"""Share groups as they run in the field: separate ``smartpark collect`` processes, one of them killed -9."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from test_collector_support import Publisher, big_park, readings, stored, wait_for

from devstack import SMARTPARK

REPO = Path(__file__).resolve().parent.parent


class CollectProcess:
    """``smartpark -v collect --share-group G --instance NAME`` with its log in a file."""

    def __init__(self, broker_url: str, influx: Any, park: Path, state: Path, instance: str, group: str,
                 *extra: str) -> None:
        self.instance = instance
        self.log_path = state / f"collect-{instance}.log"
        state.mkdir(parents=True, exist_ok=True)
        self.argv = [*SMARTPARK, "-v", "--mqtt-url", broker_url, "--influx-url", influx.url,
                     "--influx-db", influx.db, "--park", str(park), "--state-dir", str(state), *extra, "collect",
                     "--share-group", group, "--instance", instance]
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_subscribed(self, times: int = 1) -> None:
        wait_for(lambda: self.log().count("subscribed to '$share/") >= times, 30, f"{self.instance} subscribed")

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def written(self) -> int:
        """``written`` of the counters the collector logs when it stops."""
        found = re.findall(r"stopped: \{.*'written': (\d+)", self.log())
        return int(found[-1]) if found else 0


@pytest.mark.ci
def test_a_member_killed_9_its_share_is_stored_by_the_survivor_and_nothing_is_lost(
        broker: Any, influx_db: Any, tmp_path: Path) -> None:
    """Two collectors in one share group as processes; ``b`` is killed -9 in the middle of a run: ``a`` takes over
    ``b``'s session, so every reading published after the kill is stored while ``b`` is gone (also those ``b``
    held unacked); ``b`` comes back, resumes its session and takes its share again; nothing is lost."""
    park_path, park = big_park(tmp_path)
    sent = readings(park, 25_000, seed=41)
    first, second, third = sent[:10_000], sent[10_000:20_000], sent[20_000:]
    state = tmp_path / "state"
    a = CollectProcess(broker.url, influx_db, park_path, state, "a", "g")
    b = CollectProcess(broker.url, influx_db, park_path, state, "b", "g")
    try:
        a.wait_subscribed()
        b.wait_subscribed()
        pub = Publisher(broker.port)
        pub.publish((t, p) for t, p, *_ in first)
        b.kill()  # in the middle of the first run: what b held unacked stays in its session
        pub.publish((t, p) for t, p, *_ in second)
        pub.wait_acked()
        # b stays dead: a stores its share (the deadline is generous, not a timing)
        wait_for(lambda: influx_db.count("reading") >= 20_000, 60,
                 lambda: f"{influx_db.count('reading')} of 20000 while b is dead")
        assert stored(influx_db) == {(k, ts, v) for _, _, k, ts, v in first + second}
        assert "taking over its session" in a.log()
        b.start()
        b.wait_subscribed(times=2)
        pub.publish((t, p) for t, p, *_ in third)
        pub.wait_acked()
        pub.close()
        wait_for(lambda: influx_db.count("reading") >= 25_000, 60, lambda: f"{influx_db.count('reading')} of 25000")
    finally:
        codes = (a.stop(), b.stop())
    assert codes == (0, 0)
    assert stored(influx_db) == {(k, ts, v) for _, _, k, ts, v in sent}
    assert "session resumed" in b.log()
    assert b.written() > 0  # b is back in the group and took part of the third run
