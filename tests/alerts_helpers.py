"""Helpers of the alerts tests: a small park, real local HTTP endpoints (healthy, hanging, failing)."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from devstack import free_port
from devstack.parks import asset, park_yaml, site
from smartpark.park import parse_park

# the tank level with all four limits, as the engine's unit tests have it too
LEVEL = ('{id: level, name: Level, name_zh: 液位, unit: "%", range: [0, 100], normal: [20, 60], interval_s: 10, '
         'limits: {hh: 90, h: 80, l: 10, ll: 5}, deadband: 2}')
PARK_YAML = park_yaml(
    site("plant", "Plant", asset(
        "tank", "Tank", LEVEL,
        "{id: temp, name: Temp, unit: degC, range: [0, 200], normal: [20, 60], interval_s: 10, limits: {h: 80}}")),
    site("other", "Other site",
         asset("pump", "Pump",
               "{id: flow, name: Flow, unit: m3/h, range: [0, 100], normal: [20, 60], interval_s: 10, "
               "limits: {h: 80}}"),
         asset("stack", "Stack",
               "{id: nox, name: NOx, unit: mg/m3, range: [0, 1000], normal: [100, 250], interval_s: 60, "
               "regulatory: [{limit: 300, averaging: 1h, source: GB 18484}]}")))
PARK = parse_park(PARK_YAML, "test-park.yaml")


def api_up(api: str, token_file: Path, path: str) -> bool:
    """The engine's API at ``api`` answers 200 to ``path`` with the token the engine wrote to ``token_file``
    (False while the file or the answer is not there yet)."""
    if not token_file.exists():
        return False
    req = urllib.request.Request(api + path, headers={"Authorization": f"Bearer {token_file.read_text().strip()}"})
    try:
        with urllib.request.urlopen(req, timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@dataclass
class Endpoint:
    """A local HTTP endpoint that records what it receives; ``mode`` ok | hang | fail."""

    mode: str = "ok"
    port: int = 0
    bodies: list[Any] = field(default_factory=list)
    hits: int = 0
    got: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def handler(self, request: web.Request) -> web.Response:
        self.hits += 1
        raw = await request.read()
        if self.mode == "hang":
            await asyncio.sleep(3600)
        if self.mode == "fail":
            return web.Response(status=500, text="boom")
        try:
            self.bodies.append(json.loads(raw))
        except ValueError:
            self.bodies.append(raw.decode(errors="replace"))
        self.got.set()
        return web.Response(status=200, text="ok")


class Endpoints:
    """``async with Endpoints("ok", "hang", "fail") as (ok, hang, fail)``: servers on free loopback ports."""

    def __init__(self, *modes: str) -> None:
        self.eps = [Endpoint(m) for m in modes]
        self._runners: list[web.AppRunner] = []

    async def __aenter__(self) -> list[Endpoint]:
        for ep in self.eps:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", ep.handler)
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
            await runner.setup()
            ep.port = free_port()
            await web.TCPSite(runner, "127.0.0.1", ep.port).start()
            self._runners.append(runner)
        return self.eps

    async def __aexit__(self, *exc: object) -> None:
        for r in self._runners:
            await r.cleanup()


async def wait_for(pred: Any, limit_s: float = 20.0, step: float = 0.02) -> None:
    """Poll a condition (the outcome, not the time: a generous bound only guards against hanging)."""
    async with asyncio.timeout(limit_s):
        while not pred():  # noqa: ASYNC110  # the condition is in another component's state, no event to await
            await asyncio.sleep(step)


def reading(value: float, ts: int) -> bytes:
    return json.dumps({"value": value, "ts": ts}).encode()
