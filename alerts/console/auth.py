"""Who is asking (CONTRACT §8): sessions with a CSRF token, bearer tokens, roles, slowed-down failed logins.

A :class:`Principal` is the authenticated user of a request: a console session (cookie + ``X-CSRF-Token`` on
every state change), the service token (acts as ``admin``, audited as ``service``) or a personal token (acts
as its user). Sessions live in memory: an engine restart logs everyone out, which is the safe direction.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from smartpark.timing import Backoff

from ..users import ROLES, SERVICE_USER, rank

COOKIE = "smartpark_session"
CSRF_HEADER = "X-CSRF-Token"
SESSION_IDLE_S = 8 * 3600.0  # a shift; any request renews it
SESSION_MAX_S = 24 * 3600.0
#: shelving bounds by role (CONTRACT §8): operators up to 8 h, supervisors and admins up to 7 days
MAX_SHELVE_S = {"operator": 8 * 3600.0, "supervisor": 7 * 86400.0, "admin": 7 * 86400.0}


@dataclass(frozen=True)
class Principal:
    user: str
    role: str
    via: str  # "session" | "token" | "service"
    csrf: str = ""

    def allows(self, role: str) -> bool:
        return rank(self.role) >= rank(role)


@dataclass
class Session:
    user: str
    csrf: str
    created: float
    seen: float


@dataclass
class Sessions:
    """Session id -> :class:`Session`, expired after ``idle_s`` without a request or ``max_s`` in all."""

    idle_s: float = SESSION_IDLE_S
    max_s: float = SESSION_MAX_S
    clock: Callable[[], float] = time.monotonic
    _by_id: dict[str, Session] = field(default_factory=dict)

    def open(self, user: str) -> tuple[str, Session]:
        self._expire()
        sid = secrets.token_urlsafe(32)
        now = self.clock()
        s = Session(user, secrets.token_urlsafe(24), now, now)
        self._by_id[sid] = s
        return sid, s

    def get(self, sid: str) -> Session | None:
        s = self._by_id.get(sid)
        if s is None:
            return None
        now = self.clock()
        if now - s.seen > self.idle_s or now - s.created > self.max_s:
            del self._by_id[sid]
            return None
        s.seen = now
        return s

    def close(self, sid: str) -> None:
        self._by_id.pop(sid, None)

    def drop_user(self, user: str) -> None:
        for sid in [k for k, s in self._by_id.items() if s.user == user]:
            del self._by_id[sid]

    def _expire(self) -> None:
        if len(self._by_id) < 1000:
            return
        for sid in list(self._by_id):
            self.get(sid)


@dataclass
class LoginThrottle:
    """Failed logins per user name: after 3 failures each attempt waits 2^(n-3) s (at most 30 s) before the
    password is even checked, so guessing one user's password is slow while other users log in freely."""

    clock: Callable[[], float] = time.monotonic
    free: int = 3
    cap_s: float = 30.0
    forget_s: float = 900.0
    _fails: dict[str, tuple[int, float]] = field(default_factory=dict)

    def delay(self, user: str) -> float:
        n, last = self._fails.get(user, (0, 0.0))
        if n and self.clock() - last > self.forget_s:
            self._fails.pop(user, None)
            return 0.0
        return 0.0 if n < self.free else Backoff(1.0, self.cap_s).bound(n - self.free)  # no jitter: a fixed delay

    def failed(self, user: str) -> None:
        if len(self._fails) > 10_000:  # names tried by a scanner: keep the table bounded
            self._fails.clear()
        n, _ = self._fails.get(user, (0, 0.0))
        self._fails[user] = (n + 1, self.clock())

    def succeeded(self, user: str) -> None:
        self._fails.pop(user, None)


def csrf_ok(principal: Principal, given: str | None) -> bool:
    """Bearer requests carry no cookie a browser could send for an attacker: only sessions need the header."""
    if principal.via != "session":
        return True
    return given is not None and given.isascii() and hmac.compare_digest(given.encode(), principal.csrf.encode())


def service_principal() -> Principal:
    return Principal(SERVICE_USER, ROLES[-1], "service")


__all__ = ["COOKIE", "CSRF_HEADER", "MAX_SHELVE_S", "LoginThrottle", "Principal", "Sessions", "csrf_ok",
           "service_principal"]
