"""Configuration per CONTRACT §6: flags win over environment variables, variables over defaults."""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .errors import ConfigError

# flag name -> (environment variable, default)
OPTIONS: dict[str, tuple[str, str | None]] = {
    "mqtt_url": ("SMARTPARK_MQTT_URL", "mqtt://127.0.0.1:1883"),
    "influx_url": ("SMARTPARK_INFLUX_URL", "http://127.0.0.1:8086"),
    "influx_db": ("SMARTPARK_INFLUX_DB", "smartpark"),
    "influx_token": ("SMARTPARK_INFLUX_TOKEN", None),
    "park": ("SMARTPARK_PARK", None),
    "state_dir": ("SMARTPARK_STATE_DIR", "./.smartpark"),
    "api_url": ("SMARTPARK_API_URL", "http://127.0.0.1:8765"),
    "api_token": ("SMARTPARK_API_TOKEN", None),
    "mqtt_protocol": ("SMARTPARK_MQTT_PROTOCOL", "auto"),
    "public_url": ("SMARTPARK_PUBLIC_URL", None),
    "tls_cert": ("SMARTPARK_TLS_CERT", None),
    "tls_key": ("SMARTPARK_TLS_KEY", None),
    "hj212_listen": ("SMARTPARK_HJ212_LISTEN", "127.0.0.1:9212"),
    "raw_retention": ("SMARTPARK_RAW_RETENTION", "400d"),
    "rollup_retention": ("SMARTPARK_ROLLUP_RETENTION", "INF"),
}

HELP = {
    "mqtt_url": "MQTT broker, mqtt:// or mqtts://, user:password@ allowed",
    "influx_url": "InfluxDB base URL (v1 HTTP API), user:password@ allowed",
    "influx_db": "InfluxDB database",
    "influx_token": "token for InfluxDB 2.x/3.x (sent as 'Authorization: Token ...')",
    "park": "park model file (default: the bundled park)",
    "state_dir": "directory for the spool, alarm state and the local stack",
    "api_url": "where the alert engine's operator API listens / is called",
    "api_token": "bearer token of the operator API",
    "mqtt_protocol": "MQTT version: 5, 3.1.1, or auto (5, falling back to 3.1.1 when the broker has no 5)",
    "public_url": "the console's address as on-call staff reach it, for links in notifications",
    "tls_cert": "PEM certificate (chain) the operator API serves when --api-url is https://",
    "tls_key": "PEM private key of --tls-cert",
    "hj212_listen": "HOST:PORT where 'smartpark hj212 serve' takes data-logger connections",
    "raw_retention": "how long readings and events are kept (retention policy raw; INF keeps forever)",
    "rollup_retention": "how long the rollups are kept (retention policy rollup; INF keeps forever)",
}

# --mqtt-protocol values -> protocol level of the CONNECT packet (None: find out)
MQTT_PROTOCOLS: dict[str, int | None] = {"auto": None, "5": 5, "5.0": 5, "3.1.1": 4}


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Add the CONTRACT §6 options to a (sub)parser.

    Defaults are resolved later by :meth:`Settings.resolve`; ``SUPPRESS`` keeps a subcommand from
    overwriting a flag given before its name.
    """
    group = parser.add_argument_group("connection and configuration (CONTRACT §6)")
    for name, (env, default) in OPTIONS.items():
        group.add_argument("--" + name.replace("_", "-"), dest=name, default=argparse.SUPPRESS,
                           help=f"{HELP[name]} [env {env}, default {default or 'none'}]")


@dataclass(frozen=True)
class MqttTarget:
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None
    protocol: int | None = None  # 5 or 4 (3.1.1); None: MQTT 5, falling back to 3.1.1


@dataclass(frozen=True)
class InfluxTarget:
    base_url: str  # without credentials, no trailing slash
    username: str | None
    password: str | None
    token: str | None
    db: str
    raw_retention: str = "400d"  # InfluxQL durations (CONTRACT §10), checked by parse_retention
    rollup_retention: str = "INF"


@dataclass(frozen=True)
class Settings:
    mqtt_url: str = OPTIONS["mqtt_url"][1]  # type: ignore[assignment]  # defaults are not None here
    influx_url: str = OPTIONS["influx_url"][1]  # type: ignore[assignment]  # defaults are not None here
    influx_db: str = OPTIONS["influx_db"][1]  # type: ignore[assignment]  # defaults are not None here
    influx_token: str | None = None
    park: str | None = None
    state_dir: str = OPTIONS["state_dir"][1]  # type: ignore[assignment]  # defaults are not None here
    api_url: str = OPTIONS["api_url"][1]  # type: ignore[assignment]  # defaults are not None here
    api_token: str | None = None
    mqtt_protocol: str = "auto"
    public_url: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    hj212_listen: str = OPTIONS["hj212_listen"][1]  # type: ignore[assignment]  # defaults are not None here
    raw_retention: str = OPTIONS["raw_retention"][1]  # type: ignore[assignment]  # defaults are not None here
    rollup_retention: str = OPTIONS["rollup_retention"][1]  # type: ignore[assignment]  # defaults are not None here
    extra: dict[str, object] = field(default_factory=dict)

    @classmethod
    def resolve(cls, ns: argparse.Namespace | None = None,
                env: Mapping[str, str] | None = None) -> Settings:
        """Flags (``ns``) > environment (``env``, default ``os.environ``) > defaults."""
        environ: Mapping[str, str] = os.environ if env is None else env
        values: dict[str, object] = {}
        for name, (var, default) in OPTIONS.items():
            flag = getattr(ns, name, None) if ns is not None else None
            if flag is not None:
                values[name] = flag
            elif environ.get(var):
                values[name] = environ[var]
            else:
                values[name] = default
        settings = cls(**values)  # type: ignore[arg-type]  # each value has its field's type (OPTIONS)
        settings.mqtt()  # validate early: before any I/O
        settings.influx()
        settings.hj212_address()
        settings.influx()  # includes the retentions
        return settings

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir)

    def mqtt(self) -> MqttTarget:
        if self.mqtt_protocol not in MQTT_PROTOCOLS:
            raise ConfigError(f"--mqtt-protocol must be 5, 3.1.1 or auto, got {self.mqtt_protocol!r}",
                              key="mqtt_protocol")
        return replace(parse_mqtt_url(self.mqtt_url), protocol=MQTT_PROTOCOLS[self.mqtt_protocol])

    def influx(self) -> InfluxTarget:
        target = parse_influx_url(self.influx_url, self.influx_db, self.influx_token)
        return dataclasses.replace(target, raw_retention=parse_retention(self.raw_retention, "raw_retention"),
                                   rollup_retention=parse_retention(self.rollup_retention, "rollup_retention"))

    @property
    def raw_retention_ms(self) -> int | None:
        """The raw retention in milliseconds; None for INF (kept forever)."""
        return retention_ms(parse_retention(self.raw_retention, "raw_retention"))

    def hj212_address(self) -> tuple[str, int]:
        return parse_host_port(self.hj212_listen, "hj212_listen")


def parse_mqtt_url(url: str) -> MqttTarget:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise ConfigError(f"MQTT URL must start with mqtt:// or mqtts://, got {url!r}", key="mqtt_url")
    tls = parts.scheme in ("mqtts", "ssl")
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError as exc:
        raise ConfigError(f"bad port in MQTT URL {url!r}", key="mqtt_url") from exc
    if not parts.hostname:
        raise ConfigError(f"no host in MQTT URL {url!r}", key="mqtt_url")
    return MqttTarget(parts.hostname, port, tls,
                      unquote(parts.username) if parts.username else None,
                      unquote(parts.password) if parts.password else None)


def parse_influx_url(url: str, db: str, token: str | None) -> InfluxTarget:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"InfluxDB URL must be http(s)://host[:port], got {url!r}", key="influx_url")
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"bad port in InfluxDB URL {url!r}", key="influx_url") from exc
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = host + (f":{port}" if port else "")
    base = f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}"
    if not db:
        raise ConfigError("InfluxDB database name is empty", key="influx_db")
    return InfluxTarget(base, unquote(parts.username) if parts.username else None,
                        unquote(parts.password) if parts.password else None, token or None, db)


def parse_host_port(text: str, key: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"expected HOST:PORT, got {text!r}", key=key)
    return host, int(port)
_DURATION = re.compile(r"(\d+)(w|d|h|m|s)")
_UNIT_MS = {"w": 604_800_000, "d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1000}


def parse_retention(text: str, key: str) -> str:
    """A retention as InfluxQL writes it (``400d``, ``52w``, ``12h30m``, ``INF``); at least one hour, as
    InfluxDB requires. Returns the canonical text (``INF`` upper case)."""
    value = text.strip()
    if value.upper() == "INF":
        return "INF"
    if not value or _DURATION.sub("", value) != "":
        raise ConfigError(f"{key} must be a duration such as 400d, 52w, 720h or INF, got {text!r}", key=key)
    if retention_ms(value) is not None and (retention_ms(value) or 0) < _UNIT_MS["h"]:
        raise ConfigError(f"{key} must be at least 1h (InfluxDB's minimum), got {text!r}", key=key)
    return value


def retention_ms(duration: str) -> int | None:
    """``400d`` -> milliseconds; ``INF`` -> None."""
    if duration.upper() == "INF":
        return None
    return sum(int(n) * _UNIT_MS[u] for n, u in _DURATION.findall(duration))
