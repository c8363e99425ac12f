"""Simulators: determinism, scenario files, signal shapes through a real broker + collector + InfluxDB,
record -> replay, garbage payloads as dead letters, reconnection, pacing."""

from __future__ import annotations

import asyncio
import getpass
import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from epochs import RECENT_MIDNIGHT_MS
from test_collector_support import CollectorThread, settings_for, wait_connected, wait_for

from cli import main
from devstack import SMARTPARK
from simulators import Message, Scenario, Simulator, list_scenarios, load_scenario, publish, read_recording, record
from simulators.cli import parse_duration
from simulators.io import Paced, replay
from simulators.scenario import resolve_sensors
from smartpark.decode import Decoder
from smartpark.errors import ConfigError
from smartpark.park import load_park

PARK = load_park()
START = RECENT_MIDNIGHT_MS  # UTC midnight, inside the raw retention (tests/epochs.py)
SCENARIOS = list_scenarios(PARK)


def digest(messages: Any) -> str:
    h = hashlib.sha256()
    for m in messages:
        h.update(b"%d|%s|%s\n" % (m.ts_ms, m.topic.encode(), m.payload))
    return h.hexdigest()


class TestDeterminism:
    def test_same_seed_same_bytes(self) -> None:
        """Two runs with the same park, scenario, seed and start give a byte-identical message stream."""
        scn = load_scenario("sc01", PARK)
        a = digest(Simulator(PARK, scn, seed=7, start_ms=START).messages())
        b = digest(Simulator(PARK, scn, seed=7, start_ms=START).messages())
        assert a == b

    def test_whole_park_and_snapshots_are_deterministic(self) -> None:
        """Without a scenario (whole park) and in snapshot mode the stream is reproducible too."""
        for snapshots in (False, True):
            a = digest(Simulator(PARK, seed=1, start_ms=START, snapshots=snapshots).messages(900))
            b = digest(Simulator(PARK, seed=1, start_ms=START, snapshots=snapshots).messages(900))
            assert a == b

    def test_same_bytes_in_another_process(self) -> None:
        """Determinism does not hang on the interpreter: another process (other hash seed) gives the same bytes."""
        code = ("import hashlib, sys; from smartpark.park import load_park; "
                "from simulators import Simulator, load_scenario; p = load_park(); h = hashlib.sha256()\n"
                "for m in Simulator(p, load_scenario('sc07', p), seed=7).messages():\n"
                "    h.update(b'%d|%s|%s\\n' % (m.ts_ms, m.topic.encode(), m.payload))\n"
                "print(h.hexdigest())")
        out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": "12345"},
                             capture_output=True, text=True, check=True).stdout.strip()
        assert out == digest(Simulator(PARK, load_scenario("sc07", PARK), seed=7).messages())

    def test_another_seed_differs(self) -> None:
        """A different seed gives different readings (same topics and times)."""
        one = list(Simulator(PARK, seed=1, start_ms=START).messages(60))
        two = list(Simulator(PARK, seed=2, start_ms=START).messages(60))
        assert [(m.ts_ms, m.topic) for m in one] == [(m.ts_ms, m.topic) for m in two]
        assert [m.payload for m in one] != [m.payload for m in two]

    def test_messages_are_time_ordered_and_valid(self) -> None:
        """Every message decodes to accepted readings (CONTRACT §2) and the stream never goes back in time."""
        dec = Decoder(PARK)
        last = 0
        n = 0
        for m in Simulator(PARK, seed=3, start_ms=START, snapshots=True).messages(600):
            assert m.ts_ms >= last
            last = m.ts_ms
            d = dec.decode(m.topic, m.payload, 0)
            assert not d.rejected and d.readings and all(r.ts_ms == m.ts_ms for r in d.readings)
            n += len(d.readings)
        assert n > 10_000


class TestSignals:
    def test_analyzers_publish_a_staircase(self) -> None:
        """An analyzer (15-min cycle, published every 5 min) shows a new value only once per sample cycle."""
        ref = PARK.get("wwtp/effluent/nh3n")
        sim = Simulator(PARK, seed=0, start_ms=START, sensors=[ref.key])
        values = [b.values for blocks in sim.blocks(6 * 3600) for b in blocks]
        v = np.concatenate(values)
        assert len(v) == 6 * 12
        cycles = v.reshape(-1, 3)  # three 5-min publications per 15-min cycle
        assert (cycles == cycles[:, :1]).all()
        assert len(np.unique(cycles[:, 0])) > 20  # and the new values do change

    def test_normal_operation_stays_in_the_normal_band(self) -> None:
        """A day of normal operation keeps every sensor inside its normal band (so nothing alarms)."""
        sim = Simulator(PARK, seed=5, start_ms=START)
        lo = {r.index: r.sensor.normal[0] for r in PARK}
        hi = {r.index: r.sensor.normal[1] for r in PARK}
        for blocks in sim.blocks(86400):
            for b in blocks:
                assert lo[b.index] <= b.values.min() and b.values.max() <= hi[b.index], PARK.sensors()[b.index].key

    def test_stack_pollutants_follow_the_o2_reference(self) -> None:
        """CEMS concentrations are reported at 11 % O2: their level rises when the stack O2 rises."""
        sim = Simulator(PARK, seed=0, start_ms=START)
        t = np.arange(0, 86400, 60.0) + START / 1000
        o2 = sim.table.level[PARK.get("hw_center/stack_cems/o2").index](t)
        nox = sim.table.level[PARK.get("hw_center/stack_cems/nox").index](t)
        assert np.corrcoef(o2, nox)[0, 1] > 0.95

    def test_scenario_shape_is_drawn(self) -> None:
        """sc01: the SCC temperature follows its first-order dip (minimum near 1077 °C at t≈360 s)."""
        scn = load_scenario("sc01", PARK)
        sim = Simulator(PARK, scn, seed=0, sensors=["hw_center/scc/temp"])
        ts = np.concatenate([b.ts for bl in sim.blocks() for b in bl])
        v = np.concatenate([b.values for bl in sim.blocks() for b in bl])
        t = (ts - sim.t0_ms) / 1000
        assert 1065 < v[(t > 340) & (t < 380)].mean() < 1090
        assert v[t < 0].min() > 1120


def test_spike_drift_dropout_and_garbage_shapes(tmp_path: Path) -> None:
    """spike sets one reading, drift adds to the base signal, dropout silences, garbage adds dead letters."""
    path = tmp_path / "shapes.yaml"
    path.write_text("""\
id: shapes
title: Shapes
title_zh: 形状
site: hw_center
warmup_s: 0
duration_s: 1200
timeline:
  - {t_s: 0, sensor: hw_center/scc/o2, shape: drift, rate_per_h: -12, duration_s: 600}
  - {t_s: 100, sensor: hw_center/scc/temp, shape: spike, value: 1400}
  - {t_s: 300, sensor: hw_center/scc/burner_gas, shape: dropout, duration_s: 60}
  - {t_s: 400, sensor: hw_center/scc/o2, shape: garbage, kind: too_large}
  - {t_s: 401, sensor: hw_center/scc/o2, shape: garbage, kind: unknown_sensor}
""", encoding="utf-8")
    scn = load_scenario(path, PARK)
    keys = ["hw_center/scc/o2", "hw_center/scc/temp", "hw_center/scc/burner_gas"]
    sim = Simulator(PARK, scn, seed=0, sensors=keys)
    dec = Decoder(PARK)
    series: dict[str, list[tuple[float, float]]] = {k: [] for k in keys}
    reasons = []
    for m in sim.messages():
        d = dec.decode(m.topic, m.payload, m.ts_ms)
        reasons += [r.reason for r in d.rejected]
        for r in d.readings:
            series[r.key].append(((r.ts_ms - sim.t0_ms) / 1000, r.value))
    temp = dict(series["hw_center/scc/temp"])
    assert temp[100.0] == 1400.0 and max(v for t, v in temp.items() if t != 100.0) < 1200
    o2 = series["hw_center/scc/o2"]
    early = np.mean([v for t, v in o2 if t < 60])
    late = np.mean([v for t, v in o2 if 600 <= t < 700])
    assert 1.5 < early - late < 2.5  # 12 %/h for 10 min, ± the base signal's wander
    gas_t = [t for t, _ in series["hw_center/scc/burner_gas"]]
    assert not [t for t in gas_t if 300 <= t < 360] and 299 in gas_t and 360 in gas_t
    assert reasons == ["too_large", "unknown_sensor"]


class TestScenarioFiles:
    GOOD = """\
id: mine
title: My incident
title_zh: 我的事故
site: hw_center
duration_s: 600
timeline:
  - {t_s: 0, sensor: hw_center/scc/temp, shape: step, to: 1000}
  - {t_s: 60, sensor: hw_center/scc/o2, shape: ramp, to: 5, duration_s: 120}
expect:
  - {sensor: hw_center/scc/temp, rule: ll, raise_s: [0, 10]}
"""

    @pytest.mark.parametrize(("old", "new", "line", "key", "words"), [
        ("hw_center/scc/o2, shape", "hw_center/scc/o3, shape", 8, "timeline[1].sensor", "unknown sensor"),
        ("shape: ramp", "shape: wobble", 8, "timeline[1].shape", "wobble"),
        ("{t_s: 60,", "{t_s: -5,", 8, "timeline[1].t_s", "out of order"),
        ("duration_s: 120}", "duration_s: 120, toward: 3}", 8, "timeline[1].toward", "does not apply"),
        ("to: 5, duration_s: 120", "to: 5", 8, "timeline[1].shape", "needs 'duration_s'"),
        ("rule: ll", "rule: reg_1h", 10, "expect[0].rule", "no regulatory limit"),
        ("raise_s: [0, 10]", "raise_s: [10, 0]", 10, "expect[0].raise_s", "out of order"),
        ("site: hw_center", "site: moon", 4, "site", "unknown site"),
        ("title_zh: 我的事故\n", "", None, "title_zh", "missing"),
    ])
    def test_mistakes_are_one_line_with_file_line_key(self, tmp_path: Path, old: str, new: str, line: int | None,
                                                      key: str, words: str) -> None:
        """A scenario mistake is a ConfigError naming the file, the line and the key."""
        path = tmp_path / "bad.yaml"
        assert old in self.GOOD
        path.write_text(self.GOOD.replace(old, new), encoding="utf-8")
        with pytest.raises(ConfigError) as err:
            load_scenario(path, PARK)
        msg = str(err.value)
        assert "\n" not in msg and words in msg
        assert err.value.file == str(path) and err.value.key == key
        if line is not None:
            assert err.value.line == line

    def test_good_user_file_loads_and_runs(self, tmp_path: Path) -> None:
        """A user's own scenario file (--scenario PATH) loads and drives the simulator."""
        path = tmp_path / "mine.yaml"
        path.write_text(self.GOOD, encoding="utf-8")
        scn = load_scenario(path, PARK)
        msgs = [m for m in Simulator(PARK, scn, sensors=["hw_center/scc/temp"]).messages()
                if m.ts_ms >= scn.t0_ms(PARK)]
        assert msgs and all(abs(json.loads(m.payload)["value"] - 1000) < 25 for m in msgs)

    def test_cli_exit_2_with_one_line(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`smartpark simulate --scenario BAD.yaml` exits 2 with file:line:key on one stderr line."""
        path = tmp_path / "bad.yaml"
        path.write_text(self.GOOD.replace("shape: ramp", "shape: wobble"), encoding="utf-8")
        assert main(["simulate", "--scenario", str(path), "--speed", "0"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"smartpark: {path}:8:timeline[1].shape:")

    def test_list_shows_both_titles(self, capsys: pytest.CaptureFixture[str]) -> None:
        """`smartpark simulate --list` shows every shipped scenario with its Chinese and English title."""
        assert main(["simulate", "--list"]) == 0
        out = capsys.readouterr().out
        assert len(SCENARIOS) == 10
        for s in SCENARIOS:
            assert s.id in out and s.title_zh in out

    def test_durations(self) -> None:
        """Durations read as the contract writes them."""
        assert [parse_duration(x) for x in ("90s", "15m", "2h", "1d", "1h30m", "45")] == \
            [90, 900, 7200, 86400, 5400, 45]


# --------------------------------------------------------------------------- through the real pipeline

def _agg(db: Any, scn: Scenario, t0_ms: int, sensor: str, agg: str, window: tuple[float, float]) -> float:
    site, asset, name = sensor.split("/")
    fn = {"mean": "mean", "min": "min", "max": "max", "count": "count", "first": "first", "last": "last"}[agg]
    q = (f'SELECT {fn}("value") FROM "reading" WHERE "site"=\'{site}\' AND "asset"=\'{asset}\' AND '
         f'"sensor"=\'{name}\' AND time >= {t0_ms + int(window[0] * 1000)}ms '
         f'AND time <= {t0_ms + int(window[1] * 1000)}ms')
    rows = db.query(q)
    return float(rows[0][fn]) if rows else 0.0


def _incident_sensors(scn: Scenario) -> list[str]:
    keys = [k for pat in scn.sensors for k in resolve_sensors(PARK, pat)]
    return keys + [k for c in scn.checks for k in resolve_sensors(PARK, c.sensor) if k not in keys]


@pytest.mark.parametrize("scn", [pytest.param(s, marks=() if s.id.startswith(("sc01", "sc05")) else pytest.mark.ci)
                                 for s in SCENARIOS], ids=[s.id[:4] for s in SCENARIOS])
def test_scenario_through_broker_and_collector_shows_its_shape(scn: Scenario, broker: Any, influx_db: Any,
                                                                tmp_path: Path) -> None:
    """The scenario's incident sensors, published accelerated (whole run in ~2 s) through a real Mosquitto
    into the real collector, are all stored and show the declared signal shape in InfluxQL."""
    sim = Simulator(PARK, scn, seed=0, sensors=_incident_sensors(scn))
    messages = list(sim.messages())
    dec = Decoder(PARK)
    n_readings = sum(len(dec.decode(m.topic, m.payload, 0).readings) for m in messages)
    settings = settings_for(broker.url, influx_db.url, influx_db.db, None, tmp_path / "state")
    with CollectorThread(settings, PARK) as collector:
        wait_connected(collector)
        sent = asyncio.run(publish(messages, broker.url, speed=scn.run_s / 2.0, qos=1))
        assert sent == len(messages)
        wait_for(lambda: influx_db.count("reading", "value") >= n_readings, 60,
                 lambda: f"{influx_db.count('reading', 'value')} of {n_readings} readings")
    assert influx_db.count("reading", "value") == n_readings
    t0 = sim.t0_ms
    for check in scn.checks:
        observed = _agg(influx_db, scn, t0, check.sensor, check.agg, check.window_s)
        assert check.holds(observed), f"{check.sensor} {check.agg}{list(check.window_s)} = {observed} " \
                                      f"not {check.op} {check.value}"
    if scn.id.startswith("sc05"):  # the DAS flushes corrupted frames: they arrive as dead letters
        rows = influx_db.query('SELECT count("detail") FROM "dead_letter" GROUP BY "reason"')
        reasons = {r["reason"]: int(r["count"]) for r in rows}
        assert reasons == {"bad_json": 2, "bad_value": 1, "bad_ts": 1, "out_of_range": 1}
        bad = influx_db.query('SELECT "value" FROM "reading" WHERE "quality"=\'bad\'')
        assert [r["value"] for r in bad] == [-9999.0]


# --------------------------------------------------------------------------- record and replay

class _Recorder:
    """`simulators.record` in a thread, until stopped."""

    def __init__(self, url: str, path: Path, count: int | None = None, marker: bytes | None = None) -> None:
        self.url, self.path, self.limit, self.marker = url, path, count, marker
        self.ready = threading.Event()
        self.count = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        ready = asyncio.Event()
        stop = self._stop

        def seen(m: Message) -> None:
            if self.marker is not None and m.payload == self.marker:
                stop.set()
        task = asyncio.create_task(record(self.url, self.path, stop=self._stop, ready=ready,
                                               count=self.limit, on_message=seen))
        await ready.wait()
        self.ready.set()
        self.count = await task

    def __enter__(self) -> _Recorder:
        self._thread.start()
        assert self.ready.wait(15), "recorder did not subscribe"
        return self

    def wait(self, timeout: float = 30) -> int:
        """Until the recorder has its ``count`` messages (it then stops by itself)."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the recorder did not get all messages"
        return self.count

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


def test_record_then_replay_reproduces_the_readings(broker: Any, tmp_path: Path) -> None:
    """record captures park/# with receive times; replay republishes the same topics and payloads in the same
    order, so a second recording of the replay equals the first."""
    scn = load_scenario("sc05", PARK)  # includes garbage payloads: they are traffic too
    msgs = list(Simulator(PARK, scn, seed=0, sensors=[k for k in resolve_sensors(PARK, "hw_center/stack_cems/*")])
                .messages())
    first, second = tmp_path / "first.jsonl.gz", tmp_path / "second.jsonl.gz"
    with _Recorder(broker.url, first, count=len(msgs)) as rec:
        asyncio.run(publish(msgs, broker.url, speed=0))
        assert rec.wait() == len(msgs)
    recorded = list(read_recording(first))
    assert [(m.topic, m.payload) for m in recorded] == [(m.topic, m.payload) for m in msgs]
    assert all(b.ts_ms >= a.ts_ms for a, b in itertools.pairwise(recorded))  # receive times
    with _Recorder(broker.url, second, count=len(msgs)) as rec:
        sent = asyncio.run(replay(first, broker.url, speed=0))
        assert sent == len(msgs)
        assert rec.wait() == len(msgs)
    assert [(m.topic, m.payload) for m in read_recording(second)] == [(m.topic, m.payload) for m in msgs]


def test_paced_replay_scales_the_original_timing() -> None:
    """Pacing waits (ts difference) / speed between messages, on an injected clock (no real sleeping)."""
    now = [100.0]
    waits: list[float] = []

    async def sleep(s: float) -> None:
        waits.append(s)
        now[0] += s

    msgs = [Message(1_000 + 500 * i, "park/x", b"1") for i in range(9)]  # 4 s of traffic

    async def run() -> list[list[Message]]:
        paced = Paced(msgs, 10.0, lambda: now[0], sleep)
        out = []
        while not paced.done:
            out.append(await paced.batch(100))
        return out

    batches = asyncio.run(run())
    assert sum(len(b) for b in batches) == 9
    assert sum(waits) == pytest.approx(0.4)  # 4 s at speed 10
    assert all(w == pytest.approx(0.05) for w in waits)


def test_publish_survives_a_broker_restart(broker: Any) -> None:
    """publish reconnects (full-jitter backoff) when the broker goes away and sends everything."""
    msgs = [Message(START + i * 10, "park/hw_center/scc/temp", b'{"value": 1150.0, "ts": %d}' % (START + i * 10))
            for i in range(400)]

    async def run() -> int:
        task = asyncio.create_task(publish(msgs, broker.url, speed=20.0, qos=1))  # ~0.2 s of traffic
        await asyncio.sleep(0.05)
        await asyncio.to_thread(broker.restart)
        return await asyncio.wait_for(task, 60)

    assert asyncio.run(run()) == len(msgs)


# --------------------------------------------------------------------------- backfill and the command line

def test_backfill_writes_history_with_historical_timestamps(influx_db: Any) -> None:
    """backfill writes every reading of two hours of the whole park through the collector's InfluxDB client,
    each at its simulated timestamp, exactly what Simulator.lines() generates."""
    from simulators import backfill
    from smartpark.config import Settings
    from smartpark.influx import InfluxClient

    settings = Settings(influx_url=influx_db.url, influx_db=influx_db.db)
    expected = sum(len(chunk) for chunk in Simulator(PARK, seed=4, start_ms=START).lines(7200))
    seen: list[tuple[int, int, int]] = []

    async def run() -> int:
        async with InfluxClient(settings.influx()) as client:
            return await backfill(PARK, client, START, START + 7_200_000, seed=4,
                                  progress=lambda d, t, w: seen.append((d, t, w)))

    written = asyncio.run(run())
    assert written == expected == influx_db.count("reading", "value")
    rows = influx_db.query('SELECT min("value"), max("value") FROM "reading" WHERE "sensor"=\'temp\' '
                           'AND "asset"=\'scc\'')
    assert 1120 < rows[0]["min"] < rows[0]["max"] < 1200
    span = influx_db.query('SELECT first("value"), last("value") FROM "reading"')
    assert span  # the points sit at their simulated times, not at the time of the test:
    first = influx_db.query('SELECT first("value") FROM "reading"')[0]["time"]
    last = influx_db.query('SELECT last("value") FROM "reading"')[0]["time"]
    assert first == START and START + 7_000_000 < last < START + 7_200_000
    assert seen[-1] == (7_200_000, 7_200_000, written)


def test_simulate_subprocess_exits_0_on_sigterm_and_record_on_sigint(broker: Any, tmp_path: Path) -> None:
    """`smartpark simulate` (live, forever) ends cleanly with exit 0 on SIGTERM, `smartpark record` with exit 0
    on SIGINT, and the recording holds what was published."""
    env = {**os.environ, "SMARTPARK_MQTT_URL": broker.url}
    rec_file = tmp_path / "live.jsonl.gz"
    seen = _Counter(broker.port, "park/energy_hub/#")
    rec = subprocess.Popen([*SMARTPARK, "record", str(rec_file)], env=env,
                           stderr=subprocess.PIPE, text=True)
    sim = None
    try:
        wait_for(rec_file.exists, 30, "the recorder's subscription (its file)")
        sim = subprocess.Popen([*SMARTPARK, "simulate", "--speed", "60", "--site",
                                "energy_hub"], env=env, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: seen.count >= 500, 30, lambda: f"{seen.count} of 500 messages")
        sim.send_signal(signal.SIGTERM)
        _, err = sim.communicate(timeout=30)
        assert sim.returncode == 0, err
        assert "published" in err
        rec.send_signal(signal.SIGINT)
        _, rec_err = rec.communicate(timeout=30)
        assert rec.returncode == 0, rec_err
    finally:
        seen.close()
        for p in (sim, rec):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    got = list(read_recording(rec_file))
    assert len(got) >= 500 and all(m.topic.startswith("park/energy_hub/") for m in got)


class _Counter:
    """A paho subscriber in its own thread that counts messages (to know when traffic has started)."""

    def __init__(self, port: int, topic: str) -> None:
        import paho.mqtt.client as mqtt

        self.count = 0
        self.ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"counter-{port}")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=0)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.ready.wait(15), "the counter's subscription"

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        self.count += 1

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_cli_backfill_writes_the_window(influx_db: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """`smartpark simulate --start T --end T --site S` backfills exactly that window into InfluxDB."""
    rc = main(["simulate", "--start", "2026-11-27T08:00", "--end", "2026-11-27T08:30", "--site", "wwtp",
               "--seed", "2", "--influx-url", influx_db.url, "--influx-db", influx_db.db])
    assert rc == 0
    start = 1_764_201_600_000  # 2026-11-27T08:00+08:00 = 00:00Z
    expected = sum(len(c) for c in Simulator(PARK, seed=2, start_ms=start, sites=["wwtp"]).lines(1800))
    assert influx_db.count("reading", "value") == expected
    assert f"wrote {expected} readings" in capsys.readouterr().err
    rows = influx_db.query('SELECT count("value") FROM "reading" GROUP BY "site"')
    assert {r["site"] for r in rows} == {"wwtp"}
    bad = main(["simulate", "--start", "2026-11-27T08:30", "--end", "2026-11-27T08:00"])
    assert bad == 2


def test_a_paced_publish_stops_at_once_when_asked(broker: Any) -> None:
    """A real-time run waiting an hour for its next message ends as soon as ``stop`` is set (SIGTERM path)."""
    msgs = [Message(START, "park/wwtp/effluent/cod", b'{"value": 33.0, "ts": %d}' % START),
            Message(START + 3_600_000, "park/wwtp/effluent/cod", b'{"value": 34.0, "ts": %d}' % (START + 3_600_000))]
    seen = _Counter(broker.port, "park/#")
    try:

        async def run() -> int:
            stop = asyncio.Event()
            task = asyncio.create_task(publish(msgs, broker.url, speed=1.0, stop=stop))
            await asyncio.to_thread(wait_for, lambda: seen.count >= 1, 30, "the first message")
            stop.set()
            return await asyncio.wait_for(task, 30)

        assert asyncio.run(run()) == 1
    finally:
        seen.close()


def test_publish_with_credentials_and_refusal(tmp_path: Path) -> None:
    """publish sends the URL's user and password; a refused login is raised at once, not retried forever."""
    from devstack import free_port, port_in_use
    from smartpark.mqtt import MqttRefused

    port = free_port()
    pw = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pw), "sim", "s3cret"], check=True, capture_output=True)
    conf = tmp_path / "mosquitto.conf"
    user = getpass.getuser()  # as root, mosquitto would switch to 'mosquitto', who cannot read tmp_path
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {pw}\nuser {user}\n",
                    encoding="utf-8")
    proc = subprocess.Popen(["/usr/sbin/mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: port_in_use(port), 15, "the password-protected mosquitto")
        msgs = list(Simulator(PARK, seed=0, start_ms=START, sites=["wwtp"]).messages(60))
        good = f"mqtt://sim:s3cret@127.0.0.1:{port}"
        assert asyncio.run(publish(msgs, good, speed=0)) == len(msgs)
        with pytest.raises(MqttRefused) as err:
            asyncio.run(publish(msgs, f"mqtt://sim:wrong@127.0.0.1:{port}", speed=0))
        assert err.value.code in (4, 5)
    finally:
        proc.terminate()
        proc.wait(15)


def test_a_truncated_recording_replays_what_is_whole(tmp_path: Path) -> None:
    """A recorder killed mid-write leaves a cut gzip stream: reading it yields the complete lines, no error."""
    import gzip

    path = tmp_path / "cut.jsonl.gz"
    lines = ['{"format": "smartpark-recording", "version": 1}'] + [
        json.dumps({"t": START + i, "topic": "park/wwtp/effluent/cod", "qos": 1, "retain": False,
                    "payload": f'{{"value": {i}.5}}'}) for i in range(2000)]
    data = gzip.compress(("\n".join(lines) + "\n").encode())
    path.write_bytes(data[: len(data) * 2 // 3])
    got = list(read_recording(path))
    assert 0 < len(got) < 2000
    assert [json.loads(m.payload)["value"] for m in got] == [i + 0.5 for i in range(len(got))]


def test_record_reconnects_and_keeps_its_session_across_a_broker_restart(broker: Any, tmp_path: Path) -> None:
    """The recorder survives a broker restart: it reconnects, its persistent session keeps its subscription and
    the QoS 1 messages published meanwhile, and the file holds everything in order."""
    def msgs(a: int, b: int) -> list[Message]:
        return [Message(START + i, "park/wwtp/effluent/cod", b'{"value": %d.5, "ts": %d}' % (i, START + i))
                for i in range(a, b)]

    path = tmp_path / "restart.jsonl.gz"
    marker = msgs(100, 101)
    with _Recorder(broker.url, path, marker=marker[0].payload) as rec:
        asyncio.run(publish(msgs(0, 50), broker.url, speed=0))
        broker.restart()
        asyncio.run(publish(msgs(50, 100) + marker, broker.url, speed=0))
        assert rec.wait(60) >= 101
    got = [m.payload for m in read_recording(path)]
    # at-least-once: messages the recorder had not acknowledged before the restart come again
    first_seen = list(dict.fromkeys(got))
    assert first_seen == [m.payload for m in msgs(0, 101)]
