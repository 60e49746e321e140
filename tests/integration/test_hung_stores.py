"""A hung store (SIGSTOP: connections open, nothing answers) costs a caller a deadline, not a stall.

Private embedded Postgres and Valkey, so that stopping them disturbs no other test.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import asyncpg
import pytest

from introspect import admin, embedded
from introspect.config import Settings
from introspect.service import REDIS_TIMEOUT
from introspect.store import ACQUIRE_TIMEOUT, COMMAND_TIMEOUT
from introspect.store.migrate import migrate
from tests.helpers import Server, eventually, register, start_server

GRANT = {"grant_type": "client_credentials"}
# Scheduling noise on a busy test machine, beyond a deadline.
MARGIN = 0.5
# A Postgres outage many times the in-process lifetime of the servers below.
OUTAGE = 15.0
# Seconds between two rounds of requests through that outage.
PACE = 0.25


@pytest.fixture(scope="module")
def private_stores() -> Iterator[tuple[embedded.EmbeddedStores, Path]]:
    """Embedded Postgres and Valkey of this module's own, migrated."""
    parent = Path(tempfile.mkdtemp(prefix="introspect-hung-"))
    data_dir = parent / "stores"
    try:
        yield embedded.start(data_dir), data_dir
    finally:
        try:
            embedded.stop(data_dir)
        finally:
            shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture(scope="module")
async def hung_server(
    settings: Settings, private_stores: tuple[embedded.EmbeddedStores, Path]
) -> AsyncIterator[Server]:
    """A server over the private stores."""
    stores, _ = private_stores
    conn = await asyncpg.connect(stores.database_url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    private = replace(settings, database_url=stores.database_url, redis_url=stores.redis_url)
    test_server, srv = await start_server(private)
    try:
        yield srv
    finally:
        await srv.http.close()
        await test_server.close()


@pytest.fixture(scope="module")
async def short_memory_servers(
    settings: Settings,
    private_stores: tuple[embedded.EmbeddedStores, Path],
    hung_server: Server,
) -> AsyncIterator[tuple[Server, Server]]:
    """Two more servers over the private stores (migrated by `hung_server`) whose in-process
    records live one second, so that an outage soon outlasts them."""
    stores, _ = private_stores
    private = replace(
        settings,
        database_url=stores.database_url,
        redis_url=stores.redis_url,
        local_cache_ttl=1.0,
    )
    started = [await start_server(private), await start_server(private)]
    try:
        yield started[0][1], started[1][1]
    finally:
        for test_server, srv in started:
            await srv.http.close()
            await test_server.close()


def _tree(root: int) -> list[int]:
    """`root` and its child processes (Postgres: the postmaster and its backends)."""
    children = Path(f"/proc/{root}/task/{root}/children").read_text().split()
    return [root, *(int(pid) for pid in children)]


@contextmanager
def stopped(pids: list[int]) -> Iterator[None]:
    """The processes stopped (SIGSTOP) for the block, continued after it."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def postgres_pids(data_dir: Path) -> list[int]:
    """The embedded postmaster and every process it started."""
    postmaster = int((data_dir / "pg" / "postmaster.pid").read_text().split()[0])
    return _tree(postmaster)


def valkey_pid(data_dir: Path) -> int:
    """The embedded Valkey server."""
    return int(json.loads((data_dir / "embedded.json").read_text())["valkey"]["pid"])


async def timed(srv: Server, path: str, form: dict[str, str], auth: dict[str, str]):
    """POST a form; (seconds it took, status, JSON body or None)."""
    began = time.monotonic()
    answer = await srv.post_form(path, form, headers=auth)
    body = answer.json() if answer.body else None
    return time.monotonic() - began, answer.status, body


async def test_hung_postgres_fails_fast_and_cached_answers_keep_coming(
    hung_server: Server, private_stores: tuple[embedded.EmbeddedStores, Path]
) -> None:
    """With Postgres hung, /token, an unknown credential and /revoke answer 503 within about a
    second, a token cached before still introspects active, and all works again after."""
    srv = hung_server
    _, data_dir = private_stores
    app = await register(srv.authority)
    rs = await register(srv.authority, scopes=(), can_introspect=True)
    token = (await srv.post_form("/token", GRANT, headers=app.auth)).json()["access_token"]
    unknown = (await srv.post_form("/token", GRANT, headers=app.auth)).json()["access_token"]
    _, status, body = await timed(srv, "/introspect", {"token": token}, rs.auth)
    assert (status, body["active"]) == (200, True)  # now cached in memory and in Redis
    await srv.post_form("/token", GRANT, headers=app.auth)  # the caller's record in memory
    deadline = COMMAND_TIMEOUT + ACQUIRE_TIMEOUT + MARGIN
    with stopped(postgres_pids(data_dir)):
        took, status, _ = await timed(srv, "/token", GRANT, app.auth)
        assert status == 503
        assert took < COMMAND_TIMEOUT + MARGIN
        took, status, body = await timed(srv, "/introspect", {"token": token}, rs.auth)
        assert (status, body["active"]) == (200, True)
        assert took < MARGIN
        took, status, _ = await timed(srv, "/introspect", {"token": unknown}, rs.auth)
        assert status == 503
        assert took < deadline
        took, status, _ = await timed(srv, "/revoke", {"token": token}, app.auth)
        assert status == 503
        assert took < deadline
        ready = await srv.request("GET", "/readyz")
        assert (ready.status, ready.json()["postgres"]) == (503, "unreachable")

    async def recovered() -> bool:
        return (await srv.post_form("/token", GRANT, headers=app.auth)).status == 200

    await eventually(recovered)
    _, status, body = await timed(srv, "/introspect", {"token": token}, rs.auth)
    assert (status, body["active"]) == (200, True)


async def test_hung_redis_is_treated_as_down_after_its_deadline(
    hung_server: Server, private_stores: tuple[embedded.EmbeddedStores, Path]
) -> None:
    """With Redis hung, introspections keep answering correctly, from Postgres, each within the
    Redis deadline plus a margin; once Redis answers again the service recovers."""
    srv = hung_server
    _, data_dir = private_stores
    app = await register(srv.authority)
    rs = await register(srv.authority, scopes=(), can_introspect=True)
    tokens = [
        (await srv.post_form("/token", GRANT, headers=app.auth)).json()["access_token"]
        for _ in range(3)
    ]
    for token in tokens:
        _, status, body = await timed(srv, "/introspect", {"token": token}, rs.auth)
        assert (status, body["active"]) == (200, True)
    slowest = 0.0
    with stopped([valkey_pid(data_dir)]):
        until = time.monotonic() + 2 * REDIS_TIMEOUT + 1.0  # past the in-process lifetime
        while time.monotonic() < until:
            for token in tokens:
                took, status, body = await timed(srv, "/introspect", {"token": token}, rs.auth)
                assert (status, body["active"]) == (200, True)
                slowest = max(slowest, took)
        assert not srv.authority.cache.redis_ok  # treated as down: answers from Postgres
    assert slowest < REDIS_TIMEOUT + MARGIN

    async def recovered() -> bool:
        return (await srv.request("GET", "/readyz")).json()["status"] == "ok"

    await eventually(recovered)


async def test_cached_answers_come_from_redis_through_a_postgres_outage(
    short_memory_servers: tuple[Server, Server],
    private_stores: tuple[embedded.EmbeddedStores, Path],
) -> None:
    """With Postgres stopped for many in-process lifetimes, a token cached before keeps
    introspecting active, also on a server that never held it or its clients in memory (the
    client records come from Redis), while a client disabled before the outage stays refused
    and its tokens inactive."""
    primed, fresh = short_memory_servers
    _, data_dir = private_stores
    app = await register(primed.authority)
    gone = await register(primed.authority)
    rs = await register(primed.authority, scopes=(), can_introspect=True)
    token = (await primed.post_form("/token", GRANT, headers=app.auth)).json()["access_token"]
    dead = (await primed.post_form("/token", GRANT, headers=gone.auth)).json()["access_token"]
    for credential in (token, dead):  # the tokens, the caller and their owners into Redis
        _, status, body = await timed(primed, "/introspect", {"token": credential}, rs.auth)
        assert (status, body["active"]) == (200, True)
    await admin.update_client(primed.authority, "test", gone.client_id, {"disabled": True})
    _, status, body = await timed(primed, "/introspect", {"token": dead}, rs.auth)
    assert (status, body) == (200, {"active": False})  # the disabled record, into Redis
    with stopped(postgres_pids(data_dir)):
        until = time.monotonic() + OUTAGE
        while time.monotonic() < until:
            for srv in (primed, fresh):
                took, status, body = await timed(srv, "/introspect", {"token": token}, rs.auth)
                assert (status, body["active"]) == (200, True)
                assert took < MARGIN
                took, status, body = await timed(srv, "/introspect", {"token": dead}, rs.auth)
                assert (status, body) == (200, {"active": False})
                assert took < MARGIN
                _, status, _ = await timed(srv, "/token", GRANT, gone.auth)
                assert status == 401
            await asyncio.sleep(PACE)

    async def recovered() -> bool:
        return (await fresh.post_form("/token", GRANT, headers=app.auth)).status == 200

    await eventually(recovered)
