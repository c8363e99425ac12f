"""A small async client for InfluxDB's v1 HTTP API: line protocol on ``/write``, InfluxQL on ``/query``.

InfluxDB 1.x serves it natively, 2.x and 3.x through their v1 compatibility API, and Grafana's InfluxQL
data source speaks the same. Authentication: user and password from the URL (basic auth), or a token
(``Authorization: Token ...``). Every answer is sorted into an error that says what to do next:
400 with ``partial write`` -> :class:`PartialWriteError` (keep the good lines, dead-letter the rest);
413 -> split; 429 and 5xx -> retry, honouring ``Retry-After``; connection errors -> retry.
"""

from __future__ import annotations

import base64
import gzip
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp

from .config import InfluxTarget, retention_ms
from .errors import PartialWriteError, WriteError
from .lineproto import quote_ident
from .schema import RAW_RP, ROLLUP_RP

log = logging.getLogger(__name__)

_LINE_ERR = re.compile(r"unable to parse '(?P<line>.*?)': (?P<why>[^\n]*?)(?=(?: unable to parse '|\"?$|\\n))", re.S)
_DROPPED = re.compile(r"dropped=(\d+)")


class InfluxClient:
    """``async with InfluxClient(target) as db: await db.write(lines)``; keep-alive, gzip on large bodies
    sent over a network."""

    def __init__(self, target: InfluxTarget, *, timeout: float = 10.0, gzip_min_bytes: int | None = None,
                 gzip_level: int = 1) -> None:
        self.target = target
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        if gzip_min_bytes is None:
            # gzip saves a network, not a loopback: there it only costs CPU on both ends, which the collector
            # and InfluxDB share on one machine (docs/benchmarks/collector.md)
            gzip_min_bytes = 10**12 if _is_loopback(target.base_url) else 4096
        self._gzip_min = gzip_min_bytes
        self._gzip_level = gzip_level
        self._session: aiohttp.ClientSession | None = None
        self._entered = False
        headers = {}
        if target.token:
            headers["Authorization"] = f"Token {target.token}"
        elif target.username:
            basic = base64.b64encode(f"{target.username}:{target.password or ''}".encode()).decode()
            headers["Authorization"] = f"Basic {basic}"
        self._headers = headers
        self._retention: dict[str, Retention] = {}

    async def __aenter__(self) -> InfluxClient:
        if self._entered:
            raise RuntimeError("InfluxClient cannot be entered twice")
        self._entered = True
        self._session = aiohttp.ClientSession(
            timeout=self._timeout, headers=self._headers,
            connector=aiohttp.TCPConnector(limit=8, keepalive_timeout=60),
        )
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("InfluxClient used outside 'async with'")
        return self._session

    # ------------------------------------------------------------------ write
    async def write(self, lines: Sequence[str] | bytes, precision: str = "ms", db: str | None = None,
                    rp: str | None = None) -> None:
        """Write a batch (to retention policy ``rp``, else the database's default). Raises :class:`WriteError`
        (``retryable`` tells whether to try again) or :class:`PartialWriteError` with the indexes of rejected
        lines."""
        body = lines if isinstance(lines, bytes) else "\n".join(lines).encode()
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if len(body) >= self._gzip_min:
            body = gzip.compress(body, compresslevel=self._gzip_level)
            headers["Content-Encoding"] = "gzip"
        params = {"db": db or self.target.db, "precision": precision}
        if rp:
            params["rp"] = rp
        try:
            async with self.session.post(self.target.base_url + "/write", params=params, data=body,
                                         headers=headers) as resp:
                if resp.status == 204:
                    return
                text = await resp.text(errors="replace")
                raise self._write_error(resp.status, text, resp.headers.get("Retry-After"), lines)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise WriteError(f"InfluxDB unreachable: {exc!r}", status=0, retryable=True) from exc

    @staticmethod
    def _write_error(status: int, text: str, retry_after: str | None,
                     lines: Sequence[str] | bytes) -> WriteError:
        after: float | None = None
        if retry_after:
            try:
                after = max(0.0, float(retry_after))
            except ValueError:
                after = None
        msg = _error_text(text)
        if status == 400 and "partial write" in msg and not isinstance(lines, bytes):
            return PartialWriteError(msg, _rejected_lines(msg, lines))
        if status in (400, 401, 403, 404, 422):
            if status == 404 and "database not found" in msg:
                return WriteError(msg, status=status, retryable=True, retry_after=after)
            return WriteError(f"InfluxDB refused the write ({status}): {msg}", status=status, retryable=False)
        if status == 413:
            return WriteError(f"batch too large: {msg}", status=413, retryable=False)
        return WriteError(f"InfluxDB answered {status}: {msg}", status=status, retryable=True, retry_after=after)

    # ------------------------------------------------------------------ query
    async def query(self, q: str, db: str | Literal[False] | None = None, *, epoch: str | None = "ms",
                    method: str = "GET") -> list[dict[str, Any]]:
        """Run InfluxQL (in ``db``, else the target's database; ``db=False`` for a statement on the server,
        such as ``SHOW DATABASES``); returns the ``results`` list. Raises WriteError(retryable) when unreachable and
        ValueError on a query error."""
        params = {"q": q}
        if db is not False:
            params["db"] = db or self.target.db
        if epoch:
            params["epoch"] = epoch
        try:
            call = self.session.get if method == "GET" else self.session.post
            async with call(self.target.base_url + "/query", params=params) as resp:
                doc = await resp.json(content_type=None)
                if resp.status >= 500:
                    raise WriteError(f"InfluxDB answered {resp.status}", status=resp.status, retryable=True)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise WriteError(f"InfluxDB unreachable: {exc!r}", retryable=True) from exc
        if "error" in doc:
            raise ValueError(doc["error"])
        results: list[dict[str, Any]] = doc.get("results", [])
        for r in results:
            if "error" in r:
                raise ValueError(r["error"])
        return results

    async def rows(self, q: str, db: str | None = None) -> list[dict[str, Any]]:
        """The rows of every series of a single-statement query, as dicts (tags merged in)."""
        out: list[dict[str, Any]] = []
        for result in await self.query(q, db):
            for series in result.get("series", []):
                tags = series.get("tags", {})
                cols = series["columns"]
                for values in series["values"]:
                    row = dict(zip(cols, values, strict=True))
                    row.update(tags)
                    out.append(row)
        return out

    async def ping(self) -> bool:
        try:
            async with self.session.get(self.target.base_url + "/ping") as resp:
                return resp.status in (200, 204)
        except (TimeoutError, aiohttp.ClientError, OSError):
            return False

    async def ensure_database(self, db: str | None = None) -> bool:
        """Create the database when missing (as Telegraf does). Returns True when it was created."""
        name = db or self.target.db
        results = await self.query("SHOW DATABASES", db=False, method="GET")
        existing = {v[0] for r in results for s in r.get("series", []) for v in s.get("values", [])}
        if name in existing:
            await self.ensure_retention(name)
            return False
        await self.query(f"CREATE DATABASE {quote_ident(name)}", db=False, method="POST")
        log.warning("created InfluxDB database %r (it was missing)", name)
        await self.ensure_retention(name)
        return True

    async def ensure_retention(self, db: str | None = None) -> Retention:
        """The retention policies of CONTRACT §10: ``raw`` (the database's default) and ``rollup``, created or
        brought to the configured durations.

        A database that already holds data in another default policy (one made before smartpark managed
        retention) keeps that default, so that no reading disappears from the queries; the warning says how
        to move it. A server without retention policies (the v1 compatibility API of InfluxDB 2.x/3.x)
        gets everything in its default, and that is said once.
        """
        name = db or self.target.db
        if name in self._retention:
            return self._retention[name]
        raw_d, rollup_d = self.target.raw_retention, self.target.rollup_retention
        qdb = quote_ident(name)
        policies: dict[str, dict[str, Any]] = {}
        try:
            policies = {row["name"]: row for row in await self.rows(f"SHOW RETENTION POLICIES ON {qdb}", db=name)}
            default = next((p for p, row in policies.items() if row.get("default")), None)
            keep_default = default not in (None, RAW_RP) and await self._has_data(name, default)
            for rp, duration in ((RAW_RP, raw_d), (ROLLUP_RP, rollup_d)):
                make_default = " DEFAULT" if rp == RAW_RP and not keep_default else ""
                if rp not in policies:
                    q = f"CREATE RETENTION POLICY {quote_ident(rp)} ON {qdb} DURATION {duration} REPLICATION 1"
                    await self.query(q + make_default, db=name, method="POST")
                    log.warning("created retention policy %r on %r (%s%s)", rp, name, duration, make_default.lower())
                elif _duration_differs(policies[rp].get("duration", ""), duration) or (
                        make_default and not policies[rp].get("default")):
                    q = f"ALTER RETENTION POLICY {quote_ident(rp)} ON {qdb} DURATION {duration}"
                    await self.query(q + make_default, db=name, method="POST")
                    log.warning("retention policy %r on %r set to %s%s", rp, name, duration, make_default.lower())
        except ValueError as exc:
            if _RP_UNSUPPORTED.search(str(exc)) is None:
                # not allowed (a user without admin rights) or refused: the data keep flowing to the default
                rollup = ROLLUP_RP if ROLLUP_RP in policies else None
                log.warning("could not set the retention policies of %r (%s): writing to its default policy%s",
                            name, exc, "" if rollup is None else ", rollups to 'rollup'")
                self._retention[name] = Retention(supported=True, raw=None, rollup=rollup)
                return self._retention[name]
            log.warning("InfluxDB at %s has no retention policies (%s): everything goes to the default of %r, "
                        "kept as long as that bucket's retention says", self.target.base_url, exc, name)
            self._retention[name] = Retention(supported=False, raw=None, rollup=None)
            return self._retention[name]
        if keep_default:
            log.warning("database %r keeps %r as its default retention policy because it already holds data "
                        "there; to move to %r: SELECT * INTO %s.:MEASUREMENT FROM %s./.*/ GROUP BY *, then "
                        "ALTER RETENTION POLICY %s ON %s DEFAULT", name, default, RAW_RP, RAW_RP, default,
                        RAW_RP, name)
        self._retention[name] = Retention(supported=True, raw=None if keep_default else RAW_RP, rollup=ROLLUP_RP)
        return self._retention[name]

    async def _has_data(self, db: str, rp: str | None) -> bool:
        """Whether retention policy ``rp`` of ``db`` holds any shard (cheap: no data is read)."""
        try:
            for result in await self.query("SHOW SHARDS", db=False):
                for series in result.get("series", []):
                    if series.get("name") != db:
                        continue
                    cols = series["columns"]
                    at = cols.index("retention_policy")
                    if any(v[at] == rp for v in series.get("values", [])):
                        return True
        except ValueError:  # not an admin: assume the worst and leave the default alone
            return True
        return False


# what 2.x/3.x's v1 compatibility API answers to retention-policy statements
_RP_UNSUPPORTED = re.compile(r"not (?:implemented|supported)|unsupported|not allowed", re.I)


@dataclass(frozen=True, slots=True)
class Retention:
    """Where the data goes: ``raw`` and ``rollup`` are the policies to name (None: the database's default)."""

    supported: bool
    raw: str | None
    rollup: str | None

    def measurement(self, name: str, rollup: bool = False) -> str:
        """``name`` qualified with its retention policy, for FROM and INTO clauses."""
        rp = self.rollup if rollup else self.raw
        return f"{quote_ident(rp)}.{quote_ident(name)}" if rp else quote_ident(name)


def _duration_differs(shown: str, wanted: str) -> bool:
    """InfluxDB shows ``400d`` as ``9600h0m0s`` and INF as ``0s``."""
    return (retention_ms(shown) or 0) != (retention_ms(wanted) or 0)


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


def _error_text(text: str) -> str:
    try:
        import json

        return str(json.loads(text).get("error", text))
    except (ValueError, AttributeError):
        return text.strip()


def _rejected_lines(msg: str, lines: Sequence[str]) -> dict[int, str]:
    """Map InfluxDB's 'unable to parse' reports back to line indexes of the batch."""
    index: dict[str, list[int]] = {}
    for i, line in enumerate(lines):
        index.setdefault(line, []).append(i)
    rejected: dict[int, str] = {}
    for m in _LINE_ERR.finditer(msg):
        for i in index.get(m.group("line"), []):
            rejected[i] = m.group("why").strip()
    if not rejected and (m2 := _DROPPED.search(msg)):
        # points dropped for retention or type conflicts are not named line by line; say so on every line
        log.warning("InfluxDB dropped %s points of a batch without naming them: %s", m2.group(1), msg)
    return rejected
