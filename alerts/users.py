"""The console's users (CONTRACT §8): ``<state dir>/users.yaml``, roles, salted scrypt hashes, personal tokens.

The file holds no secret in the clear: passwords are stored as salted scrypt hashes (memory-hard, from the
standard library's :func:`hashlib.scrypt`), personal tokens as SHA-256 digests (a token is 32 random bytes:
a fast digest is enough for a secret that cannot be guessed). The engine re-reads the file when it changes,
so ``smartpark users add`` takes effect without a restart. Writes replace the file atomically, mode 0600.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import logging
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from smartpark.errors import ConfigError, UsageError

log = logging.getLogger(__name__)

#: each role includes the ones before it
ROLES = ("viewer", "operator", "supervisor", "admin")
#: the name the service token acts under in the audit trail (CONTRACT §8)
SERVICE_USER = "service"
NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,31}$")
MAX_PASSWORD = 1024
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def rank(role: str) -> int:
    return ROLES.index(role)


def hash_password(password: str) -> str:
    """``scrypt$n$r$p$salt$hash`` (base64), a fresh 16-byte salt each time."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        want = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(want))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class User:
    name: str
    role: str
    password: str = ""  # the scrypt hash
    tokens: list[str] = field(default_factory=list)  # SHA-256 digests of personal tokens

    def dump(self) -> dict[str, Any]:
        return {"role": self.role, "password": self.password, "tokens": list(self.tokens)}


def check_name(name: str) -> str:
    if not NAME.match(name) or name == SERVICE_USER:
        raise UsageError(f"bad user name {name!r}: lowercase letters, digits, . _ -, at most 32, not "
                         f"{SERVICE_USER!r}")
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise UsageError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    return role


def check_password(password: str) -> str:
    if len(password) < 8 or len(password) > MAX_PASSWORD:
        raise UsageError(f"a password has 8 to {MAX_PASSWORD} characters")
    return password


class UserStore:
    """``users.yaml`` as a dict of :class:`User`; :meth:`refresh` re-reads it when its mtime changed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.users: dict[str, User] = {}
        self._tokens: dict[str, str] = {}
        self._stamp: tuple[int, int] | None = None
        self._loaded = False
        self.refresh()

    def refresh(self) -> None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self.users, self._tokens, self._stamp = {}, {}, None
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        try:
            self._parse(stamp)
        except ConfigError as exc:
            if not self._loaded:
                raise
            self._stamp = stamp
            log.error("%s; the users as they were before stay in force", exc)

    def _parse(self, stamp: tuple[int, int]) -> None:
        try:
            data = yaml.safe_load(self.path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError, OSError) as exc:
            raise ConfigError(f"{self.path}: not a users file: {exc}", key="users") from None
        users: dict[str, User] = {}
        raw = data.get("users") if isinstance(data, dict) else None
        for name, entry in (raw or {}).items():
            if not isinstance(entry, dict) or entry.get("role") not in ROLES:
                raise ConfigError(f"{self.path}: user {name!r} needs a role of {', '.join(ROLES)}", key=str(name))
            users[str(name)] = User(str(name), entry["role"], str(entry.get("password") or ""),
                                    [str(t) for t in entry.get("tokens") or []])
        self.users = users
        self._tokens = {t: u.name for u in users.values() for t in u.tokens}
        self._stamp = stamp
        self._loaded = True

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump({"users": {n: u.dump() for n, u in sorted(self.users.items())}}, sort_keys=False)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._stamp = None
        self.refresh()

    # ------------------------------------------------------------------ the commands
    def add(self, name: str, role: str, password: str) -> User:
        check_name(name)
        check_role(role)
        if name in self.users:
            raise UsageError(f"user {name!r} exists (use users passwd, or remove it first)")
        user = User(name, role, hash_password(check_password(password)))
        self.users[name] = user
        self.save()
        return user

    def passwd(self, name: str, password: str) -> None:
        self.get(name).password = hash_password(check_password(password))
        self.save()

    def remove(self, name: str) -> None:
        self.get(name)
        del self.users[name]
        self.save()

    def issue_token(self, name: str) -> str:
        """A new personal token acting as ``name``; only its digest is kept."""
        token = "spt_" + secrets.token_urlsafe(32)
        self.get(name).tokens.append(token_digest(token))
        self.save()
        return token

    def get(self, name: str) -> User:
        user = self.users.get(name)
        if user is None:
            raise UsageError(f"no user {name!r}")
        return user

    # ------------------------------------------------------------------ the engine's questions
    def authenticate(self, name: str, password: str) -> User | None:
        """The user when the password matches (a hash is computed for unknown names too: same time)."""
        user = self.users.get(name)
        stored = user.password if user else _dummy()
        ok = verify_password(password, stored)
        return user if ok and user is not None else None

    def by_token(self, token: str) -> User | None:
        name = self._tokens.get(token_digest(token))
        return self.users.get(name) if name else None


@functools.cache
def _dummy() -> str:
    return hash_password(secrets.token_hex(8))


__all__ = ["ROLES", "SERVICE_USER", "User", "UserStore", "hash_password", "rank", "verify_password"]
