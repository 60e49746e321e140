"""No interleaving of a read-through and a revocation leaves the old state cached.

Each test stops a read-through between its read and its fills (the
`before_fill` hook), revokes the credential meanwhile, then lets the fills
run: they must be refused, in Redis by the version check and in-process by
the epoch check (see introspect/cache/). The same holds for a client
record read through while the client is changed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from introspect import admin, credentials
from introspect.cache import KEY_PREFIX, client_key
from introspect.config import Settings
from introspect.service import Authority
from tests.helpers import Registered, Server, eventually, register
from tests.valkey import Proxy, Valkey, serving

GRANT = {"grant_type": "client_credentials"}


class Gate:
    """Holds the read-through for one key at the fill point until released."""

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.reached = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, key: bytes) -> None:
        if key == self.key:
            self.reached.set()
            await self.release.wait()


@pytest.fixture
async def token(server: Server, app_client: Registered) -> AsyncIterator[str]:
    """A fresh token, and the hook removed afterwards."""
    resp = await server.post_form("/token", GRANT, headers=app_client.auth)
    yield resp.json()["access_token"]
    server.authority.cache.before_fill = None


async def race(server: Server, app_client: Registered, rs: Registered, token: str) -> None:
    """Start an introspection, revoke while it waits at its fill point, then let it finish."""
    key = credentials.keyed_hash(server.authority.server_secrets[0], token)
    gate = Gate(key)
    server.authority.cache.before_fill = gate
    reader = asyncio.create_task(server.post_form("/introspect", {"token": token}, headers=rs.auth))
    await asyncio.wait_for(gate.reached.wait(), 10)
    revoked = await server.post_form("/revoke", {"token": token}, headers=app_client.auth)
    assert revoked.status == 200
    gate.release.set()
    in_flight = await asyncio.wait_for(reader, 10)
    # The read began before the revocation: it may report the old state, once.
    assert in_flight.json()["active"] is True
    server.authority.cache.before_fill = None


async def test_postgres_read_before_revocation_is_not_cached(
    server: Server, app_client: Registered, resource_server: Registered, token: str
) -> None:
    """A Postgres read that began before a revocation fills neither Redis nor the worker."""
    await race(server, app_client, resource_server, token)
    key = credentials.keyed_hash(server.authority.server_secrets[0], token)
    raw = await server.authority.cache.redis.client.call("GET", KEY_PREFIX + key)
    assert raw is not None
    assert raw.split(b"|", 1)[1] == b"0"  # the revocation's own entry: inactive, for good
    resp = await server.post_form("/introspect", {"token": token}, headers=resource_server.auth)
    assert resp.body == b'{"active":false}'


async def test_redis_hit_before_revocation_is_not_cached_in_process(
    server: Server, app_client: Registered, resource_server: Registered, token: str
) -> None:
    """A Redis hit that began before a revocation is not stored in the worker's cache."""
    first = await server.post_form("/introspect", {"token": token}, headers=resource_server.auth)
    assert first.json()["active"] is True  # now in Redis (and in-process)
    server.authority.local.clear()  # so the next read is a Redis hit
    await race(server, app_client, resource_server, token)
    resp = await server.post_form("/introspect", {"token": token}, headers=resource_server.auth)
    assert resp.body == b'{"active":false}'


async def test_refresh_read_before_revocation_is_not_cached_in_process(
    server: Server, app_client: Registered, resource_server: Registered, token: str
) -> None:
    """A refresh whose Redis read began before a revocation does not restore the old answer."""
    first = await server.post_form("/introspect", {"token": token}, headers=resource_server.auth)
    assert first.json()["active"] is True
    cache = server.authority.cache
    key = credentials.keyed_hash(server.authority.server_secrets[0], token)
    assert cache.cached(key, time.monotonic()) is not None
    cache.local.due.append(key)  # due now: the next hit starts a refresh
    gate = Gate(key)
    cache.before_fill = gate
    hit = await server.post_form("/introspect", {"token": token}, headers=resource_server.auth)
    assert hit.json()["active"] is True  # served from memory; the refresh runs behind it
    await asyncio.wait_for(gate.reached.wait(), 10)
    revoked = await server.post_form("/revoke", {"token": token}, headers=app_client.auth)
    assert revoked.status == 200
    gate.release.set()
    for _ in range(3):  # the refresh finishes without awaiting anything more
        await asyncio.sleep(0)
    resp = await server.post_form("/introspect", {"token": token}, headers=resource_server.auth)
    assert resp.body == b'{"active":false}'


async def test_client_record_read_before_a_change_is_not_cached(
    server: Server, authority: Authority, resource_server: Registered
) -> None:
    """A client record read from Postgres before the client was disabled fills neither Redis
    nor the worker: its tokens are inactive once the change returned, from Redis too."""
    owner = await register(authority)
    made = await server.post_form("/token", GRANT, headers=owner.auth)
    token = made.json()["access_token"]
    key = client_key(owner.client_id)
    # Its authentication cached the owner's record: forget it, so the next read goes to Postgres.
    await server.authority.cache.redis.client.call("DEL", KEY_PREFIX + key)
    server.authority.local.clear()
    gate = Gate(key)
    server.authority.cache.before_fill = gate
    try:
        reader = asyncio.create_task(
            server.post_form("/introspect", {"token": token}, headers=resource_server.auth)
        )
        await asyncio.wait_for(gate.reached.wait(), 10)  # the owner's record read, not filled
        await admin.update_client(authority, "test", owner.client_id, {"disabled": True})
        gate.release.set()
        in_flight = await asyncio.wait_for(reader, 10)
    finally:
        server.authority.cache.before_fill = None
    # The read began before the change: it may report the old state, once.
    assert in_flight.json()["active"] is True
    raw = await server.authority.cache.redis.client.call("GET", KEY_PREFIX + key)
    assert raw is not None
    assert raw.split(b"|", 1)[1] == b"T"  # the change's tombstone, not the old record
    server.authority.local.clear()  # so the next answer reads the owner's record from Redis
    resp = await server.post_form("/introspect", {"token": token}, headers=resource_server.auth)
    assert resp.body == b'{"active":false}'


async def test_a_read_through_postgres_answers_without_waiting_for_its_fill(
    settings: Settings, valkey: Valkey
) -> None:
    """The answer read from Postgres goes out whether or not its Redis fill has landed: with
    the fill held on its way to Valkey, the introspection still answers, and the fill lands
    once it goes on."""
    async with Proxy(valkey.port) as proxy, serving(settings, valkey, via=proxy) as srv:
        app = await register(srv.authority)
        rs = await register(srv.authority, can_introspect=True)
        token = (await srv.post_form("/token", GRANT, headers=app.auth)).json()["access_token"]
        key = KEY_PREFIX + credentials.keyed_hash(srv.authority.server_secrets[0], token)
        await valkey.command("DEL", key)  # the issue's own fill: this read goes to Postgres
        proxy.hold(b'"active":true')  # in the fill's value only
        try:
            form = {"token": token}
            resp = await asyncio.wait_for(srv.post_form("/introspect", form, headers=rs.auth), 5)
            assert resp.json()["active"] is True
            # Answered before its fill could give up (a Redis timeout, counted against its
            # health): waiting for the fill, the answer came only after that timeout.
            assert srv.authority.cache.health.ok
            await asyncio.wait_for(proxy.holding.wait(), 5)  # the fill was sent, and is held
            assert await valkey.command("GET", key) is None
        finally:
            proxy.release()

        async def filled() -> bool:
            return await valkey.command("GET", key) is not None

        await eventually(filled)
