"""The operator HTTP API (aiohttp.web): the active list and the ISA-18.2 operator actions.

Every route needs ``Authorization: Bearer <token>`` (CONTRACT §6) except ``GET /openapi.json``.
An alarm id contains slashes (``site/asset/sensor/rule``): it is matched by a path converter, and may be
URL-encoded too. A bad request (unknown alarm, shelving without a reason) answers 4xx with
``{"error": ...}``; the CLI turns it into exit code 2.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from smartpark.errors import UsageError

from .events import AlarmEvent

Action = Callable[[str, dict[str, Any]], Awaitable[AlarmEvent]]

ACTIONS = ("ack", "shelve", "unshelve", "out-of-service", "in-service")

_EVENT = {
    "type": "object",
    "required": ["id", "site", "asset", "sensor", "rule", "priority", "event", "state", "ts", "message"],
    "properties": {
        "id": {"type": "string", "examples": ["wwtp/effluent/cod/hh"]},
        "site": {"type": "string"}, "asset": {"type": "string"}, "sensor": {"type": "string"},
        "rule": {"type": "string"}, "priority": {"enum": ["high", "medium", "low"]},
        "event": {"enum": ["raised", "cleared", "acked", "shelved", "unshelved", "out_of_service", "in_service"]},
        "state": {"enum": ["NORM", "UNACK", "ACKED", "RTNUN", "SHLVD", "OOSRV"]},
        "value": {"type": ["number", "null"]}, "limit": {"type": ["number", "null"]},
        "ts": {"type": "integer", "description": "epoch milliseconds"},
        "message": {"type": "string"}, "operator": {"type": ["string", "null"]},
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


def _action(summary: str, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "security": [{"bearer": []}],
            "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"},
                            "description": "site/asset/sensor/rule (slashes allowed, or URL-encoded)"}],
            "requestBody": {"content": {"application/json": {"schema": {"type": "object", "properties": body}}}},
            "responses": {"200": {"description": "the event", "content": {"application/json": {"schema": _EVENT}}},
                          "400": {"description": "bad request (e.g. no reason)"},
                          "401": {"description": "no or wrong bearer token"},
                          "404": {"description": "unknown alarm id"}},
        }
    }


_OPERATOR = {"operator": {"type": "string"}, "comment": {"type": "string"}}
OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "smartpark alarm engine operator API", "version": "1",
             "description": "ISA-18.2 alarm list and operator actions; every action is audited into the "
                            "`alarm` measurement (CONTRACT §3, §5)."},
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    "paths": {
        "/alarms": {"get": {"summary": "Active alarms (every state but NORM), most important first",
                            "security": [{"bearer": []}],
                            "responses": {"200": {"description": "the list", "content": {"application/json": {
                                "schema": {"type": "array", "items": _ACTIVE}}}},
                                "401": {"description": "no or wrong bearer token"}}}},
        "/alarms/{id}/ack": _action("Acknowledge (UNACK -> ACKED, RTNUN -> NORM)", _OPERATOR),
        "/alarms/{id}/shelve": _action("Shelve with a reason for a bounded time (unshelved automatically)",
                                       {**_OPERATOR, "duration_s": {"type": "number"}}),
        "/alarms/{id}/unshelve": _action("Unshelve", _OPERATOR),
        "/alarms/{id}/out-of-service": _action("Take out of service (needs a reason)", _OPERATOR),
        "/alarms/{id}/in-service": _action("Return to service", _OPERATOR),
        "/status": {"get": {"summary": "Counters: messages received, readings, invalid, events, written; per notifier "
                                       "queued/sent/retries/failed/dropped; floods; backlogs",
                            "security": [{"bearer": []}],
                            "responses": {"200": {"description": "counters", "content": {"application/json": {
                                "schema": {"type": "object"}}}}}}},
        "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1"}}}},
    },
}


def make_app(token: str, active: Callable[[], list[dict[str, Any]]], act: Action,
             status: Callable[[], dict[str, Any]] | None = None) -> web.Application:
    """The aiohttp application; ``act(action, body)`` performs an operator action and returns its event."""

    @web.middleware
    async def auth(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                   ) -> web.StreamResponse:
        if request.path != "/openapi.json":
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return web.json_response({"error": "missing or wrong bearer token"}, status=401)
        return await handler(request)

    async def get_alarms(request: web.Request) -> web.Response:
        return web.json_response(active())

    async def post_action(request: web.Request) -> web.Response:
        alarm_id = unquote(request.match_info["id"])
        action = request.match_info["action"]
        if action not in ACTIONS:
            return web.json_response({"error": f"unknown action {action!r}"}, status=404)
        try:
            body = await request.json() if request.can_read_body else {}
        except json.JSONDecodeError:
            return web.json_response({"error": "the body is not JSON"}, status=400)
        if not isinstance(body, dict):
            return web.json_response({"error": "the body is a JSON object"}, status=400)
        body["id"] = alarm_id
        try:
            ev = await act(action, body)
        except UsageError as exc:
            status = 404 if "unknown alarm" in str(exc) else 400
            return web.json_response({"error": str(exc)}, status=status)
        return web.json_response(ev.to_dict())

    async def openapi(request: web.Request) -> web.Response:
        return web.json_response(OPENAPI)

    async def get_status(request: web.Request) -> web.Response:
        return web.json_response(status() if status else {})

    app = web.Application(middlewares=[auth])
    app.router.add_get("/alarms", get_alarms)
    app.router.add_post("/alarms/{id:.+}/{action:ack|shelve|unshelve|out-of-service|in-service}", post_action)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/status", get_status)
    return app
