"""docker-compose.yml: valid Compose, only real smartpark commands, no default passwords, and a Mosquitto
password file + ACL that do what they say (checked on a real mosquitto with the repository's files)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import paho.mqtt.client as mqtt
import pytest
import yaml

from cli import build_parser
from devstack import SMARTPARK, find_binary, free_port, port_in_use

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
MOSQUITTO_DIR = ROOT / "docker" / "mosquitto"
REQUIRED_VAR = re.compile(r"\$\{([A-Z0-9_]+):\?[^}]*\}")
ANY_VAR = re.compile(r"\$\{([A-Z0-9_]+)(?::?[-?+][^}]*)?\}")
SECRET = re.compile(r"PASSWORD|TOKEN|SECRET")


def _schema() -> dict[str, Any]:
    """The Compose Specification schema: the repository's copy, else the shared one beside the clone."""
    for path in (ROOT / "tests" / "data" / "compose-spec.json",
                 ROOT.parent / "shared" / "schemas" / "compose-spec.json"):
        if path.exists():
            return json.loads(path.read_text(encoding="utf-8"))
    pytest.fail("compose-spec.json not found in tests/data nor ../shared/schemas")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def _smartpark_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose["services"].items()
            if str(svc.get("image", "")).startswith("smartpark:")}


class TestComposeFile:
    def test_validates_against_the_compose_specification(self, compose: dict[str, Any]) -> None:
        """The file (with its x- anchors merged by YAML) is valid against the Compose Specification schema."""
        schema = _schema()
        jsonschema.Draft7Validator.check_schema(schema)
        jsonschema.Draft7Validator(schema).validate(compose)

    def test_the_expected_services_with_health_checks(self, compose: dict[str, Any]) -> None:
        """Broker, database, Grafana, collector and alert engine run by default, the simulator only in 'sim'."""
        services = compose["services"]
        assert {"mosquitto", "influxdb", "grafana", "collector", "alerts", "simulator"} <= set(services)
        assert services["simulator"]["profiles"] == ["sim"]
        assert all("profiles" not in services[s] for s in ("mosquitto", "influxdb", "grafana", "collector", "alerts"))
        for name in ("mosquitto", "influxdb", "grafana", "collector", "alerts"):
            assert services[name]["healthcheck"]["test"], name
        assert services["influxdb"]["image"].startswith("influxdb:1.11")
        assert services["influxdb"]["environment"]["INFLUXDB_HTTP_AUTH_ENABLED"] == "true"

    def test_every_smartpark_command_exists_in_the_cli(self, compose: dict[str, Any]) -> None:
        """Each smartpark container's command parses with the real CLI parser (entrypoint: smartpark)."""
        services = _smartpark_services(compose)
        assert {"collector", "alerts", "simulator"} <= set(services)
        parser = build_parser()
        for name, svc in services.items():
            try:
                args = parser.parse_args(svc["command"])
            except SystemExit as exc:
                pytest.fail(f"service {name}: 'smartpark {' '.join(svc['command'])}' does not parse ({exc})")
            assert callable(args.func), name

    def test_no_default_passwords(self, compose: dict[str, Any]) -> None:
        """Every secret comes from a required variable (${VAR:?...}); none has a default or a literal value."""
        text = COMPOSE.read_text(encoding="utf-8")
        for m in ANY_VAR.finditer(text):
            if SECRET.search(m.group(1)) and m.group(1) != "MQTT_SIMULATOR_PASSWORD":
                assert m.group(0).startswith("${" + m.group(1) + ":?"), f"{m.group(0)} may fall back to a default"
        for name, svc in compose["services"].items():
            env = svc.get("environment") or {}
            for key, value in env.items():
                if SECRET.search(key):
                    assert value == "" or "${" in str(value), f"{name}.{key} has a literal secret"
        for svc in compose["services"].values():
            for key, value in (svc.get("environment") or {}).items():
                if key.endswith(("_URL",)) and "@" in str(value):
                    assert re.search(r":\$\{[A-Z_]+:\?", str(value)), f"{key} embeds a password that is not required"

    def test_env_example_lists_every_variable_without_values_for_secrets(self) -> None:
        """.env.example names every variable the compose file needs, with the secrets left empty."""
        text = COMPOSE.read_text(encoding="utf-8")
        example = dict(line.split("=", 1) for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
                       if line and not line.startswith("#"))
        for var in {m.group(1) for m in ANY_VAR.finditer(text)}:
            assert var in example, f"{var} is missing from .env.example"
        for var, value in example.items():
            if SECRET.search(var):
                assert value == "", f".env.example gives {var} a value"

    def test_mounted_files_exist(self, compose: dict[str, Any]) -> None:
        """Every bind mount points at a file or directory of the repository (provisioning, generated JSON)."""
        for name, svc in compose["services"].items():
            for vol in svc.get("volumes", []):
                source = vol.split(":", 1)[0]
                if source.startswith("./"):
                    assert (ROOT / source).exists(), f"{name}: {source} does not exist"
        assert (ROOT / "dashboards" / "generated" / "smartpark-overview.json").exists()

    def test_grafana_gets_the_provisioning_and_the_admin_password_from_the_environment(
            self, compose: dict[str, Any]) -> None:
        """Grafana mounts the provisioning and the generated JSON; its admin password is a required variable."""
        grafana = compose["services"]["grafana"]
        assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")
        targets = {v.split(":")[1] for v in grafana["volumes"]}
        assert {"/etc/grafana/provisioning/datasources", "/etc/grafana/provisioning/dashboards"} <= targets
        ds = yaml.safe_load((ROOT / "dashboards/provisioning/datasources/influxdb.yaml").read_text())
        source = ds["datasources"][0]
        assert source["uid"] == "smartpark-influxdb" and source["type"] == "influxdb"
        assert source["jsonData"]["timeInterval"] == "10s"
        for var in re.findall(r"\$\{([A-Z_]+)\}", json.dumps(ds)):
            assert var in grafana["environment"], f"the data source needs {var} in Grafana's environment"
        provider = yaml.safe_load((ROOT / "dashboards/provisioning/dashboards/smartpark.yaml").read_text())
        path = provider["providers"][0]["options"]["path"]
        assert f"./dashboards/generated:{path}:ro" in grafana["volumes"], "the provider must read the generated JSON"
        home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
        assert home.startswith(path + "/") and (ROOT / "dashboards/generated" / Path(home).name).exists()


_INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)(?:(:?[-?+])([^}]*))?\}")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable interpolation: ${VAR}, ${VAR:-default}, ${VAR:?error}, ${VAR:+replacement}
    (and their forms without ':', which test only whether VAR is set), then $$ -> $."""

    def sub(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2) or "", m.group(3) or ""
        value = env.get(name)
        present = value is not None and (value != "" or not op.startswith(":"))
        if op.endswith("+"):
            return arg if present else ""
        if op.endswith("?") and not present:
            raise KeyError(f"{name}: {arg}")
        return value if present and value is not None else (arg if op.endswith("-") else "")

    return _INTERPOLATION.sub(sub, text).replace("$$", "$")


def _resolved(tls: str) -> dict[str, Any]:
    """The compose file as `docker compose config` would resolve it with .env.example, secrets filled in."""
    env = dict(line.split("=", 1) for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
               if line and not line.startswith("#"))
    env = {k: (f"secret-{k.lower()}" if SECRET.search(k) else v) for k, v in env.items()}
    env["MQTT_DEVICE_PASSWORDS"] = "wwtp:pw1 hw_center:pw2"
    env["SMARTPARK_TLS"] = tls

    def walk(node: Any) -> Any:  # Compose interpolates the parsed file's strings, not the YAML text
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return interpolate(node, env) if isinstance(node, str) else node

    return walk(yaml.safe_load(COMPOSE.read_text(encoding="utf-8")))


class TestComposeTls:
    """TLS is one setting of .env (SMARTPARK_TLS): MQTT over TLS on 8883, HTTPS for the console/API and
    Grafana, certificate paths from the environment (TLS_DIR, TLS_CERT_FILE, TLS_KEY_FILE)."""

    @pytest.mark.parametrize("tls", ["", "on"])
    def test_both_resolved_forms_are_valid_compose(self, tls: str) -> None:
        """With TLS off and on, the interpolated file validates against the Compose Specification."""
        jsonschema.Draft7Validator(_schema()).validate(_resolved(tls))

    def test_off_keeps_plain_mqtt_and_http(self) -> None:
        """Empty SMARTPARK_TLS: no TLS listener, http:// for the engine and Grafana."""
        svc = _resolved("")["services"]
        assert svc["mosquitto"]["environment"]["MQTT_TLS"] == ""
        assert svc["alerts"]["environment"]["SMARTPARK_API_URL"] == "http://0.0.0.0:8765"
        assert svc["grafana"]["environment"]["GF_SERVER_PROTOCOL"] == "http"
        assert "'http://127.0.0.1:8765/alarms'" in " ".join(svc["alerts"]["healthcheck"]["test"])

    def test_on_serves_tls_everywhere_operators_and_devices_connect(self) -> None:
        """SMARTPARK_TLS=on: mosquitto's entrypoint adds the 8883 listener, the engine serves https, Grafana
        https, each from the same certificate and key under the mounted TLS_DIR; health checks follow."""
        svc = _resolved("on")["services"]
        mq, al, gf = svc["mosquitto"]["environment"], svc["alerts"]["environment"], svc["grafana"]["environment"]
        assert mq["MQTT_TLS"] == "on"
        assert mq["MQTT_TLS_CERTFILE"] == al["SMARTPARK_TLS_CERT"] == gf["GF_SERVER_CERT_FILE"] == "/tls/server.crt"
        assert mq["MQTT_TLS_KEYFILE"] == al["SMARTPARK_TLS_KEY"] == gf["GF_SERVER_CERT_KEY"] == "/tls/server.key"
        assert al["SMARTPARK_API_URL"] == "https://0.0.0.0:8765" and gf["GF_SERVER_PROTOCOL"] == "https"
        assert "127.0.0.1:8883:8883" in svc["mosquitto"]["ports"]
        for name in ("mosquitto", "alerts", "grafana"):
            assert "./docker/tls:/tls:ro" in svc[name]["volumes"], name
        assert "'https://127.0.0.1:8765/alarms'" in " ".join(svc["alerts"]["healthcheck"]["test"])
        assert "https://127.0.0.1:3000/api/health" in svc["grafana"]["healthcheck"]["test"][1]
        assert (ROOT / "docker" / "tls").is_dir()  # the default TLS_DIR exists, so the mount never fails
        # the engine's options exist in the CLI: --tls-cert / --tls-key with these variables
        from smartpark.config import OPTIONS

        assert OPTIONS["tls_cert"][0] == "SMARTPARK_TLS_CERT" and OPTIONS["tls_key"][0] == "SMARTPARK_TLS_KEY"


def test_the_compose_broker_saves_as_the_local_stack_does() -> None:
    """docker/mosquitto/mosquitto.conf has the measured persistence settings of devstack.PERSISTENCE,
    whose behaviour under SIGKILL tests/test_stack.py::TestBrokerDurability states."""
    from devstack import PERSISTENCE

    conf = (MOSQUITTO_DIR / "mosquitto.conf").read_text(encoding="utf-8").splitlines()
    for line in PERSISTENCE.conf().splitlines():
        assert line in conf, line
    assert not [c for c in conf if c.startswith("autosave") and c not in PERSISTENCE.conf().splitlines()]


# --------------------------------------------------------------------------------------------------
# the broker's password file and ACL, on a real mosquitto


class _Watcher:
    """A subscriber as the services' user, collecting every message under park/#."""

    def __init__(self, port: int, password: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.cond = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"watch-{uuid.uuid4().hex[:8]}")
        self.client.username_pw_set("smartpark", password)
        subscribed = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("park/#", qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(10), "the services' user could not subscribe to park/#"

    def _on_message(self, c: Any, u: Any, msg: mqtt.MQTTMessage) -> None:
        with self.cond:
            self.messages.append((msg.topic, msg.payload))
            self.cond.notify_all()

    def wait_for(self, topic: str, timeout: float = 10) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: any(t == topic for t, _ in self.messages), timeout), \
                f"{topic} never arrived; got {[t for t, _ in self.messages]}"

    def topics(self) -> set[str]:
        with self.cond:
            return {t for t, _ in self.messages}

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def __enter__(self) -> _Watcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


PASSWORDS = {"smartpark": "svc-" + uuid.uuid4().hex, "simulator": "sim-" + uuid.uuid4().hex,
             "wwtp": "dev-" + uuid.uuid4().hex, "hw_center": "dev-" + uuid.uuid4().hex}


def make_certificates(directory: Path) -> dict[str, Path]:
    """A CA and a server certificate it signed for 127.0.0.1 / localhost (openssl, PEM)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {name: directory / name for name in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt")}

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(paths["ca.key"]), "-out",
            str(paths["ca.crt"]), "-days", "2", "-subj", "/CN=smartpark test CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(paths["server.key"]), "-out",
            str(paths["server.csr"]), "-subj", "/CN=localhost")
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", str(paths["server.csr"]), "-CA", str(paths["ca.crt"]), "-CAkey",
            str(paths["ca.key"]), "-CAcreateserial", "-out", str(paths["server.crt"]), "-days", "2",
            "-extfile", str(ext))
    return paths


@dataclass(frozen=True)
class SecuredBroker:
    port: int
    tls_port: int
    ca: Path


@pytest.fixture(scope="module")
def secured_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredBroker]:
    """mosquitto run by docker/mosquitto/entrypoint.sh with the repository's mosquitto.conf and acl, and the
    TLS listener that MQTT_TLS adds."""
    find_binary("mosquitto")
    if not shutil.which("mosquitto_passwd"):
        pytest.fail("mosquitto_passwd is missing (Debian package mosquitto)")
    tmp = tmp_path_factory.mktemp("secured_broker")
    certs = make_certificates(tmp / "tls")
    port = free_port()
    tls_port = free_port()
    conf = (MOSQUITTO_DIR / "mosquitto.conf").read_text(encoding="utf-8")
    conf = (conf.replace("/mosquitto/auth/passwd", str(tmp / "auth" / "passwd"))
                .replace("/mosquitto/config/acl", str(MOSQUITTO_DIR / "acl"))
                .replace("/mosquitto/data/", f"{tmp}/data/")
                .replace("listener 1883", f"listener {port} 127.0.0.1")
                .replace("log_dest stdout", "log_dest stderr"))
    conf += "\n# test only: stay the user that owns the temporary directory\nuser " + _user() + "\n"
    (tmp / "data").mkdir()
    (tmp / "mosquitto.conf").write_text(conf, encoding="utf-8")
    env = {**os.environ, "MOSQUITTO_AUTH_DIR": str(tmp / "auth"), "MOSQUITTO_CONF": str(tmp / "mosquitto.conf"),
           "MQTT_SERVICE_PASSWORD": PASSWORDS["smartpark"], "MQTT_SIMULATOR_PASSWORD": PASSWORDS["simulator"],
           "MQTT_DEVICE_PASSWORDS": f"wwtp:{PASSWORDS['wwtp']} hw_center:{PASSWORDS['hw_center']}",
           "MQTT_TLS": "on", "MQTT_TLS_LISTENER": f"{tls_port} 127.0.0.1",
           "MQTT_TLS_CERTFILE": str(certs["server.crt"]), "MQTT_TLS_KEYFILE": str(certs["server.key"]),
           "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin"}
    log = open(tmp / "mosquitto.log", "wb")  # closed in the finalizer
    proc = subprocess.Popen(["/bin/sh", str(MOSQUITTO_DIR / "entrypoint.sh")], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while not (port_in_use(port) and port_in_use(tls_port)):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mosquitto did not start: {(tmp / 'mosquitto.log').read_text(errors='replace')}")
            time.sleep(0.05)
        assert oct((tmp / "auth" / "passwd").stat().st_mode & 0o777) == "0o600"
        yield SecuredBroker(port, tls_port, certs["ca.crt"])
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _user() -> str:
    import getpass

    return getpass.getuser()


def _publish(port: int, user: str, topic: str, payload: str = '{"value": 1.0}') -> None:
    """mosquitto_pub with QoS 1: returns once the broker has handled the message (allowed or not)."""
    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-u", user, "-P", PASSWORDS[user],
                    "-q", "1", "-t", topic, "-m", payload, "-i", f"pub-{uuid.uuid4().hex[:8]}"],
                   check=True, timeout=15, capture_output=True)


def _publish_each(port: int, user: str, *topics: str) -> None:
    """:func:`_publish` of a reading to each topic in turn."""
    for topic in topics:
        _publish(port, user, topic)


def _connect_rc(port: int, user: str | None, password: str | None) -> int:
    cmd = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", "park/x", "-m", "1"]
    if user:
        cmd += ["-u", user, "-P", password or ""]
    return subprocess.run(cmd, timeout=15, capture_output=True).returncode


class TestBrokerAcl:
    def test_anonymous_and_wrong_passwords_are_refused(self, secured_broker: SecuredBroker) -> None:
        """allow_anonymous false and the generated password file: no credentials, no connection."""
        assert _connect_rc(secured_broker.port, None, None) != 0
        assert _connect_rc(secured_broker.port, "wwtp", "not-the-password") != 0
        assert _connect_rc(secured_broker.port, "wwtp", PASSWORDS["wwtp"]) == 0

    def test_site_devices_publish_only_under_their_site(self, secured_broker: SecuredBroker) -> None:
        """A wwtp device's reading reaches the services; its message for another site or for the alarm
        tree does not."""
        with _Watcher(secured_broker.port, PASSWORDS["smartpark"]) as watcher:
            _publish_each(secured_broker.port, "wwtp", "park/hw_center/scc/temp", "park/alarms/wwtp/effluent/cod/hh",
                          "park/_sys/collector/x")
            _publish(secured_broker.port, "hw_center", "park/hw_center/scc/temp")
            _publish_each(secured_broker.port, "wwtp", "park/wwtp/effluent",  # a snapshot
                          "park/wwtp/effluent/cod")
            watcher.wait_for("park/wwtp/effluent/cod")
            watcher.wait_for("park/hw_center/scc/temp")
            got = [t for t, _ in watcher.messages]
            assert got.count("park/hw_center/scc/temp") == 1  # the hw_center device's, not wwtp's
            assert "park/wwtp/effluent" in got
            assert not {"park/alarms/wwtp/effluent/cod/hh", "park/_sys/collector/x"} & set(got)

    def test_services_write_alarms_and_status_but_no_readings(self, secured_broker: SecuredBroker) -> None:
        """The services' user publishes alarm state and service status, never readings."""
        with _Watcher(secured_broker.port, PASSWORDS["smartpark"]) as watcher:
            _publish(secured_broker.port, "smartpark", "park/wwtp/effluent/cod")
            _publish(secured_broker.port, "smartpark", "park/_sys/collector/c1", '{"status": "online"}')
            _publish(secured_broker.port, "smartpark", "park/alarms/wwtp/effluent/cod/hh", "{}")
            watcher.wait_for("park/alarms/wwtp/effluent/cod/hh")
            assert "park/_sys/collector/c1" in watcher.topics()
            assert "park/wwtp/effluent/cod" not in watcher.topics()

    def test_simulator_publishes_readings_of_every_site_and_nothing_else(self, secured_broker: SecuredBroker) -> None:
        """The simulator's user publishes readings of any site but neither alarm state nor service status."""
        with _Watcher(secured_broker.port, PASSWORDS["smartpark"]) as watcher:
            _publish_each(secured_broker.port, "simulator", "park/_sys/collector/c9",
                          "park/alarms/hw_center/scc/temp/ll", "park/wwtp/influent/flow", "park/energy_hub/gt1/power")
            watcher.wait_for("park/energy_hub/gt1/power")
            watcher.wait_for("park/wwtp/influent/flow")
            assert not {"park/_sys/collector/c9", "park/alarms/hw_center/scc/temp/ll"} & watcher.topics()


class TestBrokerTls:
    def test_devices_connect_over_tls_with_the_same_users_and_acl(self, secured_broker: SecuredBroker) -> None:
        """MQTT_TLS adds a listener with the certificate from the environment: a device that verifies the
        server against the CA publishes its site's readings over it, under the same ACL."""
        with _Watcher(secured_broker.port, PASSWORDS["smartpark"]) as watcher:
            base = ["mosquitto_pub", "-h", "localhost", "-p", str(secured_broker.tls_port), "--cafile",
                    str(secured_broker.ca), "-u", "wwtp", "-P", PASSWORDS["wwtp"], "-q", "1", "-m", "1"]
            for topic in ("park/alarms/wwtp/effluent/cod/hh", "park/wwtp/effluent/nh3_n"):
                subprocess.run([*base, "-t", topic], check=True, timeout=15, capture_output=True)
            watcher.wait_for("park/wwtp/effluent/nh3_n")
            assert "park/alarms/wwtp/effluent/cod/hh" not in watcher.topics()

    def test_the_tls_listener_refuses_plain_mqtt_and_unverified_servers(self, secured_broker: SecuredBroker) -> None:
        """Plain MQTT to the TLS port, and TLS without the CA that signed the server, do not connect."""
        plain = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(secured_broker.tls_port), "-u", "wwtp", "-P",
                 PASSWORDS["wwtp"], "-t", "park/wwtp/effluent/cod", "-m", "1"]
        assert subprocess.run(plain, timeout=15, capture_output=True).returncode != 0
        other_ca = subprocess.run([*plain[:5], "--capath", "/nonexistent", *plain[5:]], timeout=15,
                                  capture_output=True)
        assert other_ca.returncode != 0

    def test_tls_without_readable_certificate_files_is_refused(self, tmp_path: Path) -> None:
        """MQTT_TLS with a missing key file: exit 2 naming the file, before the broker starts."""
        proc = _entrypoint(tmp_path, {"MQTT_DEVICE_PASSWORDS": "wwtp:pw", "MQTT_TLS": "on",
                                      "MQTT_TLS_CERTFILE": str(tmp_path / "none.crt"),
                                      "MQTT_TLS_KEYFILE": str(tmp_path / "none.key")})
        assert proc.returncode == 2, proc.stderr
        assert "none.crt is not a readable file" in proc.stderr


def _entrypoint(tmp: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The entrypoint with a configuration that does not exist: whatever it accepts, mosquitto then fails
    (exit 3: no configuration file), never exit 2."""
    full = {"PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin", "MQTT_SERVICE_PASSWORD": "svc",
            "MOSQUITTO_AUTH_DIR": str(tmp / "auth"), "MOSQUITTO_CONF": str(tmp / "absent.conf"), **env}
    return subprocess.run(["/bin/sh", str(MOSQUITTO_DIR / "entrypoint.sh")], env=full, capture_output=True,
                          text=True, timeout=30, cwd=tmp)


class TestEntrypointDeviceUsers:
    """A device user name is substituted into the ACL's park/%u/+ patterns: anything but a site id could reach
    the alarm tree (park/alarms/...), service status or another site, so it is refused before the broker runs."""

    @pytest.mark.parametrize("user", ["alarms/wwtp/effluent", "wwtp/effluent", "+", "#", "wwtp+", "ww#tp",
                                      "*", "Wwtp", "_sys", "1site", "wwtp-2", "wwtp.x", "w" * 33, "smartpark",
                                      "simulator", "alarms", "wwtp\u00e9"])
    def test_refuses_a_device_user_that_is_not_a_site_id(self, tmp_path: Path, user: str) -> None:
        """Exit 2 with the offending name on stderr; no password file is written."""
        (tmp_path / "somefile").write_text("")  # a name like '*' must not be expanded by the shell
        proc = _entrypoint(tmp_path, {"MQTT_DEVICE_PASSWORDS": f"wwtp:pw1 {user}:pw2"})
        assert proc.returncode == 2, (proc.returncode, proc.stderr)
        assert f"'{user}'" in proc.stderr
        assert not (tmp_path / "auth" / "passwd").exists()

    def test_refuses_a_site_listed_twice_and_an_entry_without_password(self, tmp_path: Path) -> None:
        """A second password for one site would silently replace the first; 'site' alone has none."""
        twice = _entrypoint(tmp_path, {"MQTT_DEVICE_PASSWORDS": "wwtp:pw1 wwtp:pw2"})
        assert twice.returncode == 2 and "appears twice" in twice.stderr
        bare = _entrypoint(tmp_path, {"MQTT_DEVICE_PASSWORDS": "wwtp"})
        assert bare.returncode == 2 and "no password" in bare.stderr

    def test_accepts_site_ids_up_to_32_characters(self, tmp_path: Path) -> None:
        """Valid site ids get a password entry (mosquitto itself then fails on the absent configuration: 3)."""
        proc = _entrypoint(tmp_path, {"MQTT_DEVICE_PASSWORDS": f"wwtp:pw1 {'h' * 32}:pw2 energy_hub_2:pw3"})
        assert proc.returncode == 3, proc.stderr
        users = {line.split(":")[0] for line in (tmp_path / "auth" / "passwd").read_text().splitlines()}
        assert users == {"smartpark", "wwtp", "h" * 32, "energy_hub_2"}


def test_the_image_gets_every_package_and_runs_smartpark() -> None:
    """docker/Dockerfile copies each package pyproject.toml installs, and its entrypoint is the CLI."""
    import tomllib

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text(encoding="utf-8")
    copied = set(re.findall(r"^COPY (\w+) \./\1$", dockerfile, re.M))
    assert packages <= copied, f"not copied into the image: {packages - copied}"
    assert re.search(r'^ENTRYPOINT \["smartpark"\]$', dockerfile, re.M)
    assert "USER smartpark" in dockerfile  # not root
    assert pyproject["project"]["scripts"]["smartpark"] == "cli:main"


class TestConsoleHttps:
    """The operator console and API over HTTPS: ``--api-url https://...`` with the certificate and key from
    SMARTPARK_TLS_CERT / SMARTPARK_TLS_KEY (what the compose file sets when SMARTPARK_TLS is on)."""

    def test_the_engine_serves_https_and_the_cli_calls_it(self, broker: Any, influx_db: Any, tmp_path: Path) -> None:
        """The API answers over TLS to a client that verifies the server, plain HTTP on that port gets no
        answer, `smartpark alerts list` works with the CA in SSL_CERT_FILE, SIGTERM exits 0."""
        import ssl
        import urllib.request

        certs = make_certificates(tmp_path / "tls")
        api = f"https://localhost:{free_port()}"
        env = {**os.environ, "SMARTPARK_MQTT_URL": broker.url, "SMARTPARK_INFLUX_URL": influx_db.url,
               "SMARTPARK_INFLUX_DB": influx_db.db, "SMARTPARK_STATE_DIR": str(tmp_path / "state"),
               "SMARTPARK_API_URL": api, "SMARTPARK_TLS_CERT": str(certs["server.crt"]),
               "SMARTPARK_TLS_KEY": str(certs["server.key"]), "SSL_CERT_FILE": str(certs["ca.crt"])}
        log = tmp_path / "alerts.log"
        proc = subprocess.Popen([*SMARTPARK, "alerts", "run"], env=env, cwd=ROOT,
                                stdout=log.open("wb"), stderr=subprocess.STDOUT)
        ctx = ssl.create_default_context(cafile=str(certs["ca.crt"]))
        try:
            token_file = tmp_path / "state" / "api-token"
            deadline = time.monotonic() + 60
            while True:  # polls until the engine answers over TLS with its generated token
                try:
                    req = urllib.request.Request(api + "/alarms", headers={
                        "Authorization": f"Bearer {token_file.read_text().strip()}"})
                    with urllib.request.urlopen(req, timeout=2, context=ctx) as r:
                        assert r.status == 200
                        break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        pytest.fail(f"no HTTPS API: {log.read_text(errors='replace')[-2000:]}")
                    time.sleep(0.2)
            with pytest.raises(OSError):  # the same port in plain HTTP
                urllib.request.urlopen(api.replace("https:", "http:") + "/alarms", timeout=5)
            listed = subprocess.run([*SMARTPARK, "alerts", "list"], env=env, cwd=ROOT,
                                    capture_output=True, text=True, timeout=60)
            assert listed.returncode == 0, listed.stderr
        finally:
            proc.terminate()
            rc = proc.wait(30)
        assert rc == 0, log.read_text(errors="replace")[-2000:]

    def test_https_without_a_key_is_a_configuration_error(self, broker: Any, influx_db: Any,
                                                          tmp_path: Path) -> None:
        """--api-url https:// with no key: exit 2 and one line naming the options, before serving anything."""

        env = {**os.environ, "SMARTPARK_MQTT_URL": broker.url, "SMARTPARK_INFLUX_URL": influx_db.url,
               "SMARTPARK_INFLUX_DB": influx_db.db, "SMARTPARK_STATE_DIR": str(tmp_path / "state"),
               "SMARTPARK_API_URL": f"https://127.0.0.1:{free_port()}"}
        env.pop("SMARTPARK_TLS_KEY", None)
        env.pop("SMARTPARK_TLS_CERT", None)
        r = subprocess.run([*SMARTPARK, "alerts", "run"], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, r.stderr
        assert "--tls-cert" in r.stderr and "Traceback" not in r.stderr
