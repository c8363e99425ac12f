"""Real services for every test: Mosquitto and InfluxDB 1.x from the system binaries, on free loopback ports.

Fixtures
--------
``influx_server`` (session)
    one influxd for the whole session: ``.url``, ``.port``, ``.stack`` (a :class:`devstack.Stack`),
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
The classes handed out live in ``services.py``: a test imports them from there, never from this file.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from services import Broker, InfluxDB, InfluxServer

from devstack import Stack, free_port

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


def _broker(root: Path) -> Iterator[Broker]:
    stack = _new_stack(root, influx_port=0)
    stack.start_mosquitto()
    try:
        yield Broker(stack)
    finally:
        _stop_quietly(stack)


@pytest.fixture
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    yield from _broker(tmp_path_factory.mktemp("broker"))


@pytest.fixture(scope="session")
def shared_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    yield from _broker(tmp_path_factory.mktemp("shared_broker"))


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
