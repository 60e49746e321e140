"""Shared fixtures: real Postgres and Redis, started once per test session.

The embedded servers run under a session temp dir unless
INTROSPECT_TEST_DATABASE_URL / INTROSPECT_TEST_REDIS_URL name real ones.
Tests isolate themselves by unique names and ids, never by flushing.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from introspect import embedded
from introspect.config import Settings
from introspect.embedded.cluster import DevCluster
from introspect.history import History, ShardedHistory
from introspect.redis import LeanRedis
from introspect.redis.cluster import ClusterRedis
from introspect.service import Authority, open_authority
from introspect.store.migrate import migrate
from tests.helpers import AdminAPI, Registered, Server, admin_api, register, start_server
from tests.valkey import Valkey, running


@dataclass(frozen=True)
class Stores:
    """Where the test session's Postgres and Redis are."""

    database_url: str
    redis_url: str
    data_dir: Path


@pytest.fixture(scope="session")
def stores() -> Iterator[Stores]:
    """The session's Postgres and Redis: from the environment, or embedded and started once."""
    # Not under pytest's basetemp: concurrent pytest runs prune each other's old basetemps.
    data_dir = Path(tempfile.mkdtemp(prefix="introspect-test-"))
    db = os.environ.get("INTROSPECT_TEST_DATABASE_URL")
    rd = os.environ.get("INTROSPECT_TEST_REDIS_URL")
    if db and rd:
        yield Stores(db, rd, data_dir)
        return
    started = embedded.start(data_dir)
    try:
        yield Stores(db or started.database_url, rd or started.redis_url, data_dir)
    finally:
        if started.owned:
            embedded.stop(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
async def migrated(stores: Stores) -> Stores:
    """The stores with every migration applied, and the session Redis's history begun.

    Begun at once, before any test vouches for a private Redis of its own: the
    first history of a deployment starts at 0, and private_key_jwt assertions
    made before a later one started are refused (see introspect/history.py).
    """
    conn = await asyncpg.connect(stores.database_url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(stores.database_url, min_size=1, max_size=1)
    redis = LeanRedis(stores.redis_url)
    try:
        await History(redis, pool, _nothing_to_replay, window=0).vouch()
    finally:
        redis.close()
        await pool.close()
    return stores


async def _nothing_to_replay(_since: int, _identity: bytes) -> int:
    return 0


@pytest.fixture(scope="session")
def valkey_cluster(stores: Stores) -> Iterator[DevCluster]:
    """A 3-primary, 3-replica Valkey Cluster on loopback, formed once for the session.

    Tests may kill a primary or move slots: the cluster heals by itself (a replica is
    promoted), and every test reads the layout it finds rather than the one formed.
    """
    cluster = DevCluster(stores.data_dir / "cluster")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
async def cluster_url(migrated: Stores, valkey_cluster: DevCluster) -> str:
    """The cluster's seeds, its first history vouched for (like the session Valkey's)."""
    pool = await asyncpg.create_pool(migrated.database_url, min_size=1, max_size=1)
    redis = ClusterRedis(valkey_cluster.url)
    try:
        await ShardedHistory(redis, pool, _nothing_to_replay, window=0).vouch()
    finally:
        redis.close()
        await pool.close()
    return valkey_cluster.url


@pytest.fixture(scope="session")
def settings(migrated: Stores) -> Settings:
    """Settings for the test servers: the session's stores and a fixed secret."""
    return Settings(
        database_url=migrated.database_url,
        redis_url=migrated.redis_url,
        data_dir=migrated.data_dir,
        secrets=(b"test-secret-" + secrets.token_hex(16).encode(),),
        issuer_override="http://introspect.test",
    )


@pytest.fixture(scope="session")
async def server(settings: Settings) -> AsyncIterator[Server]:
    """One server for the session, as a resource server would reach it."""
    test_server, srv = await start_server(settings)
    try:
        yield srv
    finally:
        await srv.http.close()
        await test_server.close()


@pytest.fixture(scope="session")
async def authority(settings: Settings) -> AsyncIterator[Authority]:
    """An Authority without a listener, as the CLI uses it."""
    assert settings.database_url
    assert settings.redis_url
    async with open_authority(
        settings, settings.database_url, settings.redis_url, listen=False
    ) as auth:
        yield auth


@pytest.fixture
async def resource_server(authority: Authority) -> Registered:
    """A client allowed to introspect, registered with no audiences (sees everything)."""
    return await register(authority, scopes=(), can_introspect=True)


@pytest.fixture
async def app_client(authority: Authority) -> Registered:
    """An ordinary client with scopes read and write and no audiences."""
    return await register(authority)


@pytest.fixture
async def api(server: Server) -> AdminAPI:
    """The session server's admin API with a fresh admin-role key."""
    return await admin_api(server)


@pytest.fixture
def valkey(tmp_path: Path) -> Iterator[Valkey]:
    """A private Valkey for this test (tests/valkey.py), killed at the end."""
    with running(tmp_path / "valkey") as server:
        yield server
