"""The alarm engine with its console for the console tests: a real AlertService on a real broker and InfluxDB,
run in a thread of its own (so that a module's tests, and one browser, share it), with users of each role."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import paho.mqtt.publish as mqtt_publish
from services import InfluxDB

from alerts.service import AlertService
from alerts.users import UserStore
from devstack import free_port
from devstack.load import wait_for
from smartpark.config import Settings
from smartpark.park import Park

PASSWORD = "correct horse battery"
USERS = {"vera": "viewer", "otto": "operator", "sue": "supervisor", "ada": "admin"}


class RunningEngine:
    """``with RunningEngine(broker_url, influx_db, state_dir, park) as eng``: ``eng.url``, ``eng.token``, ``eng.svc``,
    ``eng.publish(key, value)``, ``eng.call(method, path, ...)``."""

    def __init__(self, mqtt_url: str, db: InfluxDB, state_dir: Path, park: Park,
                 users: dict[str, str] | None = None) -> None:
        self.db = db
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.mqtt_port = int(mqtt_url.rsplit(":", 1)[1])
        self.settings = Settings(mqtt_url=mqtt_url, influx_url=db.url, influx_db=db.db, state_dir=str(state_dir),
                                 api_url=self.url)
        store = UserStore(state_dir / "users.yaml")
        for name, role in (USERS if users is None else users).items():
            store.add(name, role, PASSWORD)
        self.park = park
        self.svc: AlertService | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.error: BaseException | None = None

    def __enter__(self) -> RunningEngine:
        started = threading.Event()

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self.svc = AlertService(self.settings, self.park, instance=f"console{self.port}")
            task = asyncio.create_task(self.svc.run(self._stop))
            ready = asyncio.create_task(self.svc.subscribed.wait())  # the API is up before, the subscription last
            await asyncio.wait([task, ready], return_when=asyncio.FIRST_COMPLETED)
            started.set()
            await task

        def run() -> None:
            try:
                asyncio.run(main())
            except BaseException as exc:  # reported by the test that waits for it
                self.error = exc
                started.set()

        self._thread = threading.Thread(target=run, name="alert-engine", daemon=True)
        self._thread.start()
        started.wait(60)
        if self.error:
            raise self.error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop and self._stop:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread:
            self._thread.join(30)

    @property
    def token(self) -> str:
        assert self.svc is not None and self.svc.token
        return self.svc.token

    def publish(self, key: str, value: float, ts_ms: int | None = None) -> None:
        """A reading to the engine through MQTT, and into InfluxDB as the collector would store it (the console's
        overview and trends read it there; no collector runs in these tests)."""
        ts = int(time.time() * 1000) if ts_ms is None else ts_ms
        mqtt_publish.single(f"park/{key}", json.dumps({"value": value, "ts": ts}), qos=1, hostname="127.0.0.1",
                            port=self.mqtt_port)
        site, asset, sensor = key.split("/")
        self.db.write(f"reading,site={site},asset={asset},sensor={sensor} value={float(value)!r} {ts}")

    def call(self, method: str, path: str, body: Any = None, *, headers: dict[str, str] | None = None,
             raw: bytes | None = None) -> tuple[int, Any, dict[str, str]]:
        """One HTTP request; returns (status, JSON or text, headers)."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=20) as resp:
                text, status, h = resp.read(), resp.status, dict(resp.headers)
        except urllib.error.HTTPError as exc:
            text, status, h = exc.read(), exc.code, dict(exc.headers)
        try:
            return status, json.loads(text), h
        except ValueError:
            return status, text.decode(errors="replace"), h

    def login(self, user: str, password: str = PASSWORD) -> Session:
        status, body, headers = self.call("POST", "/api/login", {"user": user, "password": password})
        assert status == 200, body
        cookie = headers["Set-Cookie"].split(";", 1)[0]
        return Session(self, cookie, body["csrf"], headers["Set-Cookie"])

    def wait_for(self, pred: Any, limit_s: float = 20.0) -> None:
        wait_for(pred, limit_s)


class Session:
    """A logged-in browser-like client: the cookie, and the CSRF header on state changes unless told not to."""

    def __init__(self, eng: RunningEngine, cookie: str, csrf: str, set_cookie: str) -> None:
        self.eng, self.cookie, self.csrf, self.set_cookie = eng, cookie, csrf, set_cookie

    def call(self, method: str, path: str, body: Any = None, *, csrf: bool = True) -> tuple[int, Any]:
        headers = {"Cookie": self.cookie}
        if csrf and method != "GET":
            headers["X-CSRF-Token"] = self.csrf
        status, data, _ = self.eng.call(method, path, body, headers=headers)
        return status, data
