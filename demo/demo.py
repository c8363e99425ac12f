"""``smartpark demo``: the whole park end to end on this machine, in about two minutes.

It is what ``make demo`` runs after set-up, and the proof that the parts fit together:

1. the local stack (Mosquitto, InfluxDB) under ``<state dir>/demo/``;
2. the collector, the alert engine and the HJ 212 platform as real subprocesses (``smartpark collect``,
   ``smartpark alerts run``, ``smartpark hj212 serve``), exactly as a park would run them, the engine notifying
   a webhook receiver that this demo serves;
3. a few hours of history backfilled into InfluxDB by the simulators;
4. an incident scenario played accelerated through the broker and, for the park's CEMS and outfall analysers,
   through their HJ 212 data loggers as well, while a live console shows readings/s, points written, dead
   letters, the HJ 212 packets acknowledged, the active alarm list and the notifications on-call staff would get;
5. an operator acknowledging the first alarm through the operator API;
6. a summary: what was ingested, which alarms fired and when, the alarm KPIs, the dashboard previews,
   and the commands to explore further.

The loggers play the same simulation as the broker (same seed, same start on a whole second): each HJ 212
reading is the MQTT reading of its sensor, same timestamp and value, so InfluxDB keeps one point. The platform
runs without its engine feed (``--no-engine-feed``): the demo's engine keeps time by the readings' timestamps
(``--clock event``), and the few loggers, paced on their own, run ahead of the whole park's MQTT stream when the
machine is busy, which would move that clock on and make every other sensor look silent (``no_data``). With the
wall clock of a real park the feed is what gets the loggers' readings to the engine (hj212/README.md).

Ctrl-C stops everything cleanly; ``--keep`` leaves the stack running for exploration.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
from aiohttp import web
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from alerts.users import UserStore
from devstack import SMARTPARK, Stack, StackError, free_port, port_in_use
from hj212.simulate import DriveResult, drive, logger_messages
from simulators import Simulator, backfill, load_scenario, publish
from smartpark.config import InfluxTarget, Settings
from smartpark.influx import InfluxClient
from smartpark.numbers import beside_limit, number
from smartpark.park import Park, load_park
from smartpark.schema import ACKED, ACKED_EV, ALARM, DEAD_LETTER, NORM, OOSRV, RAISED, READING, RTNUN, SHLVD, UNACK
from smartpark.timing import parse_duration
from smartpark.topics import SYS_SUBSCRIPTION, status_topic

SERVICE_STOP_TIMEOUT = 20.0
STATE_COLOURS = {UNACK: "red", ACKED: "yellow", RTNUN: "cyan", SHLVD: "magenta", OOSRV: "dim"}


@dataclass
class Notifications:
    """What the demo's webhook receiver got: the alarm events on-call staff would be sent."""

    events: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        try:
            self.events.append(await request.json())
        except (ValueError, UnicodeDecodeError):
            self.events.append({"raw": (await request.text())[:200]})
        return web.Response(status=204)


@dataclass
class Outcome:
    """The demo's result, also what the end-to-end test asserts on."""

    scenario: str
    readings: int = 0
    dead_letters: int = 0
    published: int = 0
    backfilled: int = 0
    alarms: list[dict[str, Any]] = field(default_factory=list)  # raised events from the alarm measurement
    acked: str | None = None
    acked_state: str | None = None
    acked_events: int = 0  # 'acked' events of the console user demo in the alarm measurement (the audit trail)
    notifications: int = 0
    previews: list[str] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    hj212_sent: int = 0  # real-time packets the park's data loggers sent
    hj212_acked: int = 0  # of them, acknowledged with a 9014 (counted by the loggers)
    hj212_readings: int = 0  # reading points the HJ 212 platform wrote (its smartpark_collector_written)

    def to_json(self) -> str:
        return json.dumps(self.__dict__, default=str, ensure_ascii=False, indent=1)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="run the whole park end to end: stack, collector, alerts, an incident",
                       description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--scenario", default="sc01_scc_temp_drop_on_feed",
                   help="incident scenario (smartpark simulate --list)")
    p.add_argument("--keep", action="store_true", help="leave the stack running afterwards for exploration")
    p.add_argument("--history", default="3h", help="history to backfill before the incident (default 3h)")
    p.add_argument("--play-seconds", type=float, default=60.0,
                   help="wall-clock seconds the incident takes to play (sets the speed-up; default 60)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--no-live", action="store_true", help="plain log lines instead of the live console")
    p.add_argument("--no-preview", action="store_true", help="skip rendering the dashboard previews")
    p.add_argument("--json", dest="json_out", help="also write the outcome as JSON to this file")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        return asyncio.run(Demo(args, settings).run())
    except KeyboardInterrupt:
        return 130
    except (RuntimeError, StackError, aiohttp.ClientError, OSError) as exc:
        sys.stderr.write(f"smartpark demo: {exc}\n(logs: {settings.state_path / 'demo' / 'logs'})\n")
        return 1


class Demo:
    def __init__(self, args: argparse.Namespace, settings: Settings) -> None:
        self.args = args
        self.settings = settings
        self.console = Console()
        self.root = settings.state_path / "demo"
        self.park: Park = load_park(settings.park)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.notes = Notifications()
        self.log_lines: list[str] = []
        self.token = secrets.token_urlsafe(24)
        self.history_s = parse_duration(args.history)
        self.hj212_live = (0, 0)  # (9014s sent, readings written) from the HJ 212 platform's metrics

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> int:
        scenario = load_scenario(self.args.scenario, self.park)
        outcome = Outcome(scenario=scenario.id)
        self.root.mkdir(parents=True, exist_ok=True)
        # Each run starts from an empty database, so the durable state of a previous run (the alert engine's
        # journal and snapshot, the collector's spool) describes data that is gone: start those afresh too.
        for stale in ("alerts", "spool"):
            shutil.rmtree(self.root / stale, ignore_errors=True)
        mqtt_port = 1883 if not port_in_use(1883) else free_port()
        influx_port = 8086 if not port_in_use(8086) else free_port()
        self.stack = Stack(self.root / "stack", mqtt_port=mqtt_port, influx_port=influx_port)
        self._say(f"starting the local stack under {self.root}/stack …")
        # The broker's persisted sessions may still hold messages of an interrupted earlier run, whose
        # timestamps lie ahead of this run's: with the event clock they would jump the engine's time. A demo
        # starts clean: stop a stack left running by --keep and forget what its broker persisted.
        await asyncio.to_thread(self.stack.down)
        shutil.rmtree(self.stack.service_dir("mosquitto") / "data", ignore_errors=True)
        await asyncio.to_thread(self.stack.up)
        status = self.stack.status()
        self.mqtt_url = status["mosquitto"].url
        self.influx_url = status["influxd"].url
        self.api_port = free_port()
        self.metrics_port = free_port()
        self.hj212_port = free_port()
        self.hj212_metrics_port = free_port()
        hook_port = free_port()
        runner = web.AppRunner(self._webhook_app())
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", hook_port).start()
        self.hook_url = f"http://127.0.0.1:{hook_port}/hook"
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await self._fresh_database()
            self._start_services()
            await self._wait_services()
            await self._play(scenario, outcome, stop)
            await self._summarise(outcome)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            outcome.exit_codes = self._stop_services()
            await runner.cleanup()
            if not self.args.keep:
                await asyncio.to_thread(self.stack.down)
        if self.args.json_out:
            await asyncio.to_thread(Path(self.args.json_out).write_text, outcome.to_json())
        self._print_summary(outcome, interrupted=stop.is_set())
        clean = all(code == 0 for code in outcome.exit_codes.values())
        return 0 if clean and not stop.is_set() else (130 if stop.is_set() else 1)

    @property
    def influx_target(self) -> InfluxTarget:
        """The demo stack's InfluxDB, with the configured database."""
        return Settings(influx_url=self.influx_url, influx_db=self.settings.influx_db).influx()

    def _say(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        self.log_lines.append(f"{stamp} {text}")
        del self.log_lines[:-8]
        if self.args.no_live or not getattr(self, "_live", None):
            self.console.print(f"[dim]{stamp}[/] {text}")

    def _webhook_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hook", self.notes.handle)
        return app

    def _common(self) -> list[str]:
        # --flag=value: a generated token may start with '-', which argparse would take for an option
        return [f"--mqtt-url={self.mqtt_url}", f"--influx-url={self.influx_url}",
                f"--influx-db={self.settings.influx_db}", f"--state-dir={self.root}",
                f"--api-url=http://127.0.0.1:{self.api_port}", f"--api-token={self.token}"]

    def _start_services(self) -> None:
        exe = list(SMARTPARK)
        if self.settings.park:
            exe += ["--park", self.settings.park]
        logs = self.root / "logs"
        logs.mkdir(exist_ok=True)
        commands = {
            "collector": [*exe, "collect", *self._common(), "--instance", "demo",
                          "--metrics-port", str(self.metrics_port)],
            "alerts": [*exe, "alerts", "run", *self._common(), "--clock", "event",
                       "--webhook", self.hook_url],
            # the collector's state dir layout: its spool is <state dir>/spool/, instance hj212; no engine feed:
            # the readings are the MQTT ones, which the event-clocked engine must see in one time order
            "hj212": [*exe, "hj212", "serve", *self._common(), f"--hj212-listen=127.0.0.1:{self.hj212_port}",
                      "--metrics-port", str(self.hj212_metrics_port), "--no-engine-feed"],
        }
        for name, cmd in commands.items():
            log = open(logs / f"{name}.log", "wb")  # handed to the child, closed on stop
            self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
            self._say(f"started {name} (pid {self.procs[name].pid}): smartpark {' '.join(cmd[3:6])} …")
        self._say(f"operator console: http://127.0.0.1:{self.api_port}/  user [b]demo[/], password "
                  f"[b]{self._demo_user()}[/] (supervisor) while the scenario plays")

    def _demo_user(self) -> str:
        """A console user for the newcomer (``smartpark users`` in the demo's state dir), new password each run."""
        store, password = UserStore(self.root / "users.yaml"), secrets.token_urlsafe(9)
        if "demo" in store.users:
            store.remove("demo")
        store.add("demo", "supervisor", password)
        self.demo_token = store.issue_token("demo")  # the scripted acknowledgement acts as demo too
        return password

    async def _wait_services(self) -> None:
        deadline = time.monotonic() + 30.0
        async with aiohttp.ClientSession() as http:
            while True:
                for name, proc in self.procs.items():
                    if proc.poll() is not None:
                        tail = (self.root / "logs" / f"{name}.log").read_text(errors="replace")[-1500:]
                        raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")
                try:
                    async with http.get(f"http://127.0.0.1:{self.api_port}/alarms",
                                        headers=self._auth()) as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("the alert engine's API did not answer within 30 s")
                await asyncio.sleep(0.3)
            await self._wait_listening(deadline)
        # Both publish their retained status 'online' once subscribed (CONTRACT §2): only then is nothing
        # that the simulator publishes missed by a persistent session that does not exist yet.
        await self._wait_online({status_topic("collector", "demo"), status_topic("alerts", "main")},
                                deadline - time.monotonic())
        self._say(f"collector and alert engine are up and subscribed; HJ 212 platform on 127.0.0.1:{self.hj212_port}")

    async def _wait_listening(self, deadline: float) -> None:
        """Until ``hj212 serve`` takes connections (it fails with a clear message if it cannot listen)."""
        proc = self.procs["hj212"]
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.hj212_port)
                writer.close()
                return
            except OSError:
                pass
            if proc.poll() is not None:
                tail = (self.root / "logs" / "hj212.log").read_text(errors="replace")[-1500:]
                raise RuntimeError(f"hj212 exited with {proc.returncode}:\n{tail}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the HJ 212 platform did not listen on 127.0.0.1:{self.hj212_port} within 30 s")
            await asyncio.sleep(0.3)

    async def _wait_online(self, topics: set[str], seconds: float) -> None:
        waiting = set(topics)
        async with asyncio.timeout(max(1.0, seconds)), aiomqtt.Client(
                hostname="127.0.0.1", port=int(self.mqtt_url.rsplit(":", 1)[1])) as client:
            await client.subscribe(SYS_SUBSCRIPTION, qos=1)
            async for msg in client.messages:
                try:
                    online = json.loads(bytes(msg.payload)).get("status") == "online"
                except (ValueError, TypeError, AttributeError):
                    continue
                if online:
                    waiting.discard(str(msg.topic))
                if not waiting:
                    return

    def _stop_services(self) -> dict[str, int | None]:
        codes: dict[str, int | None] = {}
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(timeout=SERVICE_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait()
        return codes

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def _fresh_database(self) -> None:
        target = self.influx_target
        async with InfluxClient(target) as db:
            await db.query(f'DROP DATABASE "{target.db}"', db=False, method="POST")
            await db.ensure_database()

    # ------------------------------------------------------------------ the incident
    async def _play(self, scenario: Any, outcome: Outcome, stop: asyncio.Event) -> None:
        target = self.influx_target
        total_s = scenario.warmup_s + scenario.duration_s
        # the incident ends about now; on a whole second, as HJ 212's DataTime is, so that a logger's reading
        # has the very timestamp of the same reading over MQTT
        t_start = int(time.time()) * 1000 - int(total_s * 1000)
        history_start = t_start - int(self.history_s * 1000)
        self._say(f"backfilling {self.args.history} of history for {len(self.park)} sensors …")
        async with InfluxClient(target) as db:
            outcome.backfilled = await backfill(self.park, db, history_start, t_start, seed=self.args.seed)
        self._say(f"backfilled {outcome.backfilled:,} readings; playing {scenario.id}: {scenario.title_zh} / "
                  f"{scenario.title}")
        speed = max(1.0, total_s / self.args.play_seconds)
        # the whole park plays, not only the incident's site: the engine would rightly see the others as no_data
        sim = Simulator(self.park, scenario=scenario, seed=self.args.seed, start_ms=t_start,
                        sites=[site.id for site in self.park.sites])
        self._play_started = time.monotonic()
        pub = asyncio.create_task(publish(sim.messages(), self.mqtt_url, speed=speed, qos=1))
        # the park's data loggers play the same simulation (seed, start, sites) over HJ 212: same readings
        loggers = Simulator(self.park, scenario=scenario, seed=self.args.seed, start_ms=t_start,
                            sites=[site.id for site in self.park.sites])
        hj = asyncio.create_task(drive(logger_messages(self.park, loggers), "127.0.0.1", self.hj212_port,
                                       speed=speed, stop=stop))
        self._t0_ms = t_start + int(scenario.warmup_s * 1000)
        with self._console_live() as live:
            while not (pub.done() and hj.done()) and not stop.is_set():
                await self._refresh(live, outcome, scenario, speed)
                await asyncio.wait([pub, hj, asyncio.ensure_future(stop.wait())], timeout=1.0,
                                   return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                for task in (pub, hj):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                return
            outcome.published = pub.result()
            result: DriveResult = hj.result()
            outcome.hj212_sent, outcome.hj212_acked = result.sent, result.acked
            # let the collector flush and the engine settle, then take the final picture
            await self._settle(outcome)
            await self._refresh(live, outcome, scenario, speed)

    async def _settle(self, outcome: Outcome) -> None:
        """Wait (at most 20 s) until every published reading is stored and the count stops moving."""
        deadline = time.monotonic() + 20.0
        last = -1
        while time.monotonic() < deadline:
            await self._count(outcome)
            if outcome.readings == last and outcome.readings >= outcome.published:
                break
            last = outcome.readings
            await asyncio.sleep(1.0)

    async def _count(self, outcome: Outcome) -> None:
        target = self.influx_target
        async with InfluxClient(target) as db:
            rows = await db.rows(f"SELECT count(value) FROM {READING} WHERE time >= {self._t0_ms - 10**9}ms")
            total = int(rows[0]["count"]) if rows else 0
            outcome.readings = total - outcome.backfilled if total >= outcome.backfilled else total
            dl = await db.rows(f"SELECT count(detail) FROM {DEAD_LETTER}")
            outcome.dead_letters = int(dl[0]["count"]) if dl else 0
        self.hj212_live = await self._hj212_metrics()
        outcome.hj212_readings = self.hj212_live[1]

    async def _hj212_metrics(self) -> tuple[int, int]:
        """(9014s sent, reading points written) from the HJ 212 platform's Prometheus metrics."""
        try:
            async with aiohttp.ClientSession() as http, http.get(
                    f"http://127.0.0.1:{self.hj212_metrics_port}/metrics") as resp:
                text = await resp.text()
        except (aiohttp.ClientError, OSError):
            return self.hj212_live  # the last figures while it does not answer
        acks = written = 0.0
        for line in text.splitlines():
            name, _, value = line.rpartition(" ")
            if name.startswith("smartpark_hj212_acks_total"):
                acks += float(value)
            elif name == "smartpark_collector_written_total":
                written = float(value)
        return int(acks), int(written)

    async def _active(self) -> list[dict[str, Any]]:
        async with aiohttp.ClientSession() as http, http.get(
                f"http://127.0.0.1:{self.api_port}/alarms", headers=self._auth()) as resp:
            data = await resp.json()
        return list(data.get("alarms", data) if isinstance(data, dict) else data)

    async def _ack_first(self, active: list[dict[str, Any]], outcome: Outcome) -> None:
        if outcome.acked is not None:
            return
        for alarm in active:
            if alarm.get("state") == UNACK:
                alarm_id = alarm["id"]
                async with aiohttp.ClientSession() as http, http.post(
                        f"http://127.0.0.1:{self.api_port}/alarms/{alarm_id}/ack",
                        headers={"Authorization": f"Bearer {self.demo_token}"},  # acts as the user demo
                        json={"comment": "seen in the control room"}) as resp:
                    if resp.status < 300:
                        outcome.acked = alarm_id
                        self._say(f"operator acknowledged {alarm_id}")
                return

    @contextlib.contextmanager
    def _console_live(self) -> Any:
        if self.args.no_live:
            self._live = None
            yield None
            return
        with Live(console=self.console, refresh_per_second=4, transient=False) as live:
            self._live = live
            try:
                yield live
            finally:
                self._live = None

    async def _refresh(self, live: Live | None, outcome: Outcome, scenario: Any, speed: float) -> None:
        try:
            await self._count(outcome)
            active = await self._active()
        except (aiohttp.ClientError, ValueError, OSError) as exc:
            self._say(f"[yellow]status not available: {exc}[/]")
            return
        await self._ack_first(active, outcome)
        rate = (outcome.readings - getattr(self, "_last_count", 0)) / max(1e-3, time.monotonic() - getattr(
            self, "_last_t", time.monotonic() - 1))
        self._last_count, self._last_t = outcome.readings, time.monotonic()
        if live is None:
            self._say(f"readings {outcome.readings:,} ({rate:,.0f}/s), dead letters {outcome.dead_letters}, "
                      f"HJ 212 acked {self.hj212_live[0]:,} stored {self.hj212_live[1]:,}, "
                      f"active alarms {len(active)}, notifications {len(self.notes.events)}")
            return
        head = Table.grid(padding=(0, 3))
        t_s = (time.monotonic() - self._play_started) * speed - scenario.warmup_s
        phase = f"incident t={t_s:+.0f} s" if t_s >= 0 else f"normal operation, incident in {-t_s:.0f} s"
        head.add_row(f"[b]{scenario.id}[/] ×{speed:.0f}", phase, f"readings/s [b]{rate:,.0f}[/]",
                     f"points written [b]{outcome.readings:,}[/]", f"dead letters [b]{outcome.dead_letters}[/]",
                     f"HJ 212 acked [b]{self.hj212_live[0]:,}[/] stored [b]{self.hj212_live[1]:,}[/]",
                     f"notifications [b]{len(self.notes.events)}[/]")
        alarms = Table(title="active alarms (ISA-18.2)", expand=True)
        for col in ("id", "priority", "state", "value", "limit", "message"):
            alarms.add_column(col, overflow="fold")
        for a in active[:12]:
            colour = STATE_COLOURS.get(str(a.get("state")), "")
            state = f"[{colour}]{a.get('state')}[/]" if colour else str(a.get("state"))
            alarms.add_row(a.get("id", ""), a.get("priority", ""), state, *_value_and_limit(a),
                           str(a.get("message", ""))[:60])
        notes = Table(title="notifications to on-call staff (webhook)", expand=True)
        notes.add_column("event")
        for ev in self.notes.events[-5:]:
            notes.add_row(f"{ev.get('event', '?')} {ev.get('id', '')} {ev.get('state', '')} {_plain(ev.get('value'))}")
        log = "\n".join(self.log_lines[-5:])
        live.update(Panel(Group(head, alarms, notes, log), title="smartpark demo — Ctrl-C stops"))

    # ------------------------------------------------------------------ summary
    async def _summarise(self, outcome: Outcome) -> None:
        target = self.influx_target
        async with InfluxClient(target) as db:
            outcome.alarms = await db.rows(
                f"SELECT value, \"limit\", state, message FROM {ALARM} WHERE event = '{RAISED}' "
                "GROUP BY site, asset, sensor, rule")
        outcome.notifications = len(self.notes.events)
        async with InfluxClient(target) as db:
            acks = await db.rows(f"SELECT count(state) FROM {ALARM} WHERE event = '{ACKED_EV}' "
                                 "AND operator = 'demo'")
            outcome.acked_events = int(acks[0]["count"]) if acks else 0
        if outcome.acked:
            active = await self._active()
            outcome.acked_state = next((a.get("state") for a in active if a.get("id") == outcome.acked), NORM)
        outcome.report = await self._report()
        if not self.args.no_preview:
            outcome.previews = await self._previews()

    async def _report(self) -> dict[str, Any]:
        cmd = [*SMARTPARK, *self._common(), "alerts", "report", "--since", "24h", "--json"]
        proc = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await proc.communicate()
        if proc.returncode != 0:
            self._say(f"[yellow]alerts report failed: {err.decode(errors='replace').strip()[-300:]}[/]")
            return {}
        try:
            data: dict[str, Any] = json.loads(out)
            return data
        except ValueError:
            return {}

    async def _previews(self) -> list[str]:
        out_dir = self.root / "previews"
        cmd = [*SMARTPARK, *self._common(), "dashboards", "preview", "--out", str(out_dir),
               "--since", f"{int(self.history_s + 3600)}s"]
        proc = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _, err = await proc.communicate()
        if proc.returncode != 0:
            self._say(f"[yellow]dashboard previews failed: {err.decode(errors='replace').strip()[-300:]}[/]")
            return []
        return sorted(str(p) for p in out_dir.glob("*.png"))

    def _print_summary(self, o: Outcome, interrupted: bool) -> None:
        c = self.console
        c.rule("[b]smartpark demo — summary")
        if interrupted:
            c.print("[yellow]interrupted: services stopped cleanly[/]")
        c.print(f"scenario [b]{o.scenario}[/]: {o.published:,} messages published, {o.readings:,} readings stored "
                f"(+{o.backfilled:,} backfilled history), {o.dead_letters} dead letters")
        c.print(f"HJ 212: the CEMS and outfall loggers sent {o.hj212_sent:,} real-time packets, "
                f"[b]{o.hj212_acked:,}[/] acknowledged (9014), [b]{o.hj212_readings:,}[/] readings stored "
                "through HJ 212 (the same readings as over MQTT: one point each in InfluxDB)")
        t = Table(title="alarms raised")
        for col in ("alarm", "time", "value", "limit", "message"):
            t.add_column(col, overflow="fold")
        for a in sorted(o.alarms, key=lambda r: r.get("time", 0)):
            when = time.strftime("%H:%M:%S", time.localtime(a["time"] / 1000)) if a.get("time") else ""
            t.add_row(f"{a.get('site')}/{a.get('asset')}/{a.get('sensor')}/{a.get('rule')}", when,
                      *_value_and_limit(a), str(a.get("message", ""))[:70])
        c.print(t)
        c.print(f"notifications delivered to the webhook: [b]{o.notifications}[/]; "
                f"acknowledged by the operator: [b]{o.acked or '-'}[/] (now {o.acked_state or '-'})")
        if o.report:
            c.print(_kpi_table(o.report))
        for p in o.previews:
            c.print(f"dashboard preview: {p}")
        env = f"SMARTPARK_MQTT_URL={self.mqtt_url} SMARTPARK_INFLUX_URL={self.influx_url}"
        # the command as the reader can type it: `smartpark` when on PATH, else the venv's script
        exe = "smartpark" if shutil.which("smartpark") else os.path.relpath(Path(sys.executable).parent / "smartpark")
        c.print("\n[b]explore further[/]")
        if self.args.keep:
            c.print(f"  the stack is still running: export {env}")
            c.print(f"  curl -G {self.influx_url}/query --data-urlencode db={self.settings.influx_db} "
                    f"--data-urlencode 'q=SELECT last(value) FROM {READING} GROUP BY sensor'")
            c.print(f"  {exe} --state-dir {self.root} stack down      # when done")
        else:
            c.print(f"  {exe} demo --keep          # leave the stack running to look around")
        c.print(f"  {exe} simulate --list      # the other incidents: {exe} demo --scenario NAME")
        c.print(f"  {exe} park show            # the park model")
        c.print(f"  {exe} hj212 serve --hj212-listen 0.0.0.0:9212   # the HJ 212 platform: in a data logger's "
                "上位机 settings enter this host, port 9212, its MN and PW (smartpark park show; hj212/README.md)")
        c.print(f"  {exe} hj212 simulate --target 127.0.0.1:9212 --scenario {o.scenario} --speed 60   "
                "# the park's loggers against it")
        c.print(f"  {exe} dashboards build     # Grafana dashboards; docker compose up for the full stack")


def _kpi_table(report: dict[str, Any]) -> Table:
    """The alarm-system KPIs (EEMUA 191 / ISA-18.2) of ``smartpark alerts report`` as a compact table."""
    t = Table(title="alarm KPIs, last 24 h (smartpark alerts report --since 24h)", show_header=False)
    t.add_column("kpi")
    t.add_column("value", overflow="fold")
    t.add_row("alarms", str(report.get("alarms", "")))
    avg, peak = report.get("per_10min_avg", ""), report.get("per_10min_peak", "")
    t.add_row("per 10 minutes (average / peak)", f"{avg} / {peak}")
    t.add_row("time in flood", f"{report.get('flood_time_pct', '')} %")
    top = report.get("top10") or []
    t.add_row("most frequent", ", ".join(f"{name} ×{n}" for name, n in top[:5]))
    t.add_row("chattering (≥ 3 in 1 min)", ", ".join(map(str, report.get("chattering") or [])) or "none")
    t.add_row("stale (active > 24 h)", ", ".join(map(str, report.get("stale") or [])) or "none")
    t.add_row("priority distribution", ", ".join(f"{k} {v}" for k, v in (report.get("priority") or {}).items()))
    t.add_row("operator actions", str(report.get("operator_actions", "")))
    return t


def _plain(v: Any) -> str:
    return number(float(v)) if isinstance(v, (int, float)) else "" if v is None else str(v)


def _value_and_limit(a: dict[str, Any]) -> tuple[str, str]:
    """An alarm's value and limit with the digits that show on which side of the limit the value is."""
    value, limit = a.get("value"), a.get("limit")
    num = (int, float)
    if isinstance(value, num) and isinstance(limit, num):
        return beside_limit(float(value), float(limit))
    return _plain(value), _plain(limit)
