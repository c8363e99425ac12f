"""How a route of the operator API is declared, and the OpenAPI document made from the declarations.

A :class:`Route` says once what a reader of the API needs: method, path, least role, summary, its query and path
parameters (:class:`Text`, :class:`Number`, which the handler reads through the same objects, so a bound in
the document is the bound enforced), its JSON body (:class:`Body` of :class:`Field`), its answer and the
errors it may give. :func:`openapi` turns the list of routes into the document served at ``/openapi.json``;
nothing in it is written a second time by hand.

The status of a refusal is the error's type: :class:`ClientError` and its subclasses carry theirs, and
:func:`status_of` gives the errors of the layers below theirs (an unknown alarm is 404, any other usage error
400, InfluxDB away 503). No status is ever read from a message's text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from smartpark.errors import UsageError, WriteError

from .alarm import UnknownAlarm

Json = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_TEXT = 2000  # characters of a comment or an operator name
MAX_ID = 200  # characters of an alarm or sensor id


# ---------------------------------------------------------------------------------------------- errors
class ClientError(Exception):
    """A request the client got wrong: answered ``{"error": message}`` with the type's ``status``, never logged
    as an error."""

    status = 400


class Forbidden(ClientError):
    """Allowed to the role, but not this far (an operator shelving beyond 8 h)."""

    status = 403


class NotFound(ClientError):
    """No such alarm, sensor or site."""

    status = 404


class TooSlow(ClientError):
    """The body did not arrive within the read bound."""

    status = 408


class TooLarge(ClientError):
    """The body is over the size bound."""

    status = 413


#: the answer to the errors of the layers below, by type; the first that matches wins (most specific first)
STATUS_OF_TYPE: tuple[tuple[type[Exception], int], ...] = ((UnknownAlarm, 404), (UsageError, 400),
                                                           (WriteError, 503))


def status_of(kind: type[Exception]) -> int:
    """The HTTP status that answers an error of type ``kind`` (500: a fault of ours)."""
    if issubclass(kind, ClientError):
        return kind.status
    return next((status for t, status in STATUS_OF_TYPE if issubclass(kind, t)), 500)


# ---------------------------------------------------------------------------------------------- declarations
@dataclass(frozen=True)
class Text:
    """A text parameter: in the query (read by :meth:`read`), the path or a header (read by aiohttp)."""

    name: str
    description: str
    max_length: int = MAX_ID
    default: str = ""
    where: str = "query"  # query | path | header

    def read(self, request: web.Request) -> str:
        value = request.query.get(self.name, self.default)
        if len(value) > self.max_length:
            raise ClientError(f"parameter {self.name} has at most {self.max_length} characters")
        return value

    def doc(self) -> Json:
        schema: Json = {"type": "string", "maxLength": self.max_length}
        if self.default:
            schema["default"] = self.default
        return {"name": self.name, "in": self.where, "required": self.where == "path",
                "description": self.description, "schema": schema}


@dataclass(frozen=True)
class Number:
    """A number in the query, within ``[lo, hi]``; ``default`` None: the handler gives it (e.g. now)."""

    name: str
    description: str
    lo: float
    hi: float
    default: float | None = None

    def read(self, request: web.Request, default: float | None = None) -> float:
        raw = request.query.get(self.name)
        fallback = self.default if default is None else default
        if raw is None or raw == "":
            if fallback is None:
                raise ClientError(f"parameter {self.name} is required")
            return fallback
        try:
            value = float(raw)
        except ValueError:
            raise ClientError(f"parameter {self.name} is a number") from None
        if not (math.isfinite(value) and self.lo <= value <= self.hi):
            raise ClientError(f"parameter {self.name} lies between {self.lo:g} and {self.hi:g}")
        return value

    def doc(self) -> Json:
        schema: Json = {"type": "number", "minimum": self.lo, "maximum": self.hi}
        if self.default is not None:
            schema["default"] = self.default
        return {"name": self.name, "in": "query", "required": False, "description": self.description,
                "schema": schema}


Param = Text | Number


@dataclass(frozen=True)
class Field:
    """A field of a JSON body: its schema in the document; a text field is read through :meth:`text`."""

    name: str
    schema: Json

    def text(self, body: dict[str, Any], *, required: bool = False) -> str | None:
        """The field as text within its ``maxLength``, or :class:`ClientError`; None when absent or empty."""
        value = body.get(self.name)
        if value is None or value == "":
            if required:
                raise ClientError(f"{self.name} is required")
            return None
        limit = int(self.schema.get("maxLength", MAX_TEXT))
        if not isinstance(value, str):
            raise ClientError(f"{self.name} is a string")
        if len(value) > limit:
            raise ClientError(f"{self.name} has at most {limit} characters, got {len(value)}")
        if "\x00" in value:
            raise ClientError(f"{self.name} contains a NUL character")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate (\\ud800): no UTF-8 store or webhook could carry it
            raise ClientError(f"{self.name} is not valid Unicode text") from None
        return value


@dataclass(frozen=True)
class Body:
    """A JSON object body."""

    fields: tuple[Field, ...]
    required: tuple[str, ...] = ()

    def schema(self) -> Json:
        return {"type": "object", "properties": {f.name: f.schema for f in self.fields},
                "required": list(self.required)}


@dataclass(frozen=True)
class Answer:
    """The 200 answer: what it is, its media types and (for JSON) its schema."""

    description: str
    schema: Json | None = None
    media: tuple[str, ...] = ("application/json",)

    def doc(self) -> Json:
        content = {m: ({"schema": self.schema} if self.schema and m == "application/json" else {})
                   for m in self.media}
        return {"description": self.description, "content": content}


@dataclass(frozen=True)
class Route:
    """One route of the API, declared once: the app, the ``auth`` middleware and the document read it."""

    method: str
    path: str  # aiohttp's form: ``{name}`` or ``{name:regex}``
    role: str | None  # the least role; None: public
    handler: Handler | None  # None: served by aiohttp itself (the static folder)
    name: str
    summary: str = ""
    params: tuple[Param, ...] = ()
    body: Body | None = None
    answer: Answer = field(default_factory=lambda: Answer("ok", {"type": "object"}))
    errors: tuple[type[Exception], ...] = ()  # what the handler may raise, beyond refusals every route has

    @property
    def doc_path(self) -> str:
        """The path as OpenAPI writes it: ``{name:regex}`` -> ``{name}``."""
        return re.sub(r"\{(\w+):[^{}]*\}", r"{\1}", self.path)

    def statuses(self) -> list[int]:
        """Every status other than 200 this route answers, from its declaration."""
        out = {status_of(e) for e in self.errors}
        if self.role is not None:
            out |= {401, 403}  # no session or token; a role below the least one, or no CSRF header
        if self.body is not None:
            out |= {400, 408, 413}
        if any(p.where == "query" if isinstance(p, Text) else True for p in self.params):
            out.add(400)
        return sorted(out)


# ---------------------------------------------------------------------------------------------- the document
_ERROR = {"description": "refused, with why", "content": {"application/json": {"schema": {
    "type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}}}}
SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {"session": []}]


def operation(r: Route) -> Json:
    """The OpenAPI operation of one route."""
    path_names = re.findall(r"\{(\w+)", r.path)
    declared = {p.name for p in r.params if isinstance(p, Text) and p.where == "path"}
    if set(path_names) != declared:
        raise ValueError(f"{r.method} {r.path}: path parameters {path_names} declared as {sorted(declared)}")
    who = "public" if r.role is None else f"role {r.role} or above"
    op: Json = {"operationId": r.name, "summary": f"{r.summary} ({who})"}
    if r.role is not None:
        op["security"] = SECURITY
    if r.params:
        op["parameters"] = [p.doc() for p in r.params]
    if r.body is not None:
        op["requestBody"] = {"required": bool(r.body.required),
                             "content": {"application/json": {"schema": r.body.schema()}}}
    op["responses"] = {"200": r.answer.doc(), **{str(s): _ERROR for s in r.statuses()}}
    return op


def openapi(routes: Sequence[Route], info: Json, security_schemes: Json) -> Json:
    """The OpenAPI 3.1 document of ``routes``, in their order."""
    paths: dict[str, Json] = {}
    for r in routes:
        ops = paths.setdefault(r.doc_path, {})
        if r.method.lower() in ops:
            raise ValueError(f"{r.method} {r.doc_path} is declared twice")
        ops[r.method.lower()] = operation(r)
    return {"openapi": "3.1.0", "info": info, "components": {"securitySchemes": security_schemes},
            "paths": paths}


__all__ = [
    "MAX_ID",
    "MAX_TEXT",
    "SECURITY",
    "STATUS_OF_TYPE",
    "Answer",
    "Body",
    "ClientError",
    "Field",
    "Forbidden",
    "Handler",
    "NotFound",
    "Number",
    "Route",
    "Text",
    "TooLarge",
    "TooSlow",
    "openapi",
    "operation",
    "status_of",
]
