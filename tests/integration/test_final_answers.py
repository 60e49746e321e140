"""Final answers (unknown, revoked, expired) are kept in the worker's memory with no age, never
answer inactive for a credential that is live, and never active for a dead one; against the
session's real Postgres and Redis."""

from __future__ import annotations

import asyncio
import time

from introspect import credentials, store
from introspect.cache import inactive
from introspect.credentials import Kind
from introspect.metrics import METRICS
from tests.admin_helpers import active, created_key, error_of, unique
from tests.helpers import AdminAPI, Registered, Server
from tests.integration.test_flow import issue


def io() -> tuple[int, int]:
    """Redis calls and Postgres queries this process made so far."""
    return METRICS.redis_calls.value(), METRICS.pg_queries.value()


def keyed(server: Server, token: str) -> bytes:
    """The keyed hash a worker caches `token` under."""
    return credentials.keyed_hash(server.authority.server_secrets[0], token)


async def test_unknown_and_revoked_are_answered_from_memory(
    server: Server, app_client: Registered, resource_server: Registered
) -> None:
    """Once answered, an unknown value and a revoked token cost no Redis call and no Postgres
    query again; after the worker forgets them, the stores still answer inactive."""
    unknown = credentials.generate(Kind.ACCESS_TOKEN)
    revoked = (await issue(server, app_client))["access_token"]
    assert await active(server, resource_server, revoked)
    resp = await server.post_form("/revoke", {"token": revoked}, headers=app_client.auth)
    assert resp.status == 200
    assert not await active(server, resource_server, unknown)
    before = io()
    for _ in range(3):
        assert not await active(server, resource_server, unknown)
        assert not await active(server, resource_server, revoked)
    assert io() == before
    server.authority.local.clear()
    assert not await active(server, resource_server, unknown)
    assert not await active(server, resource_server, revoked)


async def test_a_change_to_a_key_drops_its_final_answer(
    server: Server, api: AdminAPI, app_client: Registered, resource_server: Registered
) -> None:
    """A worker whose clock ran ahead took a live key for expired, while the admin's PATCH
    found it live and moved its expiry: the PATCH's invalidation drops the final answer."""
    issued = await created_key(api, client_id=app_client.client_id, scopes=["read"])
    key = issued["key"]
    assert await active(server, resource_server, key)
    local = server.authority.local
    local.put(keyed(server, key), inactive(1), local.epoch, store.now())  # "expired"
    assert not await active(server, resource_server, key)
    resp = await api.call("PATCH", f"/api-keys/{issued['id']}", {"expires_in": 3600})
    assert resp.status == 200, resp.body
    assert await active(server, resource_server, key)


async def test_an_expired_key_stays_expired(
    server: Server, api: AdminAPI, app_client: Registered, resource_server: Registered
) -> None:
    """A key answered inactive once expired cannot be made live again: its PATCH is 409, and
    it stays inactive in memory and in the stores."""
    issued = await created_key(api, client_id=app_client.client_id, scopes=["read"], name=unique())
    key, path = issued["key"], f"/api-keys/{issued['id']}"
    resp = await api.call("PATCH", path, {"expires_at": store.now() + 1})
    assert resp.status == 200, resp.body
    assert await active(server, resource_server, key)
    await asyncio.sleep(max(0.0, resp.json()["exp"] - time.time()) + 0.1)  # as time passes
    assert not await active(server, resource_server, key)
    error_of(await api.call("PATCH", path, {"expires_at": None}), 409)
    assert not await active(server, resource_server, key)
    server.authority.local.clear()
    assert not await active(server, resource_server, key)
