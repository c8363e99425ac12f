"""MQTT brokers other than Mosquitto, each a real server process on a free loopback port, for the
interoperability tests: amqtt (PyPI, MQTT 3.1.1), aedes (npm, MQTT 3.1.1; installed by ``make test`` into
tests/brokers/node_modules) and RabbitMQ 3.10 with its MQTT plugin (Debian ``rabbitmq-server``, run as a
plain process with its own directories, node name and ports, never as the system service).

``with AmqttBroker(tmp_path) as b: b.url``; ``available()`` says why a broker cannot run here (None when
it can). Every process is stopped on exit, and killed by pid at interpreter exit if that did not happen.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Self

from .stack import free_port

# the aedes broker's npm project lives beside the interoperability tests (``make test`` installs it there)
AEDES_DIR = Path(__file__).resolve().parent.parent / "tests" / "brokers"
RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
_PIDS: set[int] = set()


@atexit.register
def _kill_strays() -> None:
    for pid in _PIDS:
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)


class ExternalBroker:
    """One broker process (its own process group, so that helpers it forks stop with it)."""

    name = "broker"
    start_timeout = 15.0

    def __init__(self, root: Path) -> None:
        self.root = root / self.name
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log_path = self.root / "broker.log"
        self._procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @classmethod
    def available(cls) -> str | None:
        return None

    def argv(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def _spawn(self, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=self.env(), cwd=self.root,
                                    start_new_session=True)
        _PIDS.add(proc.pid)
        self._procs.append(proc)
        return proc

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._spawn(self.argv(), self.log_path)
        deadline = time.monotonic() + self.start_timeout
        while not _accepts(self.port):
            if any(p.poll() is not None for p in self._procs) or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not start within {self.start_timeout:g} s: "
                                   f"{self.log_path.read_text(errors='replace')[-2000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        for proc in reversed(self._procs):
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(OSError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)
            _PIDS.discard(proc.pid)
        self._procs.clear()


def _accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


class AmqttBroker(ExternalBroker):
    """amqtt 0.12: an MQTT 3.1.1 broker in Python; an MQTT 5 CONNECT gets no answer at all."""

    name = "amqtt"

    def argv(self) -> list[str]:
        config = self.root / "amqtt.yaml"
        config.write_text(f"listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:{self.port}\nplugins:\n"
                          "  amqtt.plugins.authentication.AnonymousAuthPlugin:\n    allow_anonymous: true\n")
        return [str(Path(sys.executable).with_name("amqtt")), "-c", str(config)]


class AedesBroker(ExternalBroker):
    """aedes 1.x on Node.js (tests/brokers/aedes_broker.mjs): MQTT 3.1.1, refuses 5 with CONNACK 0x01."""

    name = "aedes"

    @classmethod
    def available(cls) -> str | None:
        if shutil.which("node") is None:
            return "node is not installed"
        if not (AEDES_DIR / "node_modules" / "aedes").is_dir():
            return "aedes is not installed (make test runs npm ci in tests/brokers)"
        return None

    def argv(self) -> list[str]:
        return ["node", str(AEDES_DIR / "aedes_broker.mjs"), str(self.port)]


class RabbitMqBroker(ExternalBroker):
    """RabbitMQ 3.10 with rabbitmq_mqtt: MQTT 3.1.1 only; an MQTT 5 CONNECT is answered by a close. Its own
    epmd on a free port (started here, so that it stops with the test), node name, data and log dirs."""

    name = "rabbitmq"
    start_timeout = 40.0

    def __init__(self, root: Path, *, prefetch: int | None = None) -> None:
        super().__init__(root)
        self.amqp_port, self.dist_port, self.epmd_port = free_port(), free_port(), free_port()
        self.prefetch = prefetch

    @classmethod
    def available(cls) -> str | None:
        if not RABBITMQ_SERVER.exists() or shutil.which("epmd") is None:
            return "rabbitmq-server (Debian package) is not installed"
        return None

    def env(self) -> dict[str, str]:
        r = self.root
        env = dict(os.environ)
        env.update(HOME=str(r / "home"), RABBITMQ_MNESIA_BASE=str(r / "mnesia"), RABBITMQ_LOG_BASE=str(r / "log"),
                   RABBITMQ_ENABLED_PLUGINS_FILE=str(r / "enabled_plugins"),
                   RABBITMQ_CONFIG_FILE=str(r / "rabbitmq.conf"), RABBITMQ_CONF_ENV_FILE=str(r / "rabbitmq-env.conf"),
                   RABBITMQ_ADVANCED_CONFIG_FILE=str(r / "advanced.config"), RABBITMQ_PID_FILE=str(r / "pid"),
                   RABBITMQ_PLUGINS_EXPAND_DIR=str(r / "plugins"), RABBITMQ_NODENAME=f"smartpark{self.port}@localhost",
                   RABBITMQ_DIST_PORT=str(self.dist_port), ERL_EPMD_PORT=str(self.epmd_port),
                   ERL_EPMD_ADDRESS="127.0.0.1")
        return env

    def argv(self) -> list[str]:
        r = self.root
        (r / "home").mkdir(exist_ok=True)
        (r / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
        conf = [f"listeners.tcp.default = 127.0.0.1:{self.amqp_port}",
                f"mqtt.listeners.tcp.default = 127.0.0.1:{self.port}", "mqtt.allow_anonymous = true",
                "loopback_users = none"]
        if self.prefetch is not None:
            conf.append(f"mqtt.prefetch = {self.prefetch}")
        (r / "rabbitmq.conf").write_text("\n".join(conf) + "\n")
        epmd = shutil.which("epmd")
        assert epmd is not None
        self._spawn([epmd, "-port", str(self.epmd_port), "-address", "127.0.0.1"], r / "epmd.log")
        return [str(RABBITMQ_SERVER)]


class MosquittoWindow(ExternalBroker):
    """Mosquitto with a small outgoing in-flight window (``max_inflight_messages``, which bounds what it sends
    an MQTT 3.1.1 client unacked, like RabbitMQ's ``mqtt.prefetch``), no persistence."""

    name = "mosquitto-window"

    def __init__(self, root: Path, *, window: int = 10) -> None:
        super().__init__(root)
        self.window = window

    def argv(self) -> list[str]:
        conf = self.root / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\nmax_inflight_messages {self.window}\n"
                        "max_queued_messages 10000000\nmax_queued_bytes 0\nset_tcp_nodelay true\n")
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        return [binary, "-c", str(conf)]
