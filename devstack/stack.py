"""The local stack: Mosquitto and InfluxDB 1.x from the system binaries, on 127.0.0.1 (CONTRACT §6).

``smartpark stack up | down | status``. Configuration, data, logs and pid files live under
``<state dir>/stack/``::

    stack/mosquitto/mosquitto.conf   generated on every start
    stack/mosquitto/data/            persistence (sessions, queued QoS 1 messages, retained messages)
    stack/mosquitto/mosquitto.log
    stack/mosquitto.pid              pid + port + config path (JSON), written by us, not by the daemon
    stack/influxd/influxdb.conf
    stack/influxd/{meta,data,wal}/
    stack/influxd/influxd.log
    stack/influxd.pid

The services are started in their own session (``start_new_session=True``) so that ``stack up`` from the
command line leaves them running. ``down`` only ever signals the pids of its own pid files, and only
after checking that the process still is the binary it started with our configuration file (pids get
reused), so it never kills anything else.

The Python API (:class:`Stack`, :func:`free_port`) is what the tests and the demo use.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

from smartpark.config import Settings
from smartpark.errors import ConfigError, SmartparkError

HOST = "127.0.0.1"
# the smartpark command as this interpreter runs it from this tree: what the demo, tests and benchmarks start
SMARTPARK = [sys.executable, "-m", "cli"]
DEFAULT_MQTT_PORT = 1883
DEFAULT_INFLUX_PORT = 8086

# Debian package that provides each binary, for the one-line error when it is missing.
PACKAGES = {"mosquitto": "mosquitto", "influxd": "influxdb"}


class StackError(SmartparkError):
    """A service did not start or stop; the message ends with the last lines of its log."""


# --------------------------------------------------------------------------------------------------
# small helpers


def free_port(host: str = HOST) -> int:
    """A TCP port that is free on ``host`` right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def find_binary(name: str) -> str:
    """Path of ``name`` on ``$PATH``; raise :class:`ConfigError` (exit 2, one line) when it is missing.

    Ordinary users' ``$PATH`` on Debian lacks ``/usr/sbin``, where ``mosquitto`` lives, so the ``sbin``
    sibling of every ``.../bin`` directory on ``$PATH`` is searched too (``/usr/bin`` -> ``/usr/sbin``).
    A ``$PATH`` without any system directory finds nothing, which is how the tests simulate a machine
    without the package.
    """
    dirs = [d for d in os.environ.get("PATH", os.defpath).split(os.pathsep) if d]
    extra = [d[: -len("bin")] + "sbin" for d in dirs if d.rstrip("/").endswith("/bin")]
    search = os.pathsep.join(dirs + [d for d in extra if d not in dirs])
    found = shutil.which(name, path=search)
    if not found:
        pkg = PACKAGES.get(name, name)
        raise ConfigError(f"{name} not found: install the Debian package '{pkg}' (apt-get install {pkg})")
    return found


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    tail = text.rstrip("\n").splitlines()[-lines:]
    return "\n".join("    " + line for line in tail) if tail else "(empty log)"


def _proc_state(pid: int) -> str | None:
    """The state letter of /proc/<pid>/stat, or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) S ...": comm may contain spaces and parentheses; the state follows the last ')'
    return stat[stat.rfind(")") + 2 :][:1] or None


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a running (not zombie) process. Reaps it first when it is our own dead child."""
    if pid <= 0:
        return False
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    state = _proc_state(pid)
    return state is not None and state not in ("Z", "X")


def mqtt_answers(port: int, host: str = HOST, timeout: float = 1.0) -> bool:
    """TCP connect, MQTT 3.1.1 CONNECT, and a CONNACK with return code 0. No third-party client needed."""
    connect = bytes([
        0x10, 12,                        # CONNECT, remaining length
        0x00, 0x04, *b"MQTT", 0x04,      # protocol name, level 4 (3.1.1)
        0x02,                            # flags: clean session
        0x00, 0x05,                      # keep alive 5 s
        0x00, 0x00,                      # empty client id (allowed with clean session)
    ])
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(connect)
            data = b""
            while len(data) < 4:
                chunk = s.recv(4 - len(data))
                if not chunk:
                    return False
                data += chunk
            ok = data[0] == 0x20 and data[3] == 0x00
            with contextlib.suppress(OSError):
                s.sendall(b"\xe0\x00")   # DISCONNECT
            return ok
    except OSError:
        return False


def influx_answers(port: int, host: str = HOST, timeout: float = 1.0) -> bool:
    """``GET /ping`` answers 204."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/ping", timeout=timeout) as resp:
            return int(resp.status) == 204
    except (OSError, urllib.error.URLError, ValueError):
        return False


def port_in_use(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


# --------------------------------------------------------------------------------------------------
# configuration files

@dataclass(frozen=True)
class Persistence:
    """When mosquitto writes its in-memory state (sessions, queued QoS 1 messages, retained messages) to
    ``mosquitto.db``. Mosquitto keeps everything in memory and rewrites the whole file at each save; what
    a SIGKILL loses is what changed since the last save (README, "What survives a broker failure").

    ``on_changes``: ``interval`` counts changes (messages queued, subscriptions, retained messages), else
    seconds. ``enabled=False`` keeps nothing across a restart (the benchmark's baseline).
    """

    enabled: bool = True
    on_changes: bool = True
    interval: int = 1

    def conf(self) -> str:
        if not self.enabled:
            return "persistence false"
        return (f"persistence true\nautosave_on_changes {str(self.on_changes).lower()}\n"
                f"autosave_interval {self.interval}")


# Measured (bench/bench_broker_durability.py, docs/benchmarks/broker.md): a save every second costs no
# measurable publish throughput with 100,000 messages queued, and a SIGKILL loses only what came in since
# the last save. Saving on changes rewrites the whole queue every N messages: 0.12x the throughput at
# N = 1,000 with that queue, worse as the collector stays away longer, exactly when the queue matters.
PERSISTENCE = Persistence(on_changes=False, interval=1)


MOSQUITTO_CONF = """\
# Generated by `smartpark stack` at every start: edits are lost. See devstack/stack.py.
# Mosquitto 2.x: local broker for smartpark, loopback only.

listener {port} {host}
allow_anonymous true
# our own user: when run as root, mosquitto would otherwise switch to user 'mosquitto', which cannot
# write the persistence directory below
user {user}

# Persistence: sessions of persistent clients (the collector and the alarm engine subscribe with
# QoS 1 on persistent sessions), their queued messages and retained alarm states survive a restart;
# a SIGKILL loses what came in since the last autosave (devstack.PERSISTENCE).
{persistence}
persistence_location {data_dir}/
persistence_file mosquitto.db
# Persistent clients that never come back are forgotten after a week (non-standard option).
persistent_client_expiration 7d

# QoS 1 readings must never be dropped for a slow or disconnected subscriber (CONTRACT §2: the
# collector subscribes with QoS 1 and relies on the broker to hold what it has not yet taken).
# The default max_queued_messages is 1000 per client: above that mosquitto SILENTLY DROPS messages.
# 0 means "no maximum" in the manual of this version but not in every release, so a very high
# explicit limit is used instead; max_queued_bytes 0 = no byte limit.
max_queued_messages 10000000
max_queued_bytes 0
# QoS 0 readings are not queued for offline clients (MQTT 3.1.1 spec behaviour).
queue_qos0_messages false
# Outgoing QoS 1/2 messages in flight per client (default 20): more for throughput to the collector.
max_inflight_messages 100

# Lower latency for small messages.
set_tcp_nodelay true

log_dest stderr
log_type error
log_type warning
log_type notice
log_type information
connection_messages true
log_timestamp true
log_timestamp_format %Y-%m-%dT%H:%M:%S
"""

INFLUXDB_CONF = """\
# Generated by `smartpark stack` at every start: edits are lost. See devstack/stack.py.
# InfluxDB 1.x: local database for smartpark, loopback only.

# never phone home (both spellings: upstream and Debian's patched name)
reporting-disabled = true
reporting-enabled = false
# the RPC service used by backup/restore: loopback, on a port of its own
bind-address = "{host}:{rpc_port}"

[meta]
  dir = "{root}/meta"
  retention-autocreate = true
  logging-enabled = false

[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  # fsync the WAL before answering a write: acknowledged points survive a kill
  wal-fsync-delay = "0s"
  index-version = "inmem"
  query-log-enabled = false
  # unlimited, for tests and simulations with many series
  max-series-per-database = 0
  max-values-per-tag = 0
  cache-max-memory-size = 1073741824

[coordinator]
  log-queries-after = "0s"

[monitor]
  # no _internal database: saves memory, disk and CPU
  store-enabled = false

[http]
  enabled = true
  bind-address = "{host}:{port}"
  auth-enabled = false
  # no access log: one line per write would drown the log
  log-enabled = false
  suppress-write-log = true
  write-tracing = false
  pprof-enabled = false
  unix-socket-enabled = false
  max-body-size = 25000000

[logging]
  level = "info"
  suppress-logo = true

[continuous_queries]
  log-enabled = false

[subscriber]
  enabled = false
"""


# --------------------------------------------------------------------------------------------------
# services


@dataclass
class Service:
    """What ``status`` knows about one service."""

    name: str
    pid: int | None
    port: int
    running: bool      # our pid file names a live process of ours
    answering: bool    # the port answers the service's protocol (CONNACK, /ping 204)
    log_path: Path
    url: str

    @property
    def up(self) -> bool:
        return self.running and self.answering


@dataclass
class _Spec:
    name: str           # also the binary
    port_attr: str      # attribute of Stack holding the main port
    scheme: str


class Stack:
    """Mosquitto + InfluxDB under ``root`` (``<state dir>/stack``).

    ``influx_rpc_port=None`` picks a free loopback port at each start of influxd (the RPC/backup
    listener must not collide with anything, and nothing of ours uses it).
    """

    SPECS = (_Spec("mosquitto", "mqtt_port", "mqtt"), _Spec("influxd", "influx_port", "http"))

    def __init__(self, root: Path | str, mqtt_port: int = DEFAULT_MQTT_PORT,
                 influx_port: int = DEFAULT_INFLUX_PORT, influx_rpc_port: int | None = None,
                 host: str = HOST, persistence: Persistence = PERSISTENCE) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ConfigError(f"the local stack only listens on the loopback interface, not {host!r}")
        self.root = Path(root).absolute()
        self.host = HOST if host == "localhost" else host
        self.mqtt_port = int(mqtt_port)
        self.influx_port = int(influx_port)
        self.influx_rpc_port = influx_rpc_port
        self.persistence = persistence
        # Popen objects of the children started by this Python process (to reap them)
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._rpc_port_in_use: int | None = None

    # ---- paths and urls
    @property
    def mqtt_url(self) -> str:
        return f"mqtt://{self.host}:{self.mqtt_port}"

    @property
    def influx_url(self) -> str:
        return f"http://{self.host}:{self.influx_port}"

    def service_dir(self, name: str) -> Path:
        return self.root / name

    def pid_file(self, name: str) -> Path:
        return self.root / f"{name}.pid"

    def log_path(self, name: str) -> Path:
        return self.service_dir(name) / f"{name}.log"

    def config_path(self, name: str) -> Path:
        return self.service_dir(name) / ("mosquitto.conf" if name == "mosquitto" else "influxdb.conf")

    def _spec(self, name: str) -> _Spec:
        for spec in self.SPECS:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def _answers(self, name: str, port: int) -> bool:
        return mqtt_answers(port, self.host) if name == "mosquitto" else influx_answers(port, self.host)

    # ---- pid files
    def _read_pid_file(self, name: str) -> dict[str, object] | None:
        try:
            data = json.loads(self.pid_file(name).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and isinstance(data.get("pid"), int) else None

    def _alive(self, name: str, pid: int) -> bool:
        """Like :func:`pid_alive`, but through our Popen when we started it (keeps its exit status)."""
        proc = self._procs.get(name)
        if proc is not None and proc.pid == pid:
            return proc.poll() is None
        return pid_alive(pid)

    def _is_ours(self, name: str, pid: int) -> bool:
        """The pid is alive and still runs ``name`` with our configuration file (guards against pid reuse)."""
        if not self._alive(name, pid):
            return False
        argv = _cmdline(pid)
        if not argv:
            return False
        return os.path.basename(argv[0]) == name and str(self.config_path(name)) in argv

    def pid(self, name: str) -> int | None:
        """The pid of our running ``name``, else None."""
        info = self._read_pid_file(name)
        if info is None:
            return None
        pid = int(info["pid"])  # type: ignore[call-overload]  # JSON; a bad pid file raises
        return pid if self._is_ours(name, pid) else None

    def _recorded_port(self, name: str) -> int:
        info = self._read_pid_file(name)
        default = int(getattr(self, self._spec(name).port_attr))
        if info is None:
            return default
        try:
            return int(info.get("port", default))  # type: ignore[call-overload]  # JSON, checked below
        except (TypeError, ValueError):
            return default

    # ---- start
    def _write_config(self, name: str) -> None:
        d = self.service_dir(name)
        d.mkdir(parents=True, exist_ok=True)
        if name == "mosquitto":
            data_dir = d / "data"
            data_dir.mkdir(exist_ok=True)
            try:
                user = getpass.getuser()
            except Exception:  # no passwd entry: the option is ignored for non-root anyway
                user = "root" if os.geteuid() == 0 else "nobody"
            text = MOSQUITTO_CONF.format(port=self.mqtt_port, host=self.host,
                                         user=user, data_dir=data_dir, persistence=self.persistence.conf())
        else:
            for sub in ("meta", "data", "wal"):
                (d / sub).mkdir(exist_ok=True)
            rpc = self.influx_rpc_port or free_port(self.host)
            self._rpc_port_in_use = rpc
            text = INFLUXDB_CONF.format(host=self.host, port=self.influx_port, rpc_port=rpc, root=d)
        self.config_path(name).write_text(text)

    def _start(self, name: str, timeout: float) -> bool:
        """Start ``name`` unless it already runs; wait until it answers. Return False when it already ran."""
        port = int(getattr(self, self._spec(name).port_attr))
        running = self.pid(name)
        if running is not None:
            recorded = self._recorded_port(name)
            setattr(self, self._spec(name).port_attr, recorded)
            self._wait_answering(name, running, recorded, timeout)
            return False
        binary = find_binary(name)
        if port_in_use(port, self.host):
            raise ConfigError(f"{self.host}:{port} is already in use by a process that this stack did not "
                              f"start (pid files in {self.root}): stop it or choose another port for {name}")
        self._write_config(name)
        log = self.log_path(name)
        config = str(self.config_path(name))
        argv = [binary, "-c", config] if name == "mosquitto" else [binary, "run", "-config", config]
        env = {k: v for k, v in os.environ.items() if not k.startswith("INFLUXDB_")}  # they override the file
        with open(log, "ab") as logf:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
            logf.write(f"--- {stamp} smartpark stack: starting {' '.join(argv)}\n".encode())
            logf.flush()
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                    cwd=self.service_dir(name), env=env, start_new_session=True,
                                    close_fds=True)
        self._procs[name] = proc
        info: dict[str, object] = {"pid": proc.pid, "port": port, "binary": binary, "config": config,
                                   "started": time.time()}
        if name == "influxd":
            info["rpc_port"] = self._rpc_port_in_use
        tmp = self.pid_file(name).with_suffix(".pid.tmp")
        tmp.write_text(json.dumps(info) + "\n")
        tmp.replace(self.pid_file(name))
        try:
            self._wait_answering(name, proc.pid, port, timeout)
        except BaseException:
            self._stop(name, kill=True)
            raise
        return True

    def _wait_answering(self, name: str, pid: int, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            if self._answers(name, port):
                return
            if not self._alive(name, pid):
                proc = self._procs.get(name)
                code = proc.poll() if proc is not None else None
                how = f" with status {code}" if code is not None else ""
                raise StackError(f"{name} exited{how} before answering on {self.host}:{port}; "
                                 f"last lines of {self.log_path(name)}:\n{_tail(self.log_path(name))}")
            if time.monotonic() >= deadline:
                raise StackError(f"{name} (pid {pid}) did not answer on {self.host}:{port} within "
                                 f"{timeout:g} s; last lines of {self.log_path(name)}:\n"
                                 f"{_tail(self.log_path(name))}")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)

    # ---- stop
    def _stop(self, name: str, kill: bool = False, timeout: float = 15.0) -> bool:
        """Stop our ``name``: SIGTERM (or SIGKILL when ``kill``), wait, SIGKILL after ``timeout``.

        Return whether a process was stopped. Only the pid of our pid file is signalled, and only when
        it still runs our binary with our configuration file.
        """
        pid = self.pid(name)
        stopped = False
        if pid is not None:
            sig = signal.SIGKILL if kill else signal.SIGTERM
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            if not self._wait_gone(name, pid, timeout):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                if not self._wait_gone(name, pid, 5.0):
                    raise StackError(f"{name} (pid {pid}) does not die, even after SIGKILL")
            stopped = True
        self._procs.pop(name, None)
        with contextlib.suppress(FileNotFoundError):
            self.pid_file(name).unlink()
        return stopped

    def _wait_gone(self, name: str, pid: int, timeout: float) -> bool:
        proc = self._procs.get(name)
        if proc is not None and proc.pid == pid:
            try:
                proc.wait(timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout
        while self._alive(name, pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    # ---- public API
    def start_mosquitto(self, timeout: float = 30) -> bool:
        return self._start("mosquitto", timeout)

    def stop_mosquitto(self, kill: bool = False) -> bool:
        return self._stop("mosquitto", kill=kill)

    def start_influxd(self, timeout: float = 30) -> bool:
        return self._start("influxd", timeout)

    def stop_influxd(self, kill: bool = False) -> bool:
        return self._stop("influxd", kill=kill)

    def restart_mosquitto(self, kill: bool = False, timeout: float = 30) -> None:
        self.stop_mosquitto(kill=kill)
        self.start_mosquitto(timeout)

    def restart_influxd(self, kill: bool = False, timeout: float = 30) -> None:
        self.stop_influxd(kill=kill)
        self.start_influxd(timeout)

    def up(self, timeout: float = 30) -> dict[str, bool]:
        """Start both services (each unless already running); return ``{name: started_now}``.

        Both binaries are looked up before anything starts, so a missing one changes nothing.
        """
        for spec in self.SPECS:
            if self.pid(spec.name) is None:
                find_binary(spec.name)
        started: dict[str, bool] = {}
        try:
            for spec in self.SPECS:
                started[spec.name] = self._start(spec.name, timeout)
        except BaseException:
            for name, now in started.items():  # leave nothing half up that we started just now
                if now:
                    self._stop(name)
            raise
        return started

    def down(self) -> dict[str, bool]:
        """Stop both services; return ``{name: stopped_now}`` (False: was not running)."""
        return {spec.name: self._stop(spec.name) for spec in reversed(self.SPECS)}

    def status(self) -> dict[str, Service]:
        out: dict[str, Service] = {}
        for spec in self.SPECS:
            pid = self.pid(spec.name)
            port = self._recorded_port(spec.name) if pid is not None else int(getattr(self, spec.port_attr))
            answering = self._answers(spec.name, port) if pid is not None else False
            out[spec.name] = Service(spec.name, pid, port, pid is not None, answering,
                                     self.log_path(spec.name), f"{spec.scheme}://{self.host}:{port}")
        return out

    def pids(self) -> list[int]:
        """Pids of our running services (for finalizers)."""
        return [p for p in (self.pid(s.name) for s in self.SPECS) if p is not None]

    def __enter__(self) -> Stack:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()


# --------------------------------------------------------------------------------------------------
# command line


def _loopback_port(url: str, default: int) -> int:
    """The port of ``url`` when it points at this machine's loopback, else ``default``."""
    try:
        parts = urlsplit(url)
        if parts.hostname in ("127.0.0.1", "localhost", "::1") and parts.port:
            return int(parts.port)
    except ValueError:
        pass
    return default


def _stack_from(args: argparse.Namespace, settings: Settings) -> Stack:
    mqtt_port = args.mqtt_port or _loopback_port(settings.mqtt_url, DEFAULT_MQTT_PORT)
    influx_port = args.influx_port or _loopback_port(settings.influx_url, DEFAULT_INFLUX_PORT)
    for flag, port in (("--mqtt-port", mqtt_port), ("--influx-port", influx_port),
                       ("--influx-rpc-port", args.influx_rpc_port)):
        if port is not None and not 0 < port < 65536:
            raise ConfigError(f"{flag} must be between 1 and 65535, got {port}")
    return Stack(settings.state_path / "stack", mqtt_port=mqtt_port, influx_port=influx_port,
                 influx_rpc_port=args.influx_rpc_port)


def _cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    stack = _stack_from(args, settings)
    try:
        started = stack.up(timeout=args.timeout)
    except StackError as exc:
        sys.stderr.write(f"smartpark: {exc}\n")
        return 1
    for name, svc in stack.status().items():
        what = "started" if started.get(name) else "already running, nothing to do"
        print(f"{name}: {what} (pid {svc.pid}, {svc.url})")
    print(f"export SMARTPARK_MQTT_URL={stack.mqtt_url} SMARTPARK_INFLUX_URL={stack.influx_url}")
    return 0


def _cmd_down(args: argparse.Namespace, settings: Settings) -> int:
    stack = _stack_from(args, settings)
    before = {name: svc.pid for name, svc in stack.status().items()}
    try:
        stopped = stack.down()
    except StackError as exc:
        sys.stderr.write(f"smartpark: {exc}\n")
        return 1
    for name in before:
        print(f"{name}: stopped (pid {before[name]})" if stopped.get(name) else f"{name}: not running")
    return 0


def _cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    stack = _stack_from(args, settings)
    for name, svc in stack.status().items():
        state = "up" if svc.up else ("starting/not answering" if svc.running else "down")
        pid = str(svc.pid) if svc.pid is not None else "-"
        print(f"{name:<10} {state:<8} pid {pid:<8} port {svc.port:<6} {svc.url}")
    if args.json:
        print(json.dumps({n: {**asdict(s), "log_path": str(s.log_path), "up": s.up}
                          for n, s in stack.status().items()}))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("stack", help="the local Mosquitto and InfluxDB (stack up | down | status)",
                              description="Run Mosquitto and InfluxDB from the system binaries on 127.0.0.1, "
                                          "with configuration and data under <state dir>/stack/.")
    sub = p.add_subparsers(dest="stack_command", metavar="ACTION")
    sub.required = True
    actions: list[tuple[str, str, Callable[[argparse.Namespace, Settings], int]]] = [
        ("up", "start both services unless already running; wait until they answer", _cmd_up),
        ("down", "stop the services this stack started (by its pid files), nothing else", _cmd_down),
        ("status", "print each service, pid, port, up/down", _cmd_status),
    ]
    for name, help_text, func in actions:
        sp = sub.add_parser(name, help=help_text, description=help_text)
        sp.add_argument("--mqtt-port", type=int, default=None,
                        help="Mosquitto port (default: the port of --mqtt-url when it is on 127.0.0.1, "
                             "else 1883)")
        sp.add_argument("--influx-port", type=int, default=None,
                        help="InfluxDB HTTP port (default: the port of --influx-url when it is on 127.0.0.1, "
                             "else 8086)")
        sp.add_argument("--influx-rpc-port", type=int, default=None,
                        help="InfluxDB RPC/backup port (default: a free loopback port)")
        if name == "up":
            sp.add_argument("--timeout", type=float, default=30.0,
                            help="seconds to wait for each service to answer (default 30)")
        if name == "status":
            sp.add_argument("--json", action="store_true", help="also print the status as one JSON line")
        sp.set_defaults(func=func)
