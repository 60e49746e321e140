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

from introspect import credentials, revocation, store
from introspect.cache import CHANNEL, Invalidation
from introspect.config import Settings
from introspect.store import NewCredential, Selection
from tests.helpers import AdminAPI, Registered, Server, admin_api, register
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
    key = credentials.keyed_hash(server.authority.server_secrets[0], presented)
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


SHAPES = ["presented", "presented by its owner", "id", "client", "subject", "client and record"]


@pytest.mark.parametrize("shape", SHAPES)
async def test_the_recorded_invalidation_is_the_one_announced(server: Server, shape: str) -> None:
    """For every shape of selection, the outbox row the revoking statement builds reads back
    as the invalidation announced, and each revoked credential is audited with its kind."""
    authority = server.authority
    app = await register(authority)
    token = (await issue(server, app))["access_token"]
    key = credentials.keyed_hash(authority.server_secrets[0], token)
    token_id = await credential_id(server, token)
    sub = "user-" + secrets.token_hex(6)
    await store.insert_credential(
        authority.pool,
        NewCredential(
            id=token_id + "-key",
            kind="api_key",
            hash=secrets.token_bytes(32),
            client_id=app.client_id,
            sub=sub,
            scopes=(),
            audiences=(),
            iat=store.now(),
            exp=None,
        ),
    )
    selection, records = {
        "presented": (Selection(hashes=(key, b"\0" * 32)), []),
        "presented by its owner": (Selection(hashes=(key,), client_id=app.client_id), []),
        "id": (Selection(id=token_id), []),
        "client": (Selection(client_id=app.client_id), []),
        "subject": (Selection(sub=sub), []),
        "client and record": (Selection(client_id=app.client_id), [(app.client_id, 7)]),
    }[shape]

    recorded = await revocation.record(authority.pool, "test", selection, records)

    assert recorded.outbox_id is not None
    assert recorded.rows
    raw = await authority.pool.fetchval(
        "DELETE FROM invalidation_outbox WHERE id = $1 RETURNING message", recorded.outbox_id
    )
    assert Invalidation.loads(bytes(raw)) == recorded.invalidation
    kinds = await authority.pool.fetch(
        "SELECT target_id, target_kind FROM audit_log WHERE target_id = ANY($1::text[])"
        " AND action = 'credential.revoke'",
        [credential for credential, _key, _version in recorded.rows],
    )
    assert sorted(tuple(k.values()) for k in kinds) == sorted(
        (credential, "api_key" if credential.endswith("-key") else "access_token")
        for credential, _key, _version in recorded.rows
    )


async def test_a_revocation_naming_nothing_live_writes_nothing(server: Server) -> None:
    """A selection matching no live credential writes no audit entry and no outbox row."""
    authority = server.authority
    outbox = await authority.pool.fetchval("SELECT coalesce(max(id), 0) FROM invalidation_outbox")
    recorded = await revocation.record(
        authority.pool, "test", Selection(id="tok_" + secrets.token_hex(11))
    )
    assert (recorded.outbox_id, recorded.rows) == (None, [])
    assert (
        await authority.pool.fetchval(
            "SELECT count(*) FROM invalidation_outbox WHERE id > $1", outbox
        )
        == 0
    )


async def test_an_empty_selection_is_refused() -> None:
    """A selection naming no field cannot revoke every credential: it is refused unsent."""
    with pytest.raises(ValueError, match="must name"):
        await store.revoke_recorded(None, "test", Selection())
