"""Who is asking (CONTRACT §8): sessions with a CSRF token, bearer tokens, roles, slowed-down failed logins.

A :class:`Principal` is the authenticated user of a request: a console session (cookie + ``X-CSRF-Token`` on
every state change), the service token (acts as ``admin``, audited as ``service``) or a personal token (acts
as its user). Sessions outlive an engine restart (:class:`Sessions` with a ``path``): the control room is not
logged out in the middle of an incident because the engine was upgraded or restarted by its supervisor.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smartpark.timing import Backoff

from ..users import ROLES, SERVICE_USER, rank

COOKIE = "smartpark_session"
CSRF_HEADER = "X-CSRF-Token"
SESSION_IDLE_S = 8 * 3600.0  # a shift; any request renews it
SESSION_MAX_S = 24 * 3600.0
SEEN_WRITE_S = 60.0  # how stale a stored session's last use may be (a restart may end it that much earlier)

log = logging.getLogger(__name__)
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
    stored_seen: float = 0.0  # ``seen`` as last written to the store


def _key(sid: str) -> str:
    """What the store keeps of a session id: its SHA-256, so that a copy of the file logs no one in."""
    return hashlib.sha256(sid.encode()).hexdigest()


@dataclass
class Sessions:
    """Session id -> :class:`Session`, expired after ``idle_s`` without a request or ``max_s`` in all.

    With a ``path``, every session is also kept in a small SQLite file (session ids only as their SHA-256,
    mode 0600), so a restarted engine knows them; the last use is written at most every ``SEEN_WRITE_S``.
    The file is a convenience, not a record: when it cannot be written, sessions go on in memory and the log
    says so once. Times are wall-clock seconds, since they must mean the same after a restart."""

    idle_s: float = SESSION_IDLE_S
    max_s: float = SESSION_MAX_S
    clock: Callable[[], float] = time.time
    path: Path | None = None
    _by_id: dict[str, Session] = field(default_factory=dict)
    _db: sqlite3.Connection | None = field(default=None, repr=False)
    _broken: bool = False

    def _store(self) -> sqlite3.Connection | None:
        if self.path is None or self._broken:
            return None
        if self._db is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
                os.close(fd)
                db = sqlite3.connect(self.path, isolation_level=None)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute("CREATE TABLE IF NOT EXISTS session (key TEXT PRIMARY KEY, user TEXT NOT NULL, "
                           "csrf TEXT NOT NULL, created REAL NOT NULL, seen REAL NOT NULL)")
                self._db = db
            except (OSError, sqlite3.Error) as exc:
                self._fail(exc)
        return self._db

    def release(self) -> None:
        """Close the file (the app's cleanup: SQLite then folds its write-ahead log into it and removes the log);
        a later use opens it again."""
        db, self._db = self._db, None
        if db is not None:
            try:
                db.close()
            except sqlite3.Error as exc:
                log.warning("console sessions file %s: closing it failed: %s", self.path, exc)

    def _fail(self, exc: BaseException) -> None:
        if not self._broken:
            log.error("console sessions file %s not usable (%s): sessions are kept in memory only, an engine "
                      "restart will log everyone out", self.path, exc)
        self._broken = True

    def _run(self, sql: str, args: tuple[object, ...]) -> list[tuple[Any, ...]]:
        db = self._store()
        if db is None:
            return []
        try:
            return db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            self._fail(exc)
            return []

    def _expired(self, s: Session, now: float) -> bool:
        return now - s.seen > self.idle_s or now - s.created > self.max_s

    def open(self, user: str) -> tuple[str, Session]:
        self._expire()
        sid = secrets.token_urlsafe(32)
        now = self.clock()
        s = Session(user, secrets.token_urlsafe(24), now, now, now)
        self._by_id[sid] = s
        self._run("INSERT OR REPLACE INTO session VALUES (?, ?, ?, ?, ?)", (_key(sid), user, s.csrf, now, now))
        return sid, s

    def get(self, sid: str) -> Session | None:
        s = self._by_id.get(sid)
        if s is None:
            if not sid or len(sid) > 256:
                return None
            rows = self._run("SELECT user, csrf, created, seen FROM session WHERE key = ?", (_key(sid),))
            if not rows:
                return None
            user, csrf, created, seen = rows[0]
            s = Session(str(user), str(csrf), float(created), float(seen), float(seen))
            self._by_id[sid] = s
        now = self.clock()
        if self._expired(s, now):
            self.close(sid)
            return None
        s.seen = now
        if now - s.stored_seen >= SEEN_WRITE_S:
            s.stored_seen = now
            self._run("UPDATE session SET seen = ? WHERE key = ?", (now, _key(sid)))
        return s

    def close(self, sid: str) -> None:
        self._by_id.pop(sid, None)
        self._run("DELETE FROM session WHERE key = ?", (_key(sid),))

    def drop_user(self, user: str) -> None:
        for sid in [k for k, s in self._by_id.items() if s.user == user]:
            del self._by_id[sid]
        self._run("DELETE FROM session WHERE user = ?", (user,))

    def _expire(self) -> None:
        now = self.clock()
        if len(self._by_id) >= 1000:
            for sid in [k for k, s in self._by_id.items() if self._expired(s, now)]:
                del self._by_id[sid]
        self._run("DELETE FROM session WHERE seen < ? OR created < ?", (now - self.idle_s, now - self.max_s))


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
