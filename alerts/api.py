"""The operator HTTP API and the console (aiohttp.web), with who may do what (CONTRACT §6, §8).

Every route is declared once (``route(...)`` in :func:`make_app`, collected in :data:`ROUTES`): the least
role it needs, its parameters, body, answer and errors (:mod:`alerts.routes`), from which ``/openapi.json`` is
generated; the handlers read their input through the same declarations. The ``auth`` middleware enforces the
role for sessions and bearer tokens alike (401 without a valid session or token, 403 for a role that
does not allow it or a session request without its CSRF header), before any handler runs. An alarm id
contains slashes (``site/asset/sensor/rule``): it is matched by a path converter, and may be URL-encoded.

Client errors never reach the log as tracebacks: a malformed body, header, id or request line answers
4xx with ``{"error": ...}`` (:func:`read_body`, the ``guard`` middleware, :class:`_ClientErrors` for what the
HTTP parser refuses). Reads are bounded in size (:data:`MAX_BODY`) and in time (:data:`HEADER_READ_S` for a
request's headers, :data:`BODY_READ_S` for its body), so slow clients are dropped.
"""

from __future__ import annotations

import asyncio
import csv
import hmac
import io
import json
import logging
import re
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from smartpark import kpis
from smartpark.errors import UsageError, WriteError
from smartpark.lineproto import quote_literal
from smartpark.park import Park
from smartpark.schema import ACTIVE_STATES, ALARM, EVENTS, OOSRV, PRIORITIES, READING, SHLVD, STATES, vocabulary

from .console.auth import (
    COOKIE,
    CSRF_HEADER,
    MAX_SHELVE_S,
    LoginThrottle,
    Principal,
    Sessions,
    csrf_ok,
    service_principal,
)
from .console.hub import EventHub
from .events import AlarmEvent
from .report import alarm_query
from .routes import (
    MAX_ID,
    MAX_TEXT,
    Answer,
    Body,
    ClientError,
    Field,
    Forbidden,
    Handler,
    Json,
    NotFound,
    Number,
    Param,
    Route,
    Text,
    TooLarge,
    TooSlow,
    openapi,
    status_of,
)
from .users import MAX_PASSWORD, UserStore

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
MAX_BULK = 2000  # alarms acknowledged by one request
HEADER_READ_S = 10.0  # a connection that has not sent a whole request head by then is closed
BODY_READ_S = 10.0
MAX_DEPTH = 4  # nesting of a JSON body: the actions' bodies are flat
REPORT_TYPES = {"pdf": "application/pdf", "csv": "text/csv", "html": "text/html",
                "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}
_ID = re.compile(r"^[a-z][a-z0-9_]{0,31}(/[a-z0-9][a-z0-9_.-]{0,63}){1,3}$")
#: the request's authenticated user (aiohttp >= 3.13 types request keys)
PRINCIPAL: Any = web.RequestKey("principal", Principal) if hasattr(web, "RequestKey") else "principal"
ROUTES: web.AppKey[list[Route]] = web.AppKey("routes")  # every declared route, for the roles matrix
OPENAPI_DOC: web.AppKey[Json] = web.AppKey("openapi")  # the document made from ROUTES
STATIC = Path(str(resources.files("alerts.console") / "static"))

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; media-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


class Backend(Protocol):
    """What the API needs from the engine's service (:class:`alerts.service.AlertService`)."""

    park: Park
    hub: EventHub
    users: UserStore
    token: str | None

    def active(self) -> list[dict[str, Any]]: ...

    def has_alarm(self, alarm_id: str) -> bool: ...

    async def act(self, action: str, body: dict[str, Any]) -> AlarmEvent: ...

    def status(self) -> dict[str, Any]: ...

    async def rows(self, q: str) -> list[dict[str, Any]]: ...

    async def report(self, kind: str, period: str, site: str | None, fmt: str) -> tuple[str, bytes]:
        """The compliance report (reports/): its file name and its bytes; ``kind`` daily or monthly."""
        ...


def error(message: str, status: int) -> web.Response:
    return web.json_response({"error": message}, status=status)


# ---------------------------------------------------------------------------------------------- reading input
def _depth_ok(value: Any, depth: int = 0) -> bool:
    if depth > MAX_DEPTH:
        return False
    if isinstance(value, dict):
        return all(_depth_ok(v, depth + 1) for v in value.values())
    if isinstance(value, list):
        return all(_depth_ok(v, depth + 1) for v in value)
    return True


async def read_body(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object, or :class:`ClientError`: too large, too slow, not UTF-8, not JSON, too deep."""
    if not request.can_read_body:
        return {}
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise TooLarge(f"the body is larger than {MAX_BODY} bytes")
    try:
        async with asyncio.timeout(BODY_READ_S):
            raw = await request.read()  # the whole body; over client_max_size (MAX_BODY) it answers 413
    except TimeoutError:
        raise TooSlow(f"the body did not arrive within {BODY_READ_S:g} s") from None
    if len(raw) > MAX_BODY:
        raise TooLarge(f"the body is larger than {MAX_BODY} bytes")
    if not raw.strip():
        return {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ClientError(f"the body is not UTF-8 (byte {exc.start})") from None
    # a flat object needs no deep parse: refuse deep nesting before the parser recurses into it
    if text.count("[") + text.count("{") > 256 and _nesting(text) > MAX_DEPTH + 1:
        raise ClientError("the body is nested too deeply")
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):
        raise ClientError("the body is not JSON") from None
    if not isinstance(body, dict):
        raise ClientError("the body is a JSON object")
    if not _depth_ok(body):
        raise ClientError("the body is nested too deeply")
    return body


def _nesting(text: str) -> int:
    depth = deepest = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def alarm_id(raw: str) -> str:
    aid = unquote(raw)
    if len(aid) > MAX_ID:
        raise ClientError(f"an alarm id has at most {MAX_ID} characters")
    if not _ID.match(aid):
        raise ClientError("an alarm id is site/asset/sensor/rule")
    return aid


def _header(request: web.Request, name: str) -> str:
    """A header as text; one that is not ASCII (what aiohttp keeps as surrogates) is malformed."""
    value = request.headers.get(name, "")
    if not value.isascii():
        raise ClientError(f"the {name} header is not ASCII")
    return value


# ---------------------------------------------------------------------------------------------- declarations
# What the routes below declare: parameters and body fields (read through these objects), answers' schemas.
ALARM_ID = Text("id", "site/asset/sensor/rule (slashes allowed, or URL-encoded)", where="path")
HOURS_BACK = Number("hours", "hours back from until", 0.1, 24 * 31, 6.0)
UNTIL = Number("until", "end of the period, epoch ms (default now)", 0, 1e14)
SINCE = Number("since", "start of the period, epoch ms (default 24 h before until)", 0, 1e14)
SITE = Text("site", "a site id", 32)
FORMAT = Text("format", "pdf | xlsx | csv | html", 8, "pdf")
COMMENT = Field("comment", {"type": "string", "maxLength": MAX_TEXT,
                            "description": "why (required to shelve and to take out of service)"})
OPERATOR = Field("operator", {"type": "string", "maxLength": MAX_TEXT,
                              "description": "ignored: the audit names the authenticated user"})
DURATION = Field("duration_s", {"type": "number", "exclusiveMinimum": 0, "maximum": max(MAX_SHELVE_S.values()),
                                "description": "seconds; operators up to 8 h, supervisors up to 7 days"})
IDS = Field("ids", {"type": "array", "items": {"type": "string", "maxLength": MAX_ID}, "maxItems": MAX_BULK})
USER = Field("user", {"type": "string", "maxLength": 64})
PASSWORD = Field("password", {"type": "string", "maxLength": MAX_PASSWORD})
HISTORY_FILTERS = tuple(Text(t, f"only events with this {t}", 64)
                        for t in ("site", "asset", "sensor", "rule", "event", "operator", "priority"))
HISTORY_LIMIT = Number("limit", "at most this many events, newest first", 1, 50_000, 5000)
HISTORY_FORMAT = Text("format", "csv for a CSV file", 8)
HISTORY_PARAMS: tuple[Param, ...] = (SINCE, UNTIL, *HISTORY_FILTERS, HISTORY_LIMIT, HISTORY_FORMAT)

#: each operator action: its least role (CONTRACT §8), summary and body
ACTION_ROLE = {"ack": "operator", "shelve": "operator", "unshelve": "supervisor",
               "out-of-service": "supervisor", "in-service": "supervisor"}
ACTIONS = tuple(ACTION_ROLE)
_ACTION_DOC: dict[str, tuple[str, Body]] = {
    "ack": ("Acknowledge (UNACK -> ACKED, RTNUN -> NORM)", Body((COMMENT, OPERATOR))),
    "shelve": ("Shelve with a reason for a bounded time: operators up to 8 h, supervisors up to 7 days",
               Body((COMMENT, OPERATOR, DURATION), ("comment", "duration_s"))),
    "unshelve": ("Unshelve", Body((COMMENT, OPERATOR))),
    "out-of-service": ("Take out of service (needs a reason)", Body((COMMENT, OPERATOR), ("comment",))),
    "in-service": ("Return to service", Body((COMMENT, OPERATOR))),
}

_EVENT = {
    "type": "object",
    "required": ["id", "site", "asset", "sensor", "rule", "priority", "event", "state", "ts", "message"],
    "properties": {
        "id": {"type": "string", "examples": ["wwtp/effluent/cod/hh"]},
        "site": {"type": "string"}, "asset": {"type": "string"}, "sensor": {"type": "string"},
        "rule": {"type": "string"}, "priority": {"enum": list(PRIORITIES)},
        "event": {"enum": list(EVENTS)},
        "state": {"enum": list(STATES)},
        "value": {"type": ["number", "null"]}, "limit": {"type": ["number", "null"]},
        "ts": {"type": "integer", "description": "epoch milliseconds"},
        "message": {"type": "string"},
        "operator": {"type": ["string", "null"], "description": "the authenticated user (service: the service token)"},
    },
}
_ACTIVE = {
    "type": "object",
    "properties": {
        "id": {"type": "string"}, "site": {"type": "string"}, "asset": {"type": "string"},
        "sensor": {"type": "string"}, "rule": {"type": "string"}, "priority": {"type": "string"},
        "state": {"type": "string"}, "value": {"type": ["number", "null"]}, "limit": {"type": ["number", "null"]},
        "since": {"type": ["integer", "null"]}, "shelved_until": {"type": ["integer", "null"]},
        "message": {"type": "string"},
    },
}
_KPIS = {
    "type": "object",
    "description": f"smartpark.kpis: flood (more than {kpis.FLOOD_MORE_THAN} alarms at one site in a "
                   f"{kpis.FLOOD_WINDOW_MS // 60_000}-minute period), chattering ({kpis.CHATTER_RAISES} raises of "
                   f"one alarm within {kpis.CHATTER_WINDOW_MS // 1000} s), stale (standing for more than "
                   f"{kpis.STALE_AFTER_MS // 3_600_000} h)",
    "properties": {
        "since_ms": {"type": "integer"}, "until_ms": {"type": "integer"}, "alarms": {"type": "integer"},
        "per_10min_avg": {"type": "number"}, "per_10min_peak": {"type": "integer"},
        "flood_windows": {"type": "integer"}, "flood_time_pct": {"type": "number"},
        "chattering": {"type": "array", "items": {"type": "string"}},
        "stale": {"type": "array", "items": {"type": "string"}},
        "top10": {"type": "array"}, "priority": {"type": "object"}, "operator_actions": {"type": "integer"},
        "thresholds": {"type": "object"},
    },
}
_HTML = Answer("the console's page", media=("text/html",))
_REPORT = Answer("the report", media=tuple(REPORT_TYPES.values()))
INFO = {"title": "smartpark alarm engine operator API", "version": "2",
        "description": "ISA-18.2 alarm list and operator actions; every action is audited into the `alarm` "
                       "measurement with the authenticated user (CONTRACT §3, §5, §8). Bodies are JSON objects "
                       f"of at most {MAX_BODY} bytes; text fields (comment, operator) have at most {MAX_TEXT} "
                       "characters. A session request that changes state carries the header X-CSRF-Token. "
                       "This document is generated from the routes' declarations (alerts/api.py)."}
SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer",
               "description": "the service token (acts as admin, audited as service) or a personal token"},
    "session": {"type": "apiKey", "in": "cookie", "name": COOKIE}}
def static_routes() -> list[Route]:
    """The files of the static folder, served by aiohttp itself: documented one by one, not handled here."""
    media = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}
    return [Route("GET", f"/static/{p.name}", None, None, f"static_{p.stem}", "A file of the console",
                  answer=Answer("the file", media=(media.get(p.suffix, "application/octet-stream"),)))
            for p in sorted(STATIC.iterdir()) if p.is_file()]


def thresholds() -> dict[str, int]:
    """The KPIs' thresholds, as the console shows them beside the values."""
    return {"flood_window_ms": kpis.FLOOD_WINDOW_MS, "flood_more_than": kpis.FLOOD_MORE_THAN,
            "chatter_window_ms": kpis.CHATTER_WINDOW_MS, "chatter_raises": kpis.CHATTER_RAISES,
            "stale_after_ms": kpis.STALE_AFTER_MS}


# ---------------------------------------------------------------------------------------------- the app
def make_app(backend: Backend, *, secure_cookies: bool = False, sessions: Sessions | None = None,
             throttle: LoginThrottle | None = None) -> web.Application:
    """The aiohttp application of the API and the console. ``secure_cookies``: behind TLS."""
    sessions = sessions or Sessions()
    throttle = throttle or LoginThrottle()
    park = backend.park
    page = (STATIC / "index.html").read_bytes()

    def principal(request: web.Request) -> Principal | None:
        auth = _header(request, "Authorization")
        if auth:
            scheme, _, given = auth.partition(" ")
            if scheme.lower() != "bearer" or not given:
                return None
            if backend.token and _same(given, backend.token):
                return service_principal()
            backend.users.refresh()
            user = backend.users.by_token(given)
            return Principal(user.name, user.role, "token") if user else None
        sid = request.cookies.get(COOKIE, "")
        if not sid or not sid.isascii() or len(sid) > 100:
            return None
        s = sessions.get(sid)
        if s is None:
            return None
        backend.users.refresh()
        user = backend.users.users.get(s.user)
        if user is None:  # removed meanwhile
            sessions.close(sid)
            return None
        return Principal(user.name, user.role, "session", s.csrf)

    routes: list[Route] = []

    def route(method: str, path: str, role: str | None, summary: str, *, params: tuple[Param, ...] = (),
              body: Body | None = None, answer: Answer | None = None, errors: tuple[type[Exception], ...] = ()
              ) -> Callable[[Handler], Handler]:
        """Declare a route: everything the document says of it is given here, once."""
        def deco(fn: Handler) -> Handler:
            routes.append(Route(method, path, role, fn, fn.__name__, summary, params, body,
                                answer or Answer("ok", {"type": "object"}), errors))
            return fn
        return deco

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        """Client errors as ``{"error"}`` with the status of their type, server faults logged once; security
        headers on every answer."""
        try:
            resp = await handler(request)
        except (ClientError, UsageError) as exc:
            resp = error(str(exc), status_of(type(exc)))
            if isinstance(exc, TooSlow | TooLarge):  # the rest of that body is not read: the connection cannot go on
                resp.force_close()
        except web.HTTPException as exc:
            if exc.status >= 500:
                raise
            resp = error(exc.reason, exc.status)
            for h in ("Allow", "Location"):
                if h in exc.headers:
                    resp.headers[h] = exc.headers[h]
        except (asyncio.CancelledError, ConnectionError):
            raise
        except WriteError as exc:
            log.warning("InfluxDB not available for %s: %s", request.path[:80], exc)
            resp = error(f"InfluxDB is not available: {exc}", status_of(type(exc)))
        except Exception:
            log.exception("fault answering %s %s", request.method, request.path[:80])
            resp = error("internal error (logged by the engine)", 500)
        if not resp.prepared:
            resp.headers.setdefault("Content-Security-Policy", CSP)
            resp.headers.setdefault("X-Content-Type-Options", "nosniff")
            resp.headers.setdefault("Referrer-Policy", "no-referrer")
            resp.headers.setdefault("Cache-Control", "no-store")
        return resp

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        info = request.match_info.route
        spec: Route | None = getattr(info, "smartpark_route", None)
        if spec is None and request.path.startswith("/static/"):
            return await handler(request)
        role = spec.role if spec else "viewer"
        if role is None:
            return await handler(request)
        who = principal(request)
        if who is None:
            return error("log in, or give a valid bearer token", 401)
        if request.method not in ("GET", "HEAD", "OPTIONS") and not csrf_ok(who, request.headers.get(CSRF_HEADER)):
            return error(f"missing or wrong {CSRF_HEADER} header", 403)
        if not who.allows(role):
            return error(f"{who.user} ({who.role}) may not do this: needs {role}", 403)
        request[PRINCIPAL] = who
        return await handler(request)

    # ------------------------------------------------------------------ public: the page, login, the document
    async def index(request: web.Request) -> web.Response:
        return web.Response(body=page, content_type="text/html", charset="utf-8")

    route("GET", "/", None, "The console's login page", answer=_HTML)(index)
    # notification links: the console opens that alarm after login
    route("GET", "/alarm/{id:.+}", None, "The console, opening an alarm after login", params=(ALARM_ID,),
          answer=_HTML)(index)

    @route("GET", "/openapi.json", None, "This document", answer=Answer("OpenAPI 3.1", {"type": "object"}))
    async def openapi_json(request: web.Request) -> web.Response:
        return web.json_response(document)

    @route("POST", "/api/login", None, "Log in: sets the session cookie", body=Body((USER, PASSWORD),
                                                                                    ("user", "password")),
           answer=Answer("the session, as GET /api/session", {"type": "object"}))
    async def login(request: web.Request) -> web.Response:
        body = await read_body(request)
        name = USER.text(body, required=True) or ""
        password = PASSWORD.text(body, required=True) or ""
        wait = throttle.delay(name)
        if wait:
            await asyncio.sleep(wait)
        backend.users.refresh()
        loop = asyncio.get_running_loop()
        user = await loop.run_in_executor(None, backend.users.authenticate, name, password)  # scrypt off the loop
        if user is None:
            throttle.failed(name)
            log.warning("failed console login for %r from %s", name[:64], request.remote)
            return error("wrong user or password", 401)
        throttle.succeeded(name)
        sid, s = sessions.open(user.name)
        resp = web.json_response({"user": user.name, "role": user.role, "csrf": s.csrf})
        resp.set_cookie(COOKIE, sid, httponly=True, samesite="Strict", secure=secure_cookies, path="/")
        log.info("console login: %s (%s)", user.name, user.role)
        return resp

    # ------------------------------------------------------------------ any authenticated user
    @route("GET", "/api/session", "viewer", "The session's user, role and CSRF token",
           answer=Answer("the session", {"type": "object", "properties": {
               "user": {"type": "string"}, "role": {"type": "string"}, "csrf": {"type": "string"}}}))
    async def session(request: web.Request) -> web.Response:
        who: Principal = request[PRINCIPAL]
        return web.json_response({"user": who.user, "role": who.role, "csrf": who.csrf})

    @route("POST", "/api/logout", "viewer", "End the session")
    async def logout(request: web.Request) -> web.Response:
        sessions.close(request.cookies.get(COOKIE, ""))
        resp = web.json_response({"ok": True})
        resp.del_cookie(COOKIE, path="/")
        return resp

    @route("GET", "/alarms", "viewer", "Active alarms (every state but NORM), most important first",
           answer=Answer("the active alarms", {"type": "array", "items": _ACTIVE}))
    async def get_alarms(request: web.Request) -> web.Response:
        return web.json_response(backend.active())

    @route("GET", "/status", "viewer",
           "Counters: messages received, readings, invalid, events, written; per notifier; backlogs")
    async def get_status(request: web.Request) -> web.Response:
        return web.json_response({**backend.status(), "consoles": backend.hub.clients})

    @route("GET", "/api/park", "viewer", "The park model: sites, assets, sensors with names (en, zh), units and "
                                         "limits; and the contract's vocabularies (states, events, priorities) "
                                         "under vocabulary")
    async def get_park(request: web.Request) -> web.Response:
        return web.json_response({**park_model(park), "vocabulary": vocabulary()})

    last_header = Text("Last-Event-ID", "the last event seen", 18, where="header")
    last_query = Text("last", "the last event seen (for a new EventSource)", 18)

    @route("GET", "/api/events", "viewer", "Server-Sent Events: every alarm event as it happens; Last-Event-ID "
                                           "catches up",
           params=(last_header, last_query),
           answer=Answer("the event stream", media=("text/event-stream",)), errors=(ClientError,))
    async def events(request: web.Request) -> web.StreamResponse:
        raw = _header(request, last_header.name) or last_query.read(request)
        last: int | None = None
        if raw:
            if not raw.isdigit() or len(raw) > last_header.max_length:
                raise ClientError("Last-Event-ID is the number of an event")
            last = int(raw)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no", "Content-Security-Policy": CSP})
        with backend.hub.subscribe(last) as sub:  # before the first byte: nothing published meanwhile is missed
            # the hello carries the current position, so that a reconnect asks for what followed it
            start = backend.hub.last_id if last is None else last
            try:
                await resp.prepare(request)
                await resp.write(f"retry: 1000\nid: {start}\nevent: hello\ndata: {{}}\n\n".encode())
                while True:
                    frames = await sub.get(15.0)
                    await resp.write(b"".join(f for _, f in frames) if frames else b": keep-alive\n\n")
            except ConnectionError:
                pass  # the console went away
        return resp

    alarm_param = Text("id", "site/asset/sensor/rule")

    @route("GET", "/api/alarm", "viewer", "One alarm (query id): its state and its event history",
           params=(alarm_param,), errors=(NotFound, WriteError))
    async def get_alarm(request: web.Request) -> web.Response:
        aid = alarm_id(alarm_param.read(request))
        row = next((a for a in backend.active() if a["id"] == aid), None)
        site, asset, sensor, rule = aid.split("/", 3) if aid.count("/") == 3 else (*aid.split("/"), "")
        if park.lookup(site, asset, sensor) is None:
            raise NotFound(f"unknown alarm id {aid!r}")
        q = (f"SELECT * FROM {ALARM} WHERE site = {quote_literal(site)} AND asset = {quote_literal(asset)} AND "
             f"sensor = {quote_literal(sensor)} AND rule = {quote_literal(rule)} ORDER BY time DESC LIMIT 500")
        return web.json_response({"id": aid, "active": row, "events": [_event_row(r) for r in await backend.rows(q)]})

    sensor_param = Text("sensor", "site/asset/sensor")

    @route("GET", "/api/trend", "viewer", "A sensor's readings (query sensor, hours) with its limits and an "
                                          "alarm's events",
           params=(sensor_param, HOURS_BACK, UNTIL), errors=(NotFound, WriteError))
    async def trend(request: web.Request) -> web.Response:
        key = sensor_param.read(request)
        if not key:
            raise ClientError("parameter sensor is required (site/asset/sensor)")
        parts = key.split("/")
        ref = park.lookup(*parts) if len(parts) == 3 else None
        if ref is None:
            raise NotFound(f"unknown sensor {key!r} (site/asset/sensor)")
        hours = HOURS_BACK.read(request)
        end = int(UNTIL.read(request, time.time() * 1000))
        start = end - int(hours * 3_600_000)
        step = max(1, int(hours * 3600 / 600))  # at most ~600 points
        where = (f"site = {quote_literal(ref.site)} AND asset = {quote_literal(ref.asset)} AND "
                 f"sensor = {quote_literal(ref.sensor.id)} AND time > {start}ms AND time <= {end}ms")
        points = await backend.rows(f"SELECT mean(value) AS value, min(value) AS lo, max(value) AS hi FROM {READING} "
                                    f"WHERE {where} GROUP BY time({step}s) fill(none)")
        marks = await backend.rows(f"SELECT * FROM {ALARM} WHERE {where}")
        s = ref.sensor
        limits = dict(s.limits.items())
        limits.update({r.rule: r.limit for r in s.regulatory if isinstance(r.limit, int | float)})
        return web.json_response({
            "sensor": key, "unit": s.unit, "start": start, "end": end, "limits": limits, "range": list(s.range),
            "points": [[int(p["time"]), p.get("value"), p.get("lo"), p.get("hi")] for p in points],
            "events": [_event_row(r) for r in marks]})

    @route("GET", "/api/history", "viewer", "Events by site, sensor, time range (since, until: epoch ms), event "
                                            "and operator; format=csv for a CSV file",
           params=HISTORY_PARAMS, answer=Answer("the events, newest first", {"type": "array"},
                                                ("application/json", "text/csv")), errors=(WriteError,))
    async def history(request: web.Request) -> web.StreamResponse:
        rows = await backend.rows(_history_query(request))
        events = [_event_row(r) for r in rows]
        if HISTORY_FORMAT.read(request) == "csv":
            out = io.StringIO()
            cols = ["time", "id", "site", "asset", "sensor", "rule", "priority", "event", "state", "value", "limit",
                    "operator", "message"]
            w = csv.writer(out)
            w.writerow(cols)
            for e in events:
                w.writerow([_csv_safe(e.get(c)) for c in cols])
            return web.Response(text=out.getvalue(), content_type="text/csv", charset="utf-8",
                                headers={"Content-Disposition": 'attachment; filename="alarm-history.csv"'})
        return web.json_response(events)

    shift_hours = Number("hours", "the shift's hours back from until", 0.1, 24 * 7, 8.0)

    @route("GET", "/api/handover", "viewer", "The shift handover (query hours, default 8): active, shelved and "
                                             "out-of-service alarms, the shift's events, operator actions and KPIs",
           params=(shift_hours, UNTIL), errors=(WriteError,))
    async def handover(request: web.Request) -> web.Response:
        hours = shift_hours.read(request)
        end = int(UNTIL.read(request, time.time() * 1000))
        start = end - int(hours * 3_600_000)
        rows = await backend.rows(alarm_query(start, end))  # the shift's events, and before it for staleness
        active = backend.active()
        events = [_event_row(r) for r in rows if r["time"] > start]
        return web.json_response({
            "start": start, "end": end,
            "active": [a for a in active if a["state"] in ACTIVE_STATES],
            "shelved": [a for a in active if a["state"] == SHLVD],
            "out_of_service": [a for a in active if a["state"] == OOSRV],
            "events": events, "actions": [e for e in events if e.get("operator")],
            "kpis": kpis.summary(rows, start, end)})

    kpi_hours = Number("hours", "hours back from until", 0.1, 24 * 31, 24.0)

    @route("GET", "/api/kpis", "viewer", "The alarm-system KPIs of a period (query hours, default 24): flood, "
                                         "chattering and stale as smartpark.kpis defines them, with their thresholds",
           params=(kpi_hours, UNTIL), answer=Answer("the KPIs", _KPIS), errors=(WriteError,))
    async def get_kpis(request: web.Request) -> web.Response:
        end = int(UNTIL.read(request, time.time() * 1000))
        start = end - int(kpi_hours.read(request) * 3_600_000)
        rows = await backend.rows(alarm_query(start, end))
        return web.json_response({**kpis.summary(rows, start, end), "thresholds": thresholds()})

    @route("GET", "/api/overview", "viewer", "Each sensor's latest value against its limits, stale sensors marked",
           errors=(WriteError,))
    async def overview(request: web.Request) -> web.Response:
        rows = await backend.rows(f"SELECT last(value) AS value FROM {READING} WHERE time > now() - 7d "
                                  "GROUP BY site, asset, sensor")
        latest = {(r.get("site"), r.get("asset"), r.get("sensor")): r for r in rows}
        now = int(time.time() * 1000)
        alarms: dict[str, list[dict[str, Any]]] = {}
        for a in backend.active():
            alarms.setdefault(f"{a['site']}/{a['asset']}/{a['sensor']}", []).append(
                {"id": a["id"], "rule": a["rule"], "state": a["state"], "priority": a["priority"]})
        out = []
        for ref in park:
            r = latest.get((ref.site, ref.asset, ref.sensor.id))
            ts = int(r["time"]) if r else None
            out.append({"key": ref.key, "value": r.get("value") if r else None, "ts": ts,
                        "stale": ts is None or now - ts > ref.sensor.interval_s * 3000,
                        "alarms": alarms.get(ref.key, [])})
        return web.json_response({"now": now, "sensors": out})

    # ------------------------------------------------------------------ operator actions
    async def _do(who: Principal, action: str, aid: str, body: dict[str, Any]) -> AlarmEvent:
        if not backend.has_alarm(aid):
            raise NotFound(f"unknown alarm id {aid!r} (site/asset/sensor/rule)")
        OPERATOR.text(body)  # accepted for older callers, bounded, never audited
        comment = COMMENT.text(body)
        clean: dict[str, Any] = {"id": aid, "operator": who.user, "comment": comment}
        if action == "shelve":
            clean["duration_s"] = float(body["duration_s"])
            clean["max_shelve_s"] = MAX_SHELVE_S.get(who.role, 0.0)
        return await backend.act(action, clean)

    def action_route(action: str) -> None:
        summary, body = _ACTION_DOC[action]

        async def post_action(request: web.Request) -> web.Response:
            who: Principal = request[PRINCIPAL]
            aid = alarm_id(request.match_info["id"])
            body = await read_body(request)
            if action == "shelve":
                duration = body.get(DURATION.name)
                if isinstance(duration, bool) or not isinstance(duration, int | float):
                    raise ClientError("duration_s is a number of seconds")
                cap = MAX_SHELVE_S.get(who.role, 0.0)
                if not 0 < duration <= cap:
                    refusal = Forbidden if duration > 0 else ClientError
                    raise refusal(f"{who.role}s shelve for more than 0 and at most {cap / 3600:g} h")
            ev = await _do(who, action, aid, body)
            return web.json_response(ev.to_dict())

        post_action.__name__ = f"action_{action}"
        route("POST", f"/alarms/{{id:.+}}/{action}", ACTION_ROLE[action], summary, params=(ALARM_ID,), body=body,
              answer=Answer("the event", _EVENT), errors=(Forbidden, NotFound))(post_action)

    for name in ACTIONS:
        action_route(name)

    @route("POST", "/api/ack", "operator", "Acknowledge several alarms", body=Body((IDS, COMMENT)),
           answer=Answer("acknowledged ids and refused ones with why", {"type": "object", "properties": {
               "acked": {"type": "array", "items": {"type": "string"}}, "refused": {"type": "object"}}}))
    async def ack_many(request: web.Request) -> web.Response:
        who: Principal = request[PRINCIPAL]
        body = await read_body(request)
        ids = body.get(IDS.name)
        if not isinstance(ids, list) or len(ids) > MAX_BULK or not all(isinstance(i, str) for i in ids):
            raise ClientError(f"ids is a list of at most {MAX_BULK} alarm ids")
        done, refused = [], {}
        for raw in ids:
            try:
                aid = alarm_id(raw)
                await _do(who, "ack", aid, {"comment": body.get("comment")})
                done.append(aid)
            except (UsageError, ClientError) as exc:
                refused[raw[:MAX_ID]] = str(exc)
        return web.json_response({"acked": done, "refused": refused})

    # ------------------------------------------------------------------ compliance reports (reports/)
    async def report(request: web.Request, kind: str, period: Text) -> web.Response:
        fmt = FORMAT.read(request)
        site = SITE.read(request) or None
        name, data = await backend.report(kind, period.read(request), site, fmt)
        disposition = "inline" if fmt in ("pdf", "html") else "attachment"
        return web.Response(body=data, content_type=REPORT_TYPES.get(fmt, "application/octet-stream"),
                            charset="utf-8" if fmt in ("csv", "html") else None,
                            headers={"Content-Disposition": f'{disposition}; filename="{name}"'})

    day = Text("date", "YYYY-MM-DD, default yesterday in the park's time zone", 10)
    month = Text("month", "YYYY-MM, default last month", 10)

    @route("GET", "/api/reports/daily", "viewer", "The compliance report of a day (query date, site, format), "
                                                  "CONTRACT §11",
           params=(day, SITE, FORMAT), answer=_REPORT, errors=(UsageError, WriteError))
    async def report_daily(request: web.Request) -> web.Response:
        return await report(request, "daily", day)

    @route("GET", "/api/reports/monthly", "viewer", "The compliance report of a month (query month, site, "
                                                    "format), CONTRACT §11",
           params=(month, SITE, FORMAT), answer=_REPORT, errors=(UsageError, WriteError))
    async def report_monthly(request: web.Request) -> web.Response:
        return await report(request, "monthly", month)

    # ------------------------------------------------------------------ admin
    @route("GET", "/api/users", "admin", "Users and roles",
           answer=Answer("the users", {"type": "array", "items": {"type": "object"}}))
    async def users(request: web.Request) -> web.Response:
        backend.users.refresh()
        return web.json_response([{"name": u.name, "role": u.role, "tokens": len(u.tokens)}
                                  for u in backend.users.users.values()])

    document = openapi([*routes, *static_routes()], INFO, SECURITY_SCHEMES)
    app = web.Application(middlewares=[guard, auth], client_max_size=MAX_BODY)
    for r in routes:
        assert r.handler is not None  # every declared route but the static folder has its handler here
        resource_route = app.router.add_route(r.method, r.path, r.handler)
        resource_route.smartpark_route = r  # type: ignore[attr-defined]  # the auth middleware reads it
    app.router.add_static("/static", STATIC, name="static")
    app[ROUTES] = routes
    app[OPENAPI_DOC] = document

    async def release_sessions(_app: web.Application) -> None:
        sessions.release()

    app.on_cleanup.append(release_sessions)
    return app


def park_model(park: Park) -> dict[str, Any]:
    return {"id": park.park.id, "name": park.park.name, "name_zh": park.park.name_zh,
            "timezone": park.park.timezone,
            "sites": [{"id": s.id, "name": s.name, "name_zh": s.name_zh, "assets": [
                {"id": a.id, "name": a.name, "name_zh": a.name_zh, "sensors": [
                    {"id": x.id, "name": x.name, "name_zh": x.name_zh, "unit": x.unit, "range": list(x.range),
                     "interval_s": x.interval_s, "limits": dict(x.limits.items()),
                     "regulatory": [{"rule": r.rule, "limit": r.limit, "source": r.source} for r in x.regulatory]}
                    for x in a.sensors]} for a in s.assets]} for s in park.sites]}


def _event_row(r: dict[str, Any]) -> dict[str, Any]:
    out = {k: r.get(k) for k in ("site", "asset", "sensor", "rule", "priority", "event", "state", "value", "limit",
                                 "operator", "message")}
    out["time"] = int(r["time"]) if r.get("time") is not None else None
    out["id"] = f"{r.get('site')}/{r.get('asset')}/{r.get('sensor')}/{r.get('rule')}"
    return out


def _history_query(request: web.Request) -> str:
    until = int(UNTIL.read(request, time.time() * 1000))
    since = int(SINCE.read(request, until - 24 * 3_600_000))
    if since >= until:
        raise ClientError("since lies before until")
    conds = [f"time > {since}ms", f"time <= {until}ms"]
    for p in HISTORY_FILTERS:
        value = p.read(request)
        if value:
            conds.append(f"{p.name} = {quote_literal(value)}")
    limit = int(HISTORY_LIMIT.read(request))
    return f"SELECT * FROM {ALARM} WHERE {' AND '.join(conds)} ORDER BY time DESC LIMIT {limit}"


def _csv_safe(value: Any) -> Any:
    """Text that a spreadsheet would run as a formula is quoted with a leading apostrophe."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value


def _same(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), token.encode())


class _ClientErrors(RequestHandler):
    """What the HTTP parser refuses (a request line over 8 KiB, a malformed header) answers 400 with
    ``{"error"}`` and a debug line, rather than text and an error-level traceback per request."""

    __slots__ = ()

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if status >= 500:
            return super().handle_error(request, status, exc, message)
        self.logger.debug("refused request from %s: %s", request.remote, (message or "")[:200])
        text = (message or "bad request").split(":", 1)[0][:200]
        resp = web.json_response({"error": f"malformed request: {text}"}, status=status)
        resp.force_close()
        return resp


class GuardedSite(web.TCPSite):
    """A TCP site whose connections answer parser errors as JSON (:class:`_ClientErrors`)."""

    async def start(self) -> None:
        server = self._runner.server
        assert server is not None

        def connection() -> RequestHandler:
            handler = server()
            handler.__class__ = _ClientErrors
            return handler

        real = self._runner._server
        self._runner._server = connection  # type: ignore[assignment]  # TCPSite.start reads it once
        try:
            await super().start()
        finally:
            self._runner._server = real


def runner_args() -> dict[str, Any]:
    """Arguments of the :class:`web.AppRunner`: an idle or slow connection is closed after HEADER_READ_S."""
    # lingering_time: how long the unread rest of a refused body is drained before the connection closes
    return {"access_log": None, "keepalive_timeout": HEADER_READ_S, "lingering_time": 1.0, "shutdown_timeout": 1.0}


__all__ = [
    "ACTIONS",
    "ACTION_ROLE",
    "MAX_BODY",
    "MAX_TEXT",
    "OPENAPI_DOC",
    "ROUTES",
    "GuardedSite",
    "Route",
    "make_app",
    "park_model",
    "read_body",
    "runner_args",
]
