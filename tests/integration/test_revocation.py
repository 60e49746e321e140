"""Revocation through the one engine: what a client delete records (audit rows, the outbox row,
the published invalidation), against the session's real Postgres and Redis."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import redis.asyncio as redis

from introspect import credentials, store
from introspect.cache import CHANNEL, Invalidation
from introspect.config import Settings
from tests.helpers import AdminAPI, Registered, Server, admin_api
from tests.integration.test_flow import issue


@pytest.fixture
async def api(server: Server) -> AdminAPI:
    """The session server's admin API with a fresh admin key (so a unique audit actor)."""
    return await admin_api(server)


@pytest.fixture
async def published(settings: Settings) -> AsyncIterator[redis.client.PubSub]:
    """A subscription to the invalidation channel."""
    assert settings.redis_url
    listener = redis.Redis.from_url(settings.redis_url)
    pubsub = listener.pubsub()
    await pubsub.subscribe(CHANNEL)
    try:
        yield pubsub
    finally:
        await pubsub.aclose()
        await listener.aclose()


async def created(api: AdminAPI, path: str, **fields: Any) -> dict[str, Any]:
    """POST to the admin API; the created record."""
    resp = await api.call("POST", path, {**fields})
    assert resp.status == 201, resp.body
    return resp.json()


async def message_naming(pubsub: redis.client.PubSub, client_id: str) -> dict[str, Any]:
    """The next published invalidation dropping every credential of `client_id` (bounded)."""
    deadline = time.monotonic() + 5
    while True:
        assert time.monotonic() < deadline, "no invalidation naming the client was published"
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
        if message is not None:
            data: dict[str, Any] = orjson.loads(message["data"])
            if client_id in data.get("c", []):
                return data


async def credential_id(server: Server, presented: str) -> str:
    """The id of a presented credential, found by its keyed hash."""
    key = credentials.keyed_hash(server.authority.keys[0], presented)
    found: str = await server.authority.pool.fetchval(
        "SELECT id FROM credentials WHERE hash = $1", key
    )
    return found


async def deleted(
    server: Server, api: AdminAPI, pubsub: redis.client.PubSub, client_id: str
) -> tuple[list[tuple[Any, ...]], Invalidation, dict[str, Any]]:
    """DELETE a client; the audit rows its actor got, the outbox row and the published message."""
    pool = server.authority.pool
    outbox = await pool.fetchval("SELECT coalesce(max(id), 0) FROM invalidation_outbox")
    audited = await pool.fetchval("SELECT coalesce(max(id), 0) FROM audit_log")
    assert (await api.call("DELETE", f"/clients/{client_id}")).status == 204
    entries = await pool.fetch(
        "SELECT action, target_kind, target_id, details FROM audit_log"
        " WHERE id > $1 AND actor = $2 ORDER BY id",
        audited,
        api.key_id,
    )
    rows = await pool.fetch(
        "SELECT message FROM invalidation_outbox WHERE id > $1 ORDER BY id", outbox
    )
    found = [Invalidation.loads(bytes(r["message"])) for r in rows]
    (recorded,) = [i for i in found if client_id in [c for c, _version in i.records]]
    message = await message_naming(pubsub, client_id)
    return [tuple(e.values()) for e in entries], recorded, message


async def test_client_delete_records_its_revocations_its_audit_and_its_invalidation(
    server: Server, api: AdminAPI, published: redis.client.PubSub
) -> None:
    """A client delete revokes only live credentials, audits each then the delete, and records
    and publishes one invalidation: their tombstones, the client record's, the client's drop."""
    client = await created(api, "/clients", name="t-" + secrets.token_hex(4), scopes=["read"])
    client_id = client["client_id"]
    app = Registered(client_id, client["client_secret"])
    token = await credential_id(server, (await issue(server, app))["access_token"])
    key = (await created(api, "/api-keys", client_id=client_id, scopes=["read"]))["id"]
    gone = (await issue(server, app))["access_token"]
    await server.post_form("/revoke", {"token": gone}, headers=app.auth)
    expired = (await created(api, "/api-keys", client_id=client_id, scopes=["read"]))["id"]
    pool = server.authority.pool
    await pool.execute("UPDATE credentials SET exp = $2 WHERE id = $1", expired, store.now() - 1)

    entries, recorded, message = await deleted(server, api, published, client_id)

    live = sorted([(token, "access_token"), (key, "api_key")])
    assert entries == [
        *(("credential.revoke", kind, cid, "{}") for cid, kind in live),
        ("client.delete", "client", client_id, '{"revoked": 2}'),
    ]
    rows = await pool.fetch(
        "SELECT hash, version FROM credentials WHERE id = ANY($1::text[])", [token, key]
    )
    tombstones = sorted((bytes(r["hash"]), r["version"]) for r in rows)
    client_now = await store.get_client(pool, client_id)
    assert client_now is not None
    assert client_now.disabled
    assert (sorted(recorded.tombstones), recorded) == (
        tombstones,
        Invalidation(
            tombstones=recorded.tombstones,
            records=[(client_id, client_now.version)],
            clients=[client_id],
            revoked=True,
        ),
    )
    assert {k: v for k, v in message.items() if k != "n"} == {
        "r": [client_id],
        "c": [client_id],
        "x": True,
    }


async def test_client_delete_without_credentials_still_records_its_invalidation(
    server: Server, api: AdminAPI, published: redis.client.PubSub
) -> None:
    """A client holding no live credential is deleted with its audit entry and one recorded
    and published invalidation of its record, like any other."""
    client = await created(api, "/clients", name="t-" + secrets.token_hex(4))
    client_id = client["client_id"]

    entries, recorded, message = await deleted(server, api, published, client_id)

    assert entries == [("client.delete", "client", client_id, '{"revoked": 0}')]
    client_now = await store.get_client(server.authority.pool, client_id)
    assert client_now is not None
    assert recorded == Invalidation(
        records=[(client_id, client_now.version)], clients=[client_id], revoked=True
    )
    assert {k: v for k, v in message.items() if k != "n"} == {
        "r": [client_id],
        "c": [client_id],
        "x": True,
    }
