"""API keys through the admin API: issue, change, rotate, and their last use."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time

from introspect import store
from introspect.cache import KEY_ID, inactive
from introspect.service import Authority
from introspect.usage import USAGE_CHUNK, UsageLog
from tests.admin_helpers import active, created_client, created_key, error_of, unique
from tests.helpers import AdminAPI, Registered, Server, eventually
from tests.integration.test_flow import introspect


async def test_api_key_for_a_client_introspects_with_its_metadata(
    server: Server, api: AdminAPI, resource_server: Registered, app_client: Registered
) -> None:
    """An API key bound to a client introspects active with kind, scope, exp and metadata."""
    issued = await created_key(
        api,
        client_id=app_client.client_id,
        scopes=["read"],
        audiences=[],
        expires_in=3600,
        metadata={"team": "billing", "tier": 2},
    )
    assert issued["id"].startswith("key_")
    assert issued["key"].startswith("ikey_")
    body = await introspect(server, resource_server, issued["key"])
    assert body["active"] is True
    assert body["kind"] == "api_key"
    assert body["scope"] == "read"
    assert body["client_id"] == app_client.client_id
    assert body["sub"] == app_client.client_id
    assert body["jti"] == issued["id"]
    assert body["exp"] - body["iat"] == 3600
    assert body["metadata"] == {"team": "billing", "tier": 2}


async def test_api_key_for_a_subject_never_expires_by_default(
    server: Server, api: AdminAPI, resource_server: Registered
) -> None:
    """An API key for a subject alone takes any valid scope tokens and has no exp."""
    sub = unique("user")
    issued = await created_key(api, sub=sub, scopes=["anything:goes", "x.y/z"])
    body = await introspect(server, resource_server, issued["key"])
    assert body["sub"] == sub
    assert "client_id" not in body
    assert "exp" not in body
    assert body["scope"] == "anything:goes x.y/z"


async def test_api_key_scopes_stay_within_the_clients(
    api: AdminAPI, app_client: Registered
) -> None:
    """Scopes outside the client's, or not RFC 6749 scope tokens, are 400 naming scopes."""
    for fields in (
        {"client_id": app_client.client_id, "scopes": ["read", "admin"]},
        {"sub": unique(), "scopes": ["two words"]},
        {"sub": unique(), "scopes": ['quo"te']},
        {"sub": unique(), "scopes": "read"},
    ):
        resp = await api.call("POST", "/api-keys", fields)
        assert error_of(resp, 400).startswith("scopes:")


async def test_api_key_needs_an_existing_enabled_client(api: AdminAPI) -> None:
    """An unknown client_id is 404, a disabled client 409, neither client_id nor sub 400."""
    resp = await api.call("POST", "/api-keys", {"client_id": "client_" + "A" * 22, "scopes": []})
    assert error_of(resp, 404).startswith("client_id:")
    created = await created_client(api)
    await api.call("PATCH", f"/clients/{created['client_id']}", {"disabled": True})
    resp = await api.call("POST", "/api-keys", {"client_id": created["client_id"], "scopes": []})
    assert error_of(resp, 409).startswith("client_id:")
    resp = await api.call("POST", "/api-keys", {"scopes": []})
    assert "client_id" in error_of(resp, 400)


async def test_api_key_metadata_is_at_most_4_kib(api: AdminAPI) -> None:
    """Metadata up to 4096 bytes of compact UTF-8 JSON is kept; one byte more is 400."""
    filler = "x" * (4096 - len('{"k":""}'))
    issued = await created_key(api, sub=unique(), scopes=[], metadata={"k": filler})
    assert issued["metadata"] == {"k": filler}
    resp = await api.call(
        "POST", "/api-keys", {"sub": unique(), "scopes": [], "metadata": {"k": filler + "x"}}
    )
    assert error_of(resp, 400).startswith("metadata:")
    resp = await api.call(
        "POST", "/api-keys", {"sub": unique(), "scopes": [], "metadata": {"é": filler}}
    )
    assert error_of(resp, 400).startswith("metadata:")


async def test_patch_api_key_is_visible_at_once(
    server: Server, api: AdminAPI, resource_server: Registered, app_client: Registered
) -> None:
    """A PATCH of scopes, audiences, expiry or metadata shows in the very next introspection."""
    issued = await created_key(api, client_id=app_client.client_id, scopes=["read", "write"])
    key, path = issued["key"], f"/api-keys/{issued['id']}"
    for _ in range(3):  # warm every cache layer
        assert await active(server, resource_server, key)
    resp = await api.call("PATCH", path, {"scopes": ["read"], "metadata": {"v": 2}})
    assert resp.status == 200, resp.body
    assert resp.json()["scopes"] == ["read"]
    body = await introspect(server, resource_server, key)
    assert (body["scope"], body["metadata"]) == ("read", {"v": 2})
    resp = await api.call("PATCH", path, {"expires_in": 100, "audiences": ["https://a.test"]})
    body = await introspect(server, resource_server, key)
    assert body["exp"] == resp.json()["exp"]
    assert body["aud"] == "https://a.test"
    await api.call("PATCH", path, {"expires_at": None, "metadata": None})
    body = await introspect(server, resource_server, key)
    assert "exp" not in body
    assert "metadata" not in body
    resp = await api.call("PATCH", path, {"scopes": ["delete"]})
    assert error_of(resp, 400).startswith("scopes:")


async def test_patch_of_a_revoked_or_expired_key_is_409(
    api: AdminAPI, authority: Authority
) -> None:
    """PATCH and rotate of a revoked or expired key are 409; an unknown key is 404."""
    revoked = await created_key(api, sub=unique(), scopes=[])
    await api.call("POST", "/revocations", {"id": revoked["id"]})
    expired = await created_key(api, sub=unique(), scopes=[], expires_in=60)
    await authority.pool.execute(
        "UPDATE credentials SET exp = $2 WHERE id = $1", expired["id"], store.now() - 1
    )
    for key_id in (revoked["id"], expired["id"]):
        resp = await api.call("PATCH", f"/api-keys/{key_id}", {"scopes": ["x"]})
        assert error_of(resp, 409)
        assert (await api.call("POST", f"/api-keys/{key_id}/rotate")).status == 409
    for key_id in ("key_" + "A" * 22, "tok_x"):
        resp = await api.call("PATCH", f"/api-keys/{key_id}", {"scopes": ["x"]})
        assert error_of(resp, 404) == "no such API key"


async def test_rotated_key_keeps_working_for_the_grace_period(
    server: Server, api: AdminAPI, resource_server: Registered, app_client: Registered
) -> None:
    """Key rotation gives a new key with the same attributes; the old one ends with the grace."""
    old = await created_key(api, client_id=app_client.client_id, scopes=["read"], metadata={"m": 1})
    resp = await api.call("POST", f"/api-keys/{old['id']}/rotate", {"grace_period": 2})
    assert resp.status == 200, resp.body
    new = resp.json()
    assert new["id"] != old["id"]
    assert new["replaced"]["id"] == old["id"]
    before = await introspect(server, resource_server, old["key"])
    after = await introspect(server, resource_server, new["key"])
    for claim in ("scope", "client_id", "sub", "metadata", "kind"):
        assert before[claim] == after[claim]
    assert "exp" not in after

    async def old_inactive() -> bool:
        return not await active(server, resource_server, old["key"])

    await eventually(old_inactive, within=5)
    assert await active(server, resource_server, new["key"])


async def test_key_rotation_never_outlives_the_original_expiry(
    server: Server, api: AdminAPI, resource_server: Registered
) -> None:
    """A grace longer than the old key's life leaves its expiry as is; the new key shares it."""
    old = await created_key(api, sub=unique(), scopes=[], expires_in=100)
    resp = await api.call("POST", f"/api-keys/{old['id']}/rotate", {"grace_period": 86_400})
    new = resp.json()
    assert new["replaced"]["exp"] == old["exp"]
    assert new["exp"] == old["exp"]
    assert (await introspect(server, resource_server, old["key"]))["exp"] == old["exp"]
    resp = await api.call("POST", f"/api-keys/{new['id']}/rotate", {"grace_period": 0})
    assert not await active(server, resource_server, new["key"])
    assert await active(server, resource_server, resp.json()["key"])


async def test_api_key_last_use_is_recorded_in_batches(
    server: Server, api: AdminAPI, resource_server: Registered
) -> None:
    """An introspected API key shows last_used_at once the batch is written, not before."""
    created = await created_key(api, sub=unique("used"), scopes=["read"])

    async def last_used() -> int | None:
        listed = (await api.call("GET", "/tokens?kind=api_key&active=true&limit=500")).json()
        return next(i["last_used_at"] for i in listed["items"] if i["id"] == created["id"])

    await server.authority.flush_usage()
    resp = await server.post_form(
        "/introspect", {"token": created["key"]}, headers=resource_server.auth
    )
    assert resp.json()["active"]
    assert await last_used() is None
    assert await server.authority.flush_usage() >= 1
    used = await last_used()
    assert used is not None
    assert abs(used - time.time()) < 60


async def test_concurrent_last_use_batches_do_not_deadlock(
    server: Server, authority: Authority
) -> None:
    """Workers writing overlapping last-use batches, in any order, never deadlock."""
    now = int(time.time())
    ids = [f"key_deadlock{unique('x')}{n}" for n in range(300)]
    await store.copy_access_tokens(
        authority.pool,
        [(i, "api_key", "opaque", os.urandom(32), None, "s", (), (), now, now, None) for i in ids],
    )
    rng = random.Random(7)
    for round_ in range(15):
        batches = []
        for _ in range(4):
            order = ids[:]
            rng.shuffle(order)
            batches.append(dict.fromkeys(order, now + round_))
        await asyncio.gather(*(store.touch_credentials(authority.pool, b) for b in batches))
    latest = await authority.pool.fetchval(
        "SELECT min(last_used_at) FROM credentials WHERE id = ANY($1::text[])", ids
    )
    assert latest is not None


async def test_a_paced_last_use_write_cut_short_keeps_what_it_did_not_write(
    authority: Authority,
) -> None:
    """Last uses are written USAGE_CHUNK keys per statement, paced; stopped between two
    statements, the keys not yet written stay remembered, and the next write has them all."""
    now = int(time.time())
    ids = [f"key_paced{unique('x')}{n}" for n in range(2 * USAGE_CHUNK + 1)]
    await store.copy_access_tokens(
        authority.pool,
        [(i, "api_key", "opaque", os.urandom(32), None, "s", (), (), now, now, None) for i in ids],
    )
    usage = UsageLog(authority.lazy_pool)
    blank = inactive()
    for key_id in ids:
        usage.note_use((*blank[:KEY_ID], key_id, *blank[KEY_ID + 1 :]))

    async def written() -> int:
        count = await authority.pool.fetchval(
            "SELECT count(*) FROM credentials WHERE id = ANY($1::text[])"
            " AND last_used_at IS NOT NULL",
            ids,
        )
        return int(count)

    pacing = asyncio.get_running_loop().create_task(usage.flush(pause=3600))

    async def first_written() -> bool:
        return await written() == USAGE_CHUNK

    await eventually(first_written)
    pacing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await pacing
    assert await usage.flush() == len(ids) - USAGE_CHUNK
    assert await written() == len(ids)
