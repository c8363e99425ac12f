"""The InfluxDB client: basic auth from the URL against a real influxd with authentication on, the token
header that InfluxDB 2.x/3.x's v1 API expects, and how answers are sorted into errors."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from epochs import RECENT_MIDNIGHT_MS

from devstack import INFLUXDB_CONF, find_binary, free_port, influx_answers
from smartpark.config import Settings
from smartpark.errors import PartialWriteError, WriteError
from smartpark.influx import InfluxClient, Retention

T = RECENT_MIDNIGHT_MS + 123  # a reading's ms timestamp inside the raw retention


@pytest.fixture(scope="module")
def secured_influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real influxd with ``auth-enabled = true`` and one admin user; yields its base URL."""
    root = tmp_path_factory.mktemp("influx-auth")
    port, rpc = free_port(), free_port()
    conf = root / "influxdb.conf"
    text = INFLUXDB_CONF.format(host="127.0.0.1", port=port, rpc_port=rpc, root=root)
    assert "auth-enabled = false" in text
    conf.write_text(text.replace("auth-enabled = false", "auth-enabled = true"))
    log = (root / "influxd.log").open("wb")
    proc = subprocess.Popen([find_binary("influxd"), "run", "-config", str(conf)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while not influx_answers(port):
            assert proc.poll() is None and time.monotonic() < deadline, (root / "influxd.log").read_text()[-2000:]
            time.sleep(0.1)
        # with no user yet, InfluxDB 1.x lets the first admin be created without credentials
        q = urllib.parse.urlencode({"q": "CREATE USER admin WITH PASSWORD 's3cr3t' WITH ALL PRIVILEGES"})
        urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/query", data=q.encode()), timeout=10)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()


def _client(url: str, db: str = "authdb", token: str | None = None) -> InfluxClient:
    return InfluxClient(Settings(influx_url=url, influx_db=db, influx_token=token).influx())


@contextlib.asynccontextmanager
async def _answering(*routes: web.RouteDef) -> AsyncIterator[str]:
    """An HTTP server with ``routes`` on a free loopback port, standing for an InfluxDB that answers what no
    real one here would (429, no retention policies); yields its URL."""
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


class TestBasicAuth:
    def test_credentials_from_the_url_are_used(self, secured_influx: str) -> None:
        """user:password in the URL authenticate writes, queries and the database creation."""
        url = secured_influx.replace("http://", "http://admin:s3cr3t@")

        async def go() -> list[dict[str, object]]:
            async with _client(url) as db:
                assert await db.ensure_database() is True
                assert await db.ensure_database() is False
                await db.write([f"reading,asset=a,sensor=s,site=x value=1.5 {T}"])
                return await db.rows("SELECT value FROM reading")

        assert asyncio.run(go()) == [{"time": T, "value": 1.5}]

    def test_without_credentials_a_write_is_refused_not_retried(self, secured_influx: str) -> None:
        """A 401 is not retryable: retrying cannot fix a missing password, it must be reported."""

        async def go() -> WriteError:
            async with _client(secured_influx) as db:
                with pytest.raises(WriteError) as info:
                    await db.write([f"reading,asset=a,sensor=s,site=x value=1.5 {T}"])
                return info.value

        err = asyncio.run(go())
        assert err.status == 401 and not err.retryable

    def test_wrong_password(self, secured_influx: str) -> None:
        async def go() -> WriteError:
            async with _client(secured_influx.replace("http://", "http://admin:nope@")) as db:
                with pytest.raises(WriteError) as info:
                    await db.write(["m v=1 1"])
                return info.value

        assert asyncio.run(go()).status == 401


    def test_a_user_without_admin_rights_writes_to_the_default(self, secured_influx: str) -> None:
        """Retention policies need an admin: without one the database check warns and the data keep flowing."""
        admin = secured_influx.replace("http://", "http://admin:s3cr3t@")
        user = secured_influx.replace("http://", "http://writer:w@")

        async def go() -> tuple[Retention, list[dict[str, object]]]:
            async with _client(admin, "rpdb") as db:
                await db.query("CREATE DATABASE rpdb", db=False, method="POST")
                await db.query("CREATE USER writer WITH PASSWORD 'w'", db=False, method="POST")
                await db.query('GRANT ALL ON "rpdb" TO writer', db=False, method="POST")
            async with _client(user, "rpdb") as db:
                assert await db.ensure_database() is False
                retention = await db.ensure_retention()
                await db.write([f"reading,asset=a,sensor=s,site=x value=2.5 {T}"])
                return retention, await db.rows("SELECT value FROM reading")

        retention, rows = asyncio.run(go())
        assert retention.raw is None and rows == [{"time": T, "value": 2.5}]


class TestAnswers:
    def test_partial_write_names_the_bad_lines(self, influx_db: Any) -> None:
        """A 400 partial write keeps the good lines and names the rejected ones by index."""
        lines = ["m v=1 1764201600000", "m v=oops 1764201600001", "m v=3 1764201600002"]

        async def go() -> PartialWriteError:
            async with _client(influx_db.url, influx_db.db) as db:
                with pytest.raises(PartialWriteError) as info:
                    await db.write(lines)
                return info.value

        err = asyncio.run(go())
        assert list(err.rejected) == [1]
        assert influx_db.count("m") == 2

    def test_gzip_bodies_are_accepted(self, influx_db: Any) -> None:
        """Over a network the client gzips large bodies (on loopback it does not: it would only cost CPU)."""
        lines = [f"m v={i}.5 {1764201600000 + i}" for i in range(3000)]

        async def go() -> None:
            target = Settings(influx_url=influx_db.url, influx_db=influx_db.db).influx()
            async with InfluxClient(target, gzip_min_bytes=0) as db:  # force gzip on loopback
                await db.write(lines)

        asyncio.run(go())
        assert influx_db.count("m") == 3000

    def test_unreachable_is_retryable(self) -> None:
        async def go() -> WriteError:
            async with _client(f"http://127.0.0.1:{free_port()}") as db:
                with pytest.raises(WriteError) as info:
                    await db.write(["m v=1 1"])
                return info.value

        err = asyncio.run(go())
        assert err.retryable and err.status == 0


class TestToken:
    def test_token_header_and_retry_after(self, tmp_path: Path) -> None:
        """InfluxDB 2.x/3.x v1 API: 'Authorization: Token …' on every call; a 429's Retry-After is kept.

        Neither 2.x nor 3.x runs on this machine, so a small local endpoint records what the client sends."""
        seen: list[tuple[str, str | None]] = []

        async def write(request: web.Request) -> web.Response:
            seen.append((request.path, request.headers.get("Authorization")))
            return web.Response(status=429, headers={"Retry-After": "7"}, text='{"error":"slow down"}')

        async def query(request: web.Request) -> web.Response:
            seen.append((request.path, request.headers.get("Authorization")))
            return web.json_response({"results": [{"statement_id": 0}]})

        async def go() -> WriteError:
            async with _answering(web.post("/write", write), web.get("/query", query)) as url, \
                    _client(url, token="tok-123") as db:
                await db.query("SHOW MEASUREMENTS")
                with pytest.raises(WriteError) as info:
                    await db.write(["m v=1 1"])
                return info.value

        err = asyncio.run(go())
        assert seen == [("/query", "Token tok-123"), ("/write", "Token tok-123")]
        assert err.status == 429 and err.retryable and err.retry_after == 7.0

    def test_a_server_without_retention_policies_is_said_once(self, caplog: pytest.LogCaptureFixture) -> None:
        """2.x's v1 API answers CREATE RETENTION POLICY with 'not implemented': everything goes to the default,
        with one warning; nothing is retried and the rollups write without an rp."""
        statements: list[str] = []

        async def query(request: web.Request) -> web.Response:
            q = request.query.get("q") or (await request.post()).get("q", "")
            statements.append(str(q))
            if str(q).startswith("SHOW DATABASES"):
                return web.json_response({"results": [{"statement_id": 0, "series": [
                    {"name": "databases", "columns": ["name"], "values": [["authdb"]]}]}]})
            if str(q).startswith("SHOW RETENTION POLICIES"):
                return web.json_response({"results": [{"statement_id": 0, "series": [{"columns": [
                    "name", "duration", "shardGroupDuration", "replicaN", "default"],
                    "values": [["autogen", "0s", "168h0m0s", 1, True]]}]}]})
            word = " ".join(str(q).split()[:3]).upper()
            return web.json_response({"results": [{"statement_id": 0, "error": f"not implemented: {word}"}]})

        async def go() -> Retention:
            async with _answering(web.get("/query", query), web.post("/query", query)) as url, \
                    _client(url, token="tok") as db:
                assert await db.ensure_database() is False
                assert await db.ensure_database() is False
                return await db.ensure_retention()

        with caplog.at_level("WARNING", logger="smartpark.influx"):
            retention = asyncio.run(go())
        assert retention == Retention(supported=False, raw=None, rollup=None)
        said = [r for r in caplog.records if "no retention policies" in r.getMessage()]
        assert len(said) == 1
        assert sum(s.startswith("CREATE RETENTION POLICY") for s in statements) == 1
        assert retention.measurement("reading_1h", rollup=True) == '"reading_1h"'
