"""The real services the tests run against, as the fixtures of ``conftest.py`` hand them out: a database on a
test influxd (:class:`InfluxDB`), the influxd itself (:class:`InfluxServer`) and a mosquitto (:class:`Broker`).
Tests that start their own import them from here."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from devstack import Stack


class InfluxDB:
    """A database on a test influxd, with the few helpers tests need to look at what was written."""

    def __init__(self, url: str, db: str) -> None:
        self.url = url.rstrip("/")
        self.db = db

    def _post(self, path: str, params: dict[str, str], body: bytes | None = None,
              timeout: float = 30) -> tuple[int, bytes]:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        if body is None:  # /query: the parameters go in the form body
            req = urllib.request.Request(f"{self.url}{path}", data=urllib.parse.urlencode(params).encode(),
                                         method="POST")
            req.add_header("Content-Type", "application/x-www-form-urlencoded")
        else:
            req = urllib.request.Request(url, data=body, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return int(resp.status), resp.read()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read()

    def raw_query(self, q: str, *, epoch: str | None = "ms", db: str | None = None) -> dict[str, Any]:
        """The parsed JSON of ``POST /query``; raises AssertionError on an HTTP or statement error."""
        params = {"q": q, "db": db or self.db}
        if epoch:
            params["epoch"] = epoch
        status, body = self._post("/query", params)
        if status != 200:
            raise AssertionError(f"InfluxDB query {q!r} -> HTTP {status}: {body[:500]!r}")
        data: dict[str, Any] = json.loads(body)
        for result in data.get("results", []):
            if "error" in result:
                raise AssertionError(f"InfluxDB query {q!r} -> {result['error']}")
        return data

    def query(self, q: str, *, epoch: str | None = "ms", db: str | None = None) -> list[dict[str, Any]]:
        """Rows of every series of every statement, each a dict ``{column: value, **tags}``.

        ``time`` is epoch milliseconds by default (``epoch="ns"`` for events, ``None`` for RFC 3339).
        A ``GROUP BY`` query puts the group's tags in each row; ``_series`` is the measurement name.
        """
        rows: list[dict[str, Any]] = []
        for result in self.raw_query(q, epoch=epoch, db=db).get("results", []):
            for series in result.get("series", []):
                cols = series.get("columns", [])
                tags = series.get("tags") or {}
                for values in series.get("values", []):
                    row = dict(zip(cols, values, strict=False))
                    row.update(tags)
                    row["_series"] = series.get("name")
                    rows.append(row)
        return rows

    def count(self, measurement: str, field: str = "*", where: str = "") -> int:
        """Number of points of ``measurement`` (max over its fields for ``*``); 0 when there is none."""
        q = f'SELECT count({field}) FROM "{measurement}"' + (f" WHERE {where}" if where else "")
        rows = self.query(q)
        if not rows:
            return 0
        return max(int(v) for k, v in rows[0].items() if k.startswith("count") and v is not None)

    def write(self, lines: str | list[str], precision: str = "ms") -> None:
        """Write line protocol; raises AssertionError unless InfluxDB answers 204."""
        body = "\n".join(lines) if isinstance(lines, list) else lines
        status, resp = self._post("/write", {"db": self.db, "precision": precision}, body.encode())
        if status != 204:
            raise AssertionError(f"InfluxDB write -> HTTP {status}: {resp[:500]!r}")

    def create(self) -> None:
        self.raw_query(f'CREATE DATABASE "{self.db}"', epoch=None)

    def drop(self) -> None:
        self.raw_query(f'DROP DATABASE "{self.db}"', epoch=None)

    def __repr__(self) -> str:
        return f"InfluxDB({self.url!r}, db={self.db!r})"


class InfluxServer:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    @property
    def url(self) -> str:
        return self.stack.influx_url

    @property
    def port(self) -> int:
        return self.stack.influx_port

    def new_db(self, prefix: str = "t") -> InfluxDB:
        db = InfluxDB(self.url, f"{prefix}_{uuid.uuid4().hex[:12]}")
        db.create()
        return db


class Broker:
    """One mosquitto on a fixed free port; restarts keep the port and the persistence directory."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    host = "127.0.0.1"

    @property
    def port(self) -> int:
        return self.stack.mqtt_port

    @property
    def url(self) -> str:
        return self.stack.mqtt_url

    @property
    def pid(self) -> int | None:
        return self.stack.pid("mosquitto")

    @property
    def log_path(self) -> Path:
        return self.stack.log_path("mosquitto")

    @property
    def running(self) -> bool:
        return self.pid is not None

    def start(self, timeout: float = 15) -> None:
        self.stack.start_mosquitto(timeout)

    def stop(self, kill: bool = False) -> None:
        """SIGTERM (clean: persistent sessions and queued messages are saved) or SIGKILL with ``kill``."""
        self.stack.stop_mosquitto(kill=kill)

    def restart(self, kill: bool = False, timeout: float = 15) -> None:
        self.stop(kill=kill)
        self.start(timeout)

    def __repr__(self) -> str:
        return f"Broker({self.url!r}, pid={self.pid})"
