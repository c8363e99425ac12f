"""Real services for every test: Mosquitto and InfluxDB 1.x from the system binaries, on free loopback ports.

Fixtures
--------
``influx_server`` (session)
    one influxd for the whole session: ``.url``, ``.port``, ``.stack`` (a :class:`smartpark.stack.Stack`),
    ``.new_db(prefix)`` -> :class:`InfluxDB`.
``influx_db`` (function)
    a fresh, uniquely named database on ``influx_server`` (dropped afterwards): :class:`InfluxDB` with
    ``.url``, ``.db``, ``.query(q)`` -> list of row dicts, ``.count(measurement)``, ``.write(lines)``.
``broker`` (function)
    a fresh mosquitto per test (starts in milliseconds): :class:`Broker` with ``.url``
    (``mqtt://127.0.0.1:PORT``), ``.host``, ``.port``, ``.start()``, ``.stop(kill=False)``,
    ``.restart(kill=False)``, ``.pid``, ``.log_path``.
``shared_broker`` (session)
    one mosquitto for tests that only need *a* broker; use unique topics and client ids there.
``stack_factory`` (function)
    ``stack_factory(start=True, **kw)`` -> a whole :class:`Stack` (mosquitto + influxd) of its own in a
    tmp dir on free ports, for tests that stop or kill InfluxDB itself. Stopped at the end of the test.

Every process started here is stopped by its fixture's finalizer, and killed by pid at interpreter exit
if a finalizer did not run (``atexit``), so no stray process survives the session.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from smartpark.stack import Stack, free_port

# every Stack created by these fixtures, for the atexit safety net
_STACKS: list[Stack] = []


def _new_stack(root: Path, **kw: Any) -> Stack:
    kw.setdefault("mqtt_port", free_port())
    kw.setdefault("influx_port", free_port())
    stack = Stack(root, **kw)
    _STACKS.append(stack)
    return stack


def _stop_quietly(stack: Stack) -> None:
    for stop in (stack.stop_mosquitto, stack.stop_influxd):
        try:
            stop()
        except Exception:
            with contextlib.suppress(Exception):
                stop(kill=True)


@atexit.register
def _kill_strays() -> None:
    for stack in _STACKS:
        for pid in stack.pids():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Under CI (``CI`` set, as ``.ci/run`` does) a skipped test is a failure.

    ``make test`` installs every broker, browser and tool the tests need; a test that skips there because one
    is missing would let a red check pass as green.
    """
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]  # pluggy's hookwrapper result
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI, where make test installs every dependency: {report.longrepr}"


# --------------------------------------------------------------------------------------------------
# InfluxDB


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


@pytest.fixture(scope="session")
def influx_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    stack = _new_stack(tmp_path_factory.mktemp("influx_server"), mqtt_port=0)
    stack.start_influxd()
    try:
        yield InfluxServer(stack)
    finally:
        _stop_quietly(stack)


@pytest.fixture
def influx_db(influx_server: InfluxServer) -> Iterator[InfluxDB]:
    db = influx_server.new_db()
    yield db
    with contextlib.suppress(Exception):  # the server may have been stopped by the test: not our business
        db.drop()


# --------------------------------------------------------------------------------------------------
# Mosquitto


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


def _broker(root: Path) -> Broker:
    stack = _new_stack(root, influx_port=0)
    stack.start_mosquitto()
    return Broker(stack)


@pytest.fixture
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = _broker(tmp_path_factory.mktemp("broker"))
    try:
        yield b
    finally:
        _stop_quietly(b.stack)


@pytest.fixture(scope="session")
def shared_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = _broker(tmp_path_factory.mktemp("shared_broker"))
    try:
        yield b
    finally:
        _stop_quietly(b.stack)


# --------------------------------------------------------------------------------------------------
# whole stacks


@pytest.fixture
def stack_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Stack]]:
    made: list[Stack] = []

    def make(start: bool = True, **kw: Any) -> Stack:
        stack = _new_stack(tmp_path_factory.mktemp("stack"), **kw)
        made.append(stack)
        if start:
            stack.up()
        return stack

    yield make
    for stack in made:
        _stop_quietly(stack)
