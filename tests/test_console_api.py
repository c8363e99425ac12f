"""The operator API behind the console: users, sessions, CSRF, the roles matrix route by route, and the
hardening of every route against malformed input and slow clients, on a real engine, broker and InfluxDB."""

from __future__ import annotations

import logging
import os
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from alerts_helpers import PARK
from console_support import PASSWORD, USERS, RunningEngine, Session
from services import Broker, InfluxDB, InfluxServer

import alerts.api as api
import reports
from alerts.console.auth import LoginThrottle, Sessions
from alerts.users import UserStore, verify_password
from devstack import SMARTPARK
from smartpark.errors import UsageError

ROLES = ["viewer", "operator", "supervisor", "admin"]
LEVEL_H = "plant/tank/level/h"
LEVEL_HH = "plant/tank/level/hh"


@pytest.fixture(scope="module")
def engine(shared_broker: Broker, influx_server: InfluxServer, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[RunningEngine]:
    # short read bounds, so that the slow-client tests take seconds (the default is 10 s)
    saved = getattr(api, "HEADER_READ_S", None), getattr(api, "BODY_READ_S", None)
    api.HEADER_READ_S, api.BODY_READ_S = 2.0, 2.0
    db = influx_server.new_db("console")
    try:
        with RunningEngine(shared_broker.url, db, tmp_path_factory.mktemp("console"),
                           PARK) as eng:
            eng.publish("plant/tank/level", 95.0)  # raises h and hh
            eng.wait_for(lambda: state(eng, LEVEL_HH) == "UNACK")
            yield eng
    finally:
        api.HEADER_READ_S, api.BODY_READ_S = saved  # type: ignore[assignment]  # the values read above
        db.drop()


@pytest.fixture(scope="module")
def sessions(engine: RunningEngine) -> dict[str, Session]:
    return {role: engine.login(name) for name, role in USERS.items()}


def state(engine: RunningEngine, aid: str) -> str:
    assert engine.svc is not None
    return engine.svc.engine.alarms[aid].state


def raise_again(engine: RunningEngine, aid: str) -> None:
    """Bring an alarm back to UNACK (in service, unshelved, raised) through the service token."""
    hdr = {"Authorization": f"Bearer {engine.token}"}
    s = state(engine, aid)
    if s == "OOSRV":
        engine.call("POST", f"/alarms/{aid}/in-service", {}, headers=hdr)
    if state(engine, aid) == "SHLVD":
        engine.call("POST", f"/alarms/{aid}/unshelve", {}, headers=hdr)
    if state(engine, aid) not in ("UNACK",):
        engine.publish("plant/tank/level", 50.0)
        engine.wait_for(lambda: state(engine, aid) in ("RTNUN", "NORM"))
        if state(engine, aid) == "RTNUN":
            engine.call("POST", f"/alarms/{aid}/ack", {}, headers=hdr)
        engine.publish("plant/tank/level", 95.0)
        engine.wait_for(lambda: state(engine, aid) == "UNACK")


# every route: (method, path, body, the least role; None = public)
MATRIX: list[tuple[str, str, dict[str, Any] | None, str | None]] = [
    ("GET", "/", None, None),
    ("GET", "/alarm/plant/tank/level/hh", None, None),
    ("GET", "/openapi.json", None, None),
    ("GET", "/static/app.js", None, None),
    ("POST", "/api/login", {"user": "nobody", "password": "x" * 8}, None),
    ("GET", "/api/session", None, "viewer"),
    ("POST", "/api/logout", {}, "viewer"),
    ("GET", "/alarms", None, "viewer"),
    ("GET", "/status", None, "viewer"),
    ("GET", "/api/park", None, "viewer"),
    ("GET", "/api/alarm?id=plant/tank/level/hh", None, "viewer"),
    ("GET", "/api/trend?sensor=plant/tank/level&hours=1", None, "viewer"),
    ("GET", "/api/history", None, "viewer"),
    ("GET", "/api/history?format=csv", None, "viewer"),
    ("GET", "/api/handover", None, "viewer"),
    ("GET", "/api/overview", None, "viewer"),
    ("GET", "/api/kpis?hours=1", None, "viewer"),
    ("GET", "/api/events", None, "viewer"),
    ("POST", "/alarms/plant/tank/none/hh/ack", {}, "operator"),
    ("POST", "/alarms/plant/tank/none/hh/shelve", {"duration_s": 60, "comment": "x"}, "operator"),
    ("POST", "/api/ack", {"ids": []}, "operator"),
    ("POST", "/alarms/plant/tank/none/hh/unshelve", {}, "supervisor"),
    ("POST", "/alarms/plant/tank/none/hh/out-of-service", {"comment": "x"}, "supervisor"),
    ("POST", "/alarms/plant/tank/none/hh/in-service", {}, "supervisor"),
    ("GET", "/api/users", None, "admin"),
    ("GET", "/api/reports/daily?format=csv", None, "viewer"),
    ("GET", "/api/reports/monthly?format=csv", None, "viewer"),
]


class TestReports:
    """The console serves the compliance officer's reports (CONTRACT §11) as `smartpark report` writes them."""

    def test_daily_csv_is_the_reports_own(self, engine: RunningEngine, sessions: dict[str, Session]) -> None:
        """A viewer gets yesterday's CSV (the default day) byte for byte as reports.build_daily makes it."""
        tz = engine.park.park.timezone
        day = reports.report_day(None, tz)
        status, data = sessions["viewer"].call("GET", "/api/reports/daily?format=csv")
        assert status == 200, data
        expected = reports.build_daily(engine.settings, engine.park, day, None, "csv").decode()
        assert data == expected and data.startswith(",".join(reports.CSV_COLUMNS))

    def test_pdf_inline_and_named(self, engine: RunningEngine) -> None:
        """The PDF of a given day is a PDF, shown in the browser, named as the CLI names it."""
        status, _, headers = engine.call("GET", "/api/reports/daily?date=2026-11-20",
                                         headers={"Authorization": f"Bearer {engine.token}"})
        assert status == 200 and headers["Content-Type"] == "application/pdf"
        assert headers["Content-Disposition"] == 'inline; filename="smartpark-daily-2026-11-20.pdf"'

    @pytest.mark.parametrize("query", ["daily?date=2026-13-01", "daily?format=docx", "monthly?month=2026-1",
                                       "daily?site=nowhere"])
    def test_bad_parameters_are_400(self, sessions: dict[str, Session], query: str) -> None:
        status, data = sessions["viewer"].call("GET", f"/api/reports/{query}")
        assert status == 400 and "error" in data, data


class TestRoles:
    """Every route is enforced on the server for sessions and tokens alike; a refused request changes nothing."""

    def test_matrix_covers_every_route(self) -> None:
        """The matrix names every route the application has, with the role the route declares."""
        app = api.make_app(SimpleNamespace(park=PARK))
        declared = {(r.method, r.path): r.role for r in app[api.ROUTES]}
        assert len(declared) == len(app[api.ROUTES])
        for method, path, _, role in MATRIX:
            if path.startswith("/static/"):
                continue  # the static folder: public, not a declared route
            match = [k for k in declared if k[0] == method and _matches(k[1], path.split("?")[0])]
            assert match, (method, path)
            assert declared[match[0]] == role, (method, path)
        covered = {k for k in declared for m, p, _, _ in MATRIX if k[0] == m and _matches(k[1], p.split("?")[0])}
        assert covered == set(declared)

    @pytest.mark.parametrize(("method", "path", "body", "least"), MATRIX)
    def test_route(self, engine: RunningEngine, sessions: dict[str, Session], method: str, path: str,
                   body: dict[str, Any] | None, least: str | None) -> None:
        """Anonymous: 401 unless public; each role below the least one: 403; the others are let through."""
        status, data, _ = engine.call(method, path, body, headers={"Accept": "application/json"})
        if least is None:
            assert status in (200, 401 if path == "/api/login" else 200), (status, data)
        else:
            assert status == 401 and "error" in data
        for role in ROLES if path != "/api/login" else ():  # login answers by its body, not by role
            if path.startswith("/api/events"):  # a stream: only its answer's head is read
                got, raw = raw_request(engine, f"GET {path} HTTP/1.1\r\nHost: x\r\nCookie: "
                                       f"{sessions[role].cookie}\r\n\r\n".encode())
                data = raw.decode(errors="replace")
            elif path == "/api/logout":  # a session of its own, so that the others stay logged in
                name = next(n for n, r in USERS.items() if r == role)
                got, data = engine.login(name).call(method, path, body)
            else:
                got, data = sessions[role].call(method, path, body)
            if least is not None and ROLES.index(role) < ROLES.index(least):
                assert got == 403 and "error" in data, (role, got, data)
            else:
                assert got not in (401, 403), (role, got, data)

    def test_forged_viewer_post_changes_nothing(self, engine: RunningEngine, sessions: dict[str, Session],
                                                 influx_server: InfluxServer) -> None:
        """A viewer's POST with its own valid CSRF token is 403, and the alarm and the audit stay as they were."""
        raise_again(engine, LEVEL_HH)
        db: InfluxDB = engine.db
        before = db.count("alarm", where="\"operator\" = 'vera'")
        for action, body in (("ack", {}), ("shelve", {"duration_s": 60, "comment": "x"}),
                             ("out-of-service", {"comment": "x"})):
            status, data = sessions["viewer"].call("POST", f"/alarms/{LEVEL_HH}/{action}", body)
            assert status == 403, data
        assert state(engine, LEVEL_HH) == "UNACK"
        assert db.count("alarm", where="\"operator\" = 'vera'") == before == 0

    def test_csrf_header_required(self, engine: RunningEngine, sessions: dict[str, Session]) -> None:
        """A session request without the X-CSRF-Token header, or with a wrong one, is 403 and changes nothing;
        with it, the audit names the session's user."""
        raise_again(engine, LEVEL_HH)
        op = sessions["operator"]
        status, data = op.call("POST", f"/alarms/{LEVEL_HH}/ack", {"comment": "no header"}, csrf=False)
        assert status == 403 and "X-CSRF-Token" in data["error"]
        status, data, _ = engine.call("POST", f"/alarms/{LEVEL_HH}/ack", {},
                                      headers={"Cookie": op.cookie, "X-CSRF-Token": "forged"})
        assert status == 403
        assert state(engine, LEVEL_HH) == "UNACK"
        status, data = op.call("POST", f"/alarms/{LEVEL_HH}/ack", {"comment": "seen", "operator": "mallory"})
        assert status == 200 and data["operator"] == "otto" and data["state"] == "ACKED"
        db: InfluxDB = engine.db
        engine.wait_for(lambda: db.count("alarm", where="\"operator\" = 'otto'") >= 1)
        assert db.count("alarm", where="\"operator\" = 'mallory'") == 0

    def test_tokens(self, engine: RunningEngine) -> None:
        """The service token acts as admin and is audited as service; a personal token acts as its user, with
        that user's role; a wrong token is 401."""
        raise_again(engine, LEVEL_HH)
        assert engine.svc is not None
        store = UserStore(Path(engine.settings.state_dir) / "users.yaml")
        vtok, otok = store.issue_token("vera"), store.issue_token("otto")
        status, _, _ = engine.call("POST", f"/alarms/{LEVEL_HH}/ack", {}, headers={"Authorization": f"Bearer {vtok}"})
        assert status == 403
        status, ev, _ = engine.call("POST", f"/alarms/{LEVEL_HH}/ack", {}, headers={"Authorization": f"Bearer {otok}"})
        assert status == 200 and ev["operator"] == "otto"
        raise_again(engine, LEVEL_HH)
        status, ev, _ = engine.call("POST", f"/alarms/{LEVEL_HH}/ack", {"operator": "alice"},
                                    headers={"Authorization": f"Bearer {engine.token}"})
        assert status == 200 and ev["operator"] == "service"
        status, _, _ = engine.call("GET", "/alarms", headers={"Authorization": "Bearer spt_wrong"})
        assert status == 401
        status, users, _ = engine.call("GET", "/api/users", headers={"Authorization": f"Bearer {engine.token}"})
        assert status == 200 and {u["name"] for u in users} >= set(USERS)

    def test_shelve_bounds_by_role(self, engine: RunningEngine, sessions: dict[str, Session]) -> None:
        """Operators shelve up to 8 h, supervisors up to 7 days, always with a reason; only supervisors unshelve."""
        raise_again(engine, LEVEL_H)
        op, sup = sessions["operator"], sessions["supervisor"]
        path = f"/alarms/{LEVEL_H}/shelve"
        assert op.call("POST", path, {"duration_s": 9 * 3600, "comment": "maintenance"})[0] == 403
        assert op.call("POST", path, {"duration_s": 3600})[0] == 400
        assert op.call("POST", path, {"duration_s": "1h", "comment": "x"})[0] == 400
        assert state(engine, LEVEL_H) == "UNACK"
        status, ev = op.call("POST", path, {"duration_s": 8 * 3600, "comment": "maintenance"})
        assert status == 200 and ev["state"] == "SHLVD" and ev["operator"] == "otto"
        assert op.call("POST", f"/alarms/{LEVEL_H}/unshelve", {})[0] == 403
        assert sup.call("POST", f"/alarms/{LEVEL_H}/unshelve", {})[0] == 200
        assert sup.call("POST", path, {"duration_s": 8 * 86400, "comment": "turnaround"})[0] == 403
        status, ev = sup.call("POST", path, {"duration_s": 7 * 86400, "comment": "turnaround"})
        assert status == 200 and ev["operator"] == "sue"
        assert sup.call("POST", f"/alarms/{LEVEL_H}/unshelve", {})[0] == 200

    def test_bulk_ack(self, engine: RunningEngine, sessions: dict[str, Session]) -> None:
        """Acknowledging several alarms at once reports which were acknowledged and why the others were not."""
        raise_again(engine, LEVEL_H)
        raise_again(engine, LEVEL_HH)
        status, out = sessions["operator"].call("POST", "/api/ack", {"ids": [LEVEL_H, LEVEL_HH, "plant/x/y/z"],
                                                                      "comment": "both"})
        assert status == 200 and sorted(out["acked"]) == [LEVEL_H, LEVEL_HH]
        assert "plant/x/y/z" in out["refused"]


class TestLogin:
    """Login, logout, cookies, slowed-down guessing, expiry."""

    def test_cookie_and_session(self, engine: RunningEngine) -> None:
        """The cookie is HttpOnly and SameSite=Strict (Secure only behind TLS); GET /api/session names the user,
        the role and the CSRF token; after logout the session is gone."""
        s = engine.login("sue")
        flags = s.set_cookie.lower()
        assert "httponly" in flags and "samesite=strict" in flags and "secure" not in flags.replace("httponly", "")
        status, me = s.call("GET", "/api/session")
        assert status == 200 and me == {"user": "sue", "role": "supervisor", "csrf": s.csrf}
        assert s.call("POST", "/api/logout", {})[0] == 200
        assert s.call("GET", "/api/session")[0] == 401

    def test_wrong_password_is_401_and_slowed_per_user(self, engine: RunningEngine) -> None:
        """Failures for one user slow that user's next attempts down; another user logs in meanwhile."""
        for _ in range(4):
            status, body, _ = engine.call("POST", "/api/login", {"user": "ada", "password": "wrong password"})
            assert status == 401 and "error" in body
        t0 = time.monotonic()
        status, _, _ = engine.call("POST", "/api/login", {"user": "ada", "password": PASSWORD})
        assert time.monotonic() - t0 >= 1.0  # the 5th attempt waited (2 s) before the password was checked
        assert status == 200  # the right password still works once the wait is over
        engine.login("vera")

    def test_removed_user_loses_its_session(self, engine: RunningEngine) -> None:
        store = UserStore(Path(engine.settings.state_dir) / "users.yaml")
        store.add("temp", "operator", PASSWORD)
        s = engine.login("temp")
        store.remove("temp")
        assert s.call("GET", "/alarms")[0] == 401

    def test_sessions_expire(self) -> None:
        """A session ends after its idle time and after its maximum age, whatever its use."""
        now = [0.0]
        ss = Sessions(idle_s=100, max_s=300, clock=lambda: now[0])
        sid, _ = ss.open("otto")
        now[0] = 99
        assert ss.get(sid) is not None
        now[0] = 250
        assert ss.get(sid) is None
        sid, _ = ss.open("otto")
        for t in (340, 420, 500, 549):
            now[0] = t
            assert ss.get(sid) is not None
        now[0] = 600
        assert ss.get(sid) is None

    def test_pruning_renews_no_one(self) -> None:
        """The sweep of a full table on login drops the expired sessions and leaves the others' idle time."""
        now = [0.0]
        ss = Sessions(idle_s=100, max_s=300, clock=lambda: now[0])
        old = [ss.open("otto")[0] for _ in range(999)]
        now[0] = 60
        kept, _ = ss.open("otto")
        now[0] = 150
        ss.open("otto")  # 1000 sessions: the sweep runs, the 999 of t=0 are expired
        assert all(ss.get(sid) is None for sid in old)
        now[0] = 161
        assert ss.get(kept) is None  # idle since t=60, not renewed by the sweep at t=150

    def test_throttle_forgets(self) -> None:
        now = [0.0]
        th = LoginThrottle(clock=lambda: now[0])
        for _ in range(5):
            th.failed("x")
        assert th.delay("x") == 4.0 and th.delay("y") == 0.0
        now[0] = 2000
        assert th.delay("x") == 0.0


class TestUsersCommand:
    """``smartpark users``: the file holds salted scrypt hashes only, mode 0600."""

    def test_add_list_token_remove(self, tmp_path: Path) -> None:
        env = {**os.environ, "SMARTPARK_STATE_DIR": str(tmp_path)}

        def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
            return subprocess.run([*SMARTPARK, "users", *args], input=stdin, env=env,
                                  capture_output=True, text=True, timeout=60)

        assert run("add", "lin", "--role", "supervisor", "--password-stdin", stdin="s3cret-pass\n").returncode == 0
        again = run("add", "lin", "--role", "viewer", "--password-stdin", stdin="s3cret-pass\n")
        assert again.returncode == 2 and again.stderr.count("\n") == 1
        path = tmp_path / "users.yaml"
        text = path.read_text()
        assert "s3cret-pass" not in text and "scrypt$" in text
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        user = UserStore(path).users["lin"]
        assert verify_password("s3cret-pass", user.password) and not verify_password("other", user.password)
        store = UserStore(path)
        store.passwd("lin", "another-pass")
        assert verify_password("another-pass", UserStore(path).users["lin"].password)
        for name, role, password in (("bad/name", "viewer", "s3cret-pass"), ("x", "viewer", "abc"),
                                     ("service", "admin", "s3cret-pass"), ("y", "root", "s3cret-pass")):
            with pytest.raises(UsageError):
                store.add(name, role, password)
        listed = run("list")
        assert listed.returncode == 0 and "lin\tsupervisor" in listed.stdout
        tok = run("token", "lin")
        assert tok.returncode == 0 and tok.stdout.startswith("spt_")
        assert tok.stdout.strip() not in path.read_text()
        assert UserStore(path).by_token(tok.stdout.strip()).name == "lin"  # type: ignore[union-attr]  # the token is lin's
        assert run("remove", "lin").returncode == 0
        assert "lin" not in UserStore(path).users


class TestHardening:
    """Malformed bodies, headers and ids answer 4xx with {"error"}, never a traceback or an error log line;
    text fields are bounded and say so in the OpenAPI document; slow and idle clients are dropped."""

    @pytest.fixture(autouse=True)
    def _no_error_logs(self, caplog: pytest.LogCaptureFixture) -> Iterator[None]:
        with caplog.at_level(logging.DEBUG):
            yield
        ours = [r for r in caplog.records if r.name.split(".")[0] in ("alerts", "aiohttp", "smartpark")]
        errors = [r for r in ours if r.levelno >= logging.ERROR]
        assert not errors, [r.getMessage() for r in errors]
        assert not [r for r in ours if r.exc_info and r.levelno >= logging.WARNING]

    def auth(self, engine: RunningEngine) -> dict[str, str]:
        return {"Authorization": f"Bearer {engine.token}"}

    @pytest.mark.parametrize("raw", [
        b"\xff\xfe{\"comment\": 1}",  # not UTF-8
        b"[" * 30_000 + b"]" * 30_000,  # deep nesting (would be a RecursionError)
        b"{\"comment\": " + b"[" * 50 + b"]" * 50 + b"}",  # nested inside an object
        b"{\"comment\": \"x\"",  # truncated
        b"[1, 2]",  # not an object
        b"{\"comment\": \"\\ud800\"}",  # a lone surrogate
    ], ids=["non-utf8", "deep", "nested-field", "truncated", "array", "surrogate"])
    def test_malformed_body(self, engine: RunningEngine, raw: bytes) -> None:
        raise_again(engine, LEVEL_HH)
        status, data, headers = engine.call("POST", f"/alarms/{LEVEL_HH}/ack", raw=raw, headers=self.auth(engine))
        assert status == 400 and isinstance(data, dict) and data["error"], data
        assert headers["Content-Type"].startswith("application/json")
        assert state(engine, LEVEL_HH) == "UNACK"

    def test_body_too_large(self, engine: RunningEngine) -> None:
        status, data, _ = engine.call("POST", f"/alarms/{LEVEL_HH}/ack", raw=b"{\"comment\": \"" + b"x" * 900_000
                                      + b"\"}", headers=self.auth(engine))
        assert status == 413 and "error" in data

    def test_text_limits(self, engine: RunningEngine) -> None:
        """A comment or operator name over 2,000 characters is refused (not stored, not notified)."""
        raise_again(engine, LEVEL_HH)
        for field in ("comment", "operator"):
            status, data, _ = engine.call("POST", f"/alarms/{LEVEL_HH}/ack", {field: "x" * 2001},
                                          headers=self.auth(engine))
            assert status == 400 and "2000" in data["error"]
        assert state(engine, LEVEL_HH) == "UNACK"
        status, ev, _ = engine.call("POST", f"/alarms/{LEVEL_HH}/ack", {"comment": "x" * 2000},
                                    headers=self.auth(engine))
        assert status == 200 and ev["state"] == "ACKED"
        doc = engine.call("GET", "/openapi.json")[1]
        body = doc["paths"]["/alarms/{id}/ack"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body["properties"]["comment"]["maxLength"] == 2000
        assert body["properties"]["operator"]["maxLength"] == 2000

    @pytest.mark.parametrize("authed", [False, True])
    def test_huge_ids(self, engine: RunningEngine, authed: bool) -> None:
        """An 8 KB id (inside the request line limit) and a 9 KB one (beyond it) answer JSON, no traceback."""
        hdr = self.auth(engine) if authed else {}
        status, data, _ = engine.call("POST", "/alarms/" + "a" * 8000 + "/ack", {}, headers=hdr)
        assert status == (400 if authed else 401) and "error" in data
        status, data, _ = engine.call("POST", "/alarms/" + "a" * 9000 + "/ack", {}, headers=hdr)
        assert status == 400 and "error" in data
        status, data, _ = engine.call("GET", "/api/alarm?id=" + "a/" * 3000, headers=hdr)
        assert status == (400 if authed else 401) and "error" in data

    def test_malformed_headers(self, engine: RunningEngine) -> None:
        """Non-ASCII bytes in Authorization or Last-Event-ID, a garbage header line: 400 with {"error"}."""
        for head in (b"GET /alarms HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n",
                     b"GET /api/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + engine.token.encode()
                     + b"\r\nLast-Event-ID: \xff\r\n",
                     b"GET /api/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + engine.token.encode()
                     + b"\r\nLast-Event-ID: -1\r\n",
                     b"GET /alarms HTTP/1.1\r\nHost: x\r\nno colon here\r\n",
                     b"POST /alarms/\xff\xfe/a/b/ack HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                     + engine.token.encode() + b"\r\n",
                     b"POST /alarms/%ff%fe/a/b/ack HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                     + engine.token.encode() + b"\r\n",
                     b"GET /alarms HTTP/1.1\r\nHost: x\r\nCookie: smartpark_session=\xff\r\n"):
            status, body = raw_request(engine, head + b"Connection: close\r\n\r\n")
            assert status in (400, 401), (head, status, body)
            assert body.startswith(b"{") and b"error" in body, body

    def test_idle_and_slow_clients_dropped(self, engine: RunningEngine) -> None:
        """A connection that sends nothing, or its headers byte by byte, or its body too slowly, is closed
        within the read bound; the engine goes on answering others meanwhile."""
        idle = socket.create_connection(("127.0.0.1", engine.port))
        trickle = socket.create_connection(("127.0.0.1", engine.port))
        slow_body = socket.create_connection(("127.0.0.1", engine.port))
        slow_body.sendall(b"POST /alarms/plant/tank/level/hh/ack HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                          + engine.token.encode()
                          + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        t0 = time.monotonic()
        closed: dict[str, float] = {}
        socks = {"idle": idle, "trickle": trickle, "slow_body": slow_body}
        for s in socks.values():
            s.setblocking(False)
        head = b"GET /alarms HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"y" * 100
        i = 0
        while len(closed) < 3 and time.monotonic() - t0 < 20:
            if "trickle" not in closed and i < len(head):
                try:
                    trickle.send(head[i:i + 1])
                    i += 1
                except OSError:
                    closed["trickle"] = time.monotonic() - t0
            for name, s in socks.items():
                if name in closed:
                    continue
                try:
                    data = s.recv(65536)
                    if name == "slow_body" and data:
                        assert b"408" in data.split(b"\r\n", 1)[0] and b"error" in data
                        continue
                    if not data:
                        closed[name] = time.monotonic() - t0
                except BlockingIOError:
                    pass
                except OSError:
                    closed[name] = time.monotonic() - t0
            assert engine.call("GET", "/openapi.json")[0] == 200
            time.sleep(0.2)
        for s in socks.values():
            s.close()
        assert set(closed) == {"idle", "trickle", "slow_body"}, closed
        assert min(closed.values()) >= 1.0  # not before the bound (2 s here) was reached


def raw_request(engine: RunningEngine, data: bytes) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", engine.port), timeout=10) as s:
        s.sendall(data)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
            if b"\r\n\r\n" in out and b"text/event-stream" in out:
                break
    head, _, body = out.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def _matches(pattern: str, path: str) -> bool:
    import re

    rx = re.sub(r"\{(\w+)(:([^}]+))?\}", lambda m: f"(?P<{m.group(1)}>{m.group(3) or '[^/]+'})", pattern)
    return re.fullmatch(rx, path) is not None


class TestLiveStream:
    """Server-Sent Events: every event reaches a connected console; a reconnecting one gets what it missed."""

    def test_catch_up_after_reconnect(self, engine: RunningEngine) -> None:
        raise_again(engine, LEVEL_HH)
        assert engine.svc is not None
        hub = engine.svc.hub
        hdr = f"Authorization: Bearer {engine.token}\r\n"
        before = hub.last_id
        # events while the console is away
        engine.publish("plant/tank/level", 50.0)
        engine.wait_for(lambda: hub.last_id >= before + 2)  # h and hh cleared
        missed = hub.last_id
        with socket.create_connection(("127.0.0.1", engine.port), timeout=10) as s:
            s.sendall(f"GET /api/events HTTP/1.1\r\nHost: x\r\n{hdr}Last-Event-ID: {before}\r\n\r\n".encode())
            got = b""
            while got.count(b"\ndata: {\"id\"") < missed - before:
                got += s.recv(65536)
            engine.publish("plant/tank/level", 96.0)  # and a live one after the catch-up
            while got.count(b"\ndata: {\"id\"") < missed - before + 2:
                got += s.recv(65536)
        ids = [int(line[4:]) for line in got.decode().splitlines() if line.startswith("id: ")]
        assert ids[0] == before  # the hello
        assert ids[1:] == list(range(before + 1, missed + 3))  # every event once, in order, none skipped
        assert b'"event": "cleared"' in got and b'"event": "raised"' in got

    def test_too_far_behind_is_told_to_reload(self) -> None:
        """A console whose last event has left the ring gets a reset (reload the lists), never a silent gap."""
        from alerts.console.hub import EventHub
        from alerts.events import AlarmEvent

        hub = EventHub(keep=3)
        ev = AlarmEvent("a/b/c/h", "a", "b", "c", "h", "medium", "raised", "UNACK", 1.0, 0.5, 1, "")
        hub.publish([ev] * 5)
        assert hub.since(1) is None and hub.since(2) is not None
        import asyncio

        async def first(last: int) -> Any:
            with hub.subscribe(last) as sub:
                return await sub.get(0.1)

        [(_, frame)] = asyncio.run(first(0))
        assert b"event: reset" in frame
        assert [seq for seq, _ in asyncio.run(first(3))] == [4, 5]


class TestSecureCookie:
    """Behind TLS the session cookie is also Secure."""

    def test_secure_flag(self, tmp_path: Path) -> None:
        import asyncio

        from aiohttp.test_utils import TestClient, TestServer

        from alerts.console.hub import EventHub

        store = UserStore(tmp_path / "users.yaml")
        store.add("sue", "supervisor", PASSWORD)
        backend = SimpleNamespace(park=PARK, users=store, hub=EventHub(), token="t")

        async def main() -> str:
            async with TestClient(TestServer(api.make_app(backend, secure_cookies=True))) as client:
                r = await client.post("/api/login", json={"user": "sue", "password": PASSWORD})
                assert r.status == 200
                return r.headers["Set-Cookie"]

        cookie = asyncio.run(main()).lower()
        assert "; secure" in cookie and "httponly" in cookie and "samesite=strict" in cookie


class TestKpis:
    """The console reads the alarm KPIs through /api/kpis, computed as ``alerts report`` computes them."""

    def test_route_answers_the_reports_kpis(self, engine: RunningEngine) -> None:
        """The route's flood, chattering and stale are ``alerts.report.kpis`` over the same events of the
        engine's InfluxDB, with the thresholds of smartpark.kpis."""
        from alerts.report import alarm_query, kpis
        from smartpark import kpis as K

        raise_again(engine, LEVEL_HH)
        until = int(time.time() * 1000) + 1000
        status, got, _ = engine.call("GET", f"/api/kpis?hours=2&until={until}",
                                     headers={"Authorization": f"Bearer {engine.token}"})
        assert status == 200, got
        start = until - 2 * 3_600_000
        expected = kpis(engine.db.query(alarm_query(start, until)), start, until)
        assert got["alarms"] >= 1 and {k: got[k] for k in expected} == json_round(expected)
        assert got["thresholds"] == {"flood_window_ms": K.FLOOD_WINDOW_MS, "flood_more_than": K.FLOOD_MORE_THAN,
                                     "chatter_window_ms": K.CHATTER_WINDOW_MS, "chatter_raises": K.CHATTER_RAISES,
                                     "stale_after_ms": K.STALE_AFTER_MS}


def json_round(value: Any) -> Any:
    """``value`` as it comes back from JSON (tuples become lists)."""
    import json

    return json.loads(json.dumps(value))


class TestDocument:
    """/openapi.json is made from the routes' declarations: it names every route the application serves, no
    other, with the bounds the handlers enforce."""

    def test_every_route_is_in_the_document_and_back(self) -> None:
        """Each documented operation resolves to a route of the app's router, and each route of the router
        (the static folder included; HEAD goes with GET) is documented."""
        import asyncio

        from aiohttp.test_utils import make_mocked_request

        app = api.make_app(SimpleNamespace(park=PARK))
        doc = app[api.OPENAPI_DOC]

        async def resolve() -> dict[tuple[str, str], Any]:
            found = {}
            for path, ops in doc["paths"].items():
                for method in ops:
                    url = path.replace("{id}", "plant/tank/level/hh")
                    match = await app.router.resolve(make_mocked_request(method.upper(), url, app=app))
                    assert match.http_exception is None, (method, path, match.http_exception)
                    found[(method, path)] = match.route
            return found

        found = asyncio.run(resolve())
        served = [r for r in app.router.routes() if r.method != "HEAD"]
        assert {id(r) for r in found.values()} == {id(r) for r in served}
        declared = [r for r in served if getattr(r, "smartpark_route", None)]
        assert len(set(map(id, found.values()))) == len(declared) + 1  # one route per operation, plus the folder
        assert "/api/kpis" in doc["paths"] and "/static/app.js" in doc["paths"]

    def test_bounds_are_the_enforced_ones(self, engine: RunningEngine) -> None:
        """A parameter's documented maximum is what the route refuses beyond."""
        doc = engine.call("GET", "/openapi.json")[1]
        params = {p["name"]: p for p in doc["paths"]["/api/trend"]["get"]["parameters"]}
        top = params["hours"]["schema"]["maximum"]
        hdr = {"Authorization": f"Bearer {engine.token}"}
        ok = engine.call("GET", f"/api/trend?sensor=plant/tank/level&hours={top:g}", headers=hdr)[0]
        over = engine.call("GET", f"/api/trend?sensor=plant/tank/level&hours={top + 1:g}", headers=hdr)
        assert ok == 200 and over[0] == 400 and f"{top:g}" in over[1]["error"]


class TestStatusByType:
    """The status of a refusal is its error's type, never its text."""

    def test_types(self) -> None:
        from alerts.alarm import UnknownAlarm
        from alerts.routes import ClientError, Forbidden, NotFound, TooLarge, TooSlow, status_of
        from smartpark.errors import WriteError

        assert [status_of(t) for t in (ClientError, Forbidden, NotFound, TooSlow, TooLarge, UnknownAlarm,
                                       UsageError, WriteError, ValueError)] == \
            [400, 403, 404, 408, 413, 404, 400, 503, 500]

    def test_unknown_alarm_from_the_engine_is_404(self, tmp_path: Path) -> None:
        """An alarm that leaves the engine between the API's check and the action (a rules reload) answers 404
        with the engine's words; another usage error of the engine, whatever it says, 400."""
        import asyncio

        from aiohttp.test_utils import TestClient, TestServer

        from alerts.alarm import UnknownAlarm
        from alerts.console.hub import EventHub

        refusals = {"plant/tank/level/hh": UnknownAlarm("unknown alarm id 'plant/tank/level/hh'"),
                    "plant/tank/level/h": UsageError("unknown alarm: this text decides nothing")}

        async def act(action: str, body: dict[str, Any]) -> Any:
            raise refusals[body["id"]]

        backend = SimpleNamespace(park=PARK, users=UserStore(tmp_path / "users.yaml"), hub=EventHub(), token="t",
                                  has_alarm=lambda aid: True, act=act)

        async def main() -> list[tuple[int, str]]:
            out = []
            async with TestClient(TestServer(api.make_app(backend))) as client:
                for aid in refusals:
                    r = await client.post(f"/alarms/{aid}/ack", json={}, headers={"Authorization": "Bearer t"})
                    out.append((r.status, (await r.json())["error"]))
            return out

        assert asyncio.run(main()) == [(404, "unknown alarm id 'plant/tank/level/hh'"),
                                       (400, "unknown alarm: this text decides nothing")]


class TestSessionsOutliveARestart:
    """A console session survives an engine restart (the file keeps it, its id only as a hash); a logout, a
    removed user or an expired session does not come back."""

    def test_a_restarted_engine_knows_the_session(self, shared_broker: Broker, influx_server: InfluxServer,
                                                  tmp_path: Path) -> None:
        db = influx_server.new_db("restart")
        try:
            with RunningEngine(shared_broker.url, db, tmp_path, PARK) as eng:
                kept, ended = eng.login("otto"), eng.login("sue")
                assert kept.call("GET", "/api/session")[0] == 200
                assert ended.call("POST", "/api/logout")[0] == 200
            with RunningEngine(shared_broker.url, db, tmp_path, PARK, users={}) as again:
                status, who = Session(again, kept.cookie, kept.csrf, kept.set_cookie).call("GET", "/api/session")
                assert status == 200 and who == {"user": "otto", "role": "operator", "csrf": kept.csrf}
                assert Session(again, ended.cookie, ended.csrf, ended.set_cookie).call("GET", "/api/session")[0] == 401
        finally:
            db.drop()
        stored = (tmp_path / "alerts" / "sessions.sqlite").read_bytes()
        assert kept.cookie.split("=", 1)[1].encode() not in stored  # only the id's hash is kept
        assert stat.S_IMODE(os.stat(tmp_path / "alerts" / "sessions.sqlite").st_mode) == 0o600

    def test_the_store_follows_expiry_and_removal(self, tmp_path: Path) -> None:
        now = [1_000_000.0]
        path = tmp_path / "sessions.sqlite"
        first = Sessions(idle_s=100, max_s=300, clock=lambda: now[0], path=path)
        sid, _ = first.open("otto")
        gone, _ = first.open("rita")
        first.drop_user("rita")
        now[0] += 99
        second = Sessions(idle_s=100, max_s=300, clock=lambda: now[0], path=path)  # the engine after a restart
        assert second.get(sid) is not None and second.get(gone) is None
        now[0] += 150  # idle for longer than idle_s since the last use the store knows of
        third = Sessions(idle_s=100, max_s=300, clock=lambda: now[0], path=path)
        assert third.get(sid) is None

    def test_the_file_is_closed_when_the_app_stops(self, tmp_path: Path) -> None:
        """The app's cleanup closes the sessions file: SQLite folds its write-ahead log back into it (no
        ``-wal`` left beside it), and the session is in the file for the next engine."""
        import asyncio

        from aiohttp.test_utils import TestClient, TestServer

        from alerts.console.hub import EventHub

        store = UserStore(tmp_path / "users.yaml")
        store.add("sue", "supervisor", PASSWORD)
        backend = SimpleNamespace(park=PARK, users=store, hub=EventHub(), token="t")
        path = tmp_path / "alerts" / "sessions.sqlite"
        sessions = Sessions(path=path)

        async def main() -> str:
            async with TestClient(TestServer(api.make_app(backend, sessions=sessions))) as client:
                r = await client.post("/api/login", json={"user": "sue", "password": PASSWORD})
                assert r.status == 200
                assert path.with_name("sessions.sqlite-wal").exists()  # open while the app serves
                return r.cookies[api.COOKIE].value

        sid = asyncio.run(main())
        assert not path.with_name("sessions.sqlite-wal").exists()
        assert Sessions(path=path).get(sid) is not None

    def test_an_unusable_file_keeps_sessions_in_memory(self, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
        (tmp_path / "sessions.sqlite").mkdir()  # a directory where the file should be
        ss = Sessions(path=tmp_path / "sessions.sqlite")
        with caplog.at_level(logging.ERROR):
            sid, _ = ss.open("otto")
            assert ss.get(sid) is not None
        assert "in memory only" in caplog.text
