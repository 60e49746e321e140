"""Revocation through the admin API by each selector, and what it publishes."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import orjson
import redis.asyncio as redis
from aiohttp.test_utils import TestServer

from introspect import store
from introspect.app import create_app
from introspect.cache import CHANNEL
from introspect.config import Settings
from introspect.service import Authority
from tests.admin_helpers import active, created_key, revoke, token_works, unique
from tests.helpers import AdminAPI, Registered, Server, free_port, register
from tests.integration.test_flow import issue


async def test_revoke_by_token_id_or_jti(
    server: Server, api: AdminAPI, resource_server: Registered, app_client: Registered
) -> None:
    """Revocation by token, id or jti kills the credential at once and counts it once."""
    for selector in ("token", "id", "jti"):
        issued = await created_key(api, client_id=app_client.client_id, scopes=["read"])
        value = issued["key"] if selector == "token" else issued["id"]
        assert await active(server, resource_server, issued["key"])
        answer = await revoke(api, {selector: value})
        assert answer["revoked"] == 1
        assert answer["listeners"] >= 1
        assert "invalidation" not in answer
        assert not await active(server, resource_server, issued["key"])
        assert (await revoke(api, {selector: value}))["revoked"] == 0


async def test_revoke_by_client_id_takes_its_tokens_and_keys(
    server: Server, api: AdminAPI, resource_server: Registered, authority: Authority
) -> None:
    """Revocation by client_id revokes its access tokens and API keys, no one else's."""
    app, other = await register(authority), await register(authority)
    held = [(await issue(server, app))["access_token"] for _ in range(2)]
    held.append((await created_key(api, client_id=app.client_id, scopes=["read"]))["key"])
    spared = (await issue(server, other))["access_token"]
    for credential in [*held, spared]:
        assert await active(server, resource_server, credential)
    assert (await revoke(api, {"client_id": app.client_id}))["revoked"] == 3
    for credential in held:
        assert not await active(server, resource_server, credential)
    assert await active(server, resource_server, spared)
    assert await token_works(server, app.client_id, app.secret)


async def test_revoke_by_sub_spans_several_clients(
    server: Server, api: AdminAPI, resource_server: Registered, authority: Authority
) -> None:
    """Revocation by sub revokes that subject's keys under every client and under none."""
    sub = unique("user")
    first, second = await register(authority), await register(authority)
    keys = [
        (await created_key(api, client_id=first.client_id, sub=sub, scopes=["read"]))["key"],
        (await created_key(api, client_id=second.client_id, sub=sub, scopes=["write"]))["key"],
        (await created_key(api, sub=sub, scopes=["any"]))["key"],
    ]
    spared = (await created_key(api, client_id=first.client_id, scopes=["read"]))["key"]
    for key in [*keys, spared]:
        assert await active(server, resource_server, key)
    assert (await revoke(api, {"sub": sub}))["revoked"] == 3
    for key in keys:
        assert not await active(server, resource_server, key)
    assert await active(server, resource_server, spared)


async def test_bulk_revocation_publishes_one_message_naming_the_subject_or_client(
    settings: Settings, api: AdminAPI, app_client: Registered
) -> None:
    """Revocation by sub or client_id publishes one message naming it, not key by key."""
    sub = unique("user")
    for _ in range(3):
        await created_key(api, client_id=app_client.client_id, sub=sub, scopes=["read"])
    # Left for the revocation by client_id: one that revokes nothing publishes nothing.
    await created_key(api, client_id=app_client.client_id, sub=unique("user"), scopes=["read"])
    assert settings.redis_url
    listener = redis.Redis.from_url(settings.redis_url)
    pubsub = listener.pubsub()
    try:
        await pubsub.subscribe(CHANNEL)
        seen = []
        for body, field, value in (
            ({"sub": sub}, "s", sub),
            ({"client_id": app_client.client_id}, "c", app_client.client_id),
        ):
            await revoke(api, body)
            deadline = time.monotonic() + 5
            published: dict[str, Any] = {}
            while published.get(field) != [value]:
                assert time.monotonic() < deadline, "no invalidation naming it was published"
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                if message is not None:
                    published = orjson.loads(message["data"])
            assert "k" not in published
            seen.append(published)
        assert len(seen) == 2
    finally:
        await pubsub.aclose()
        await listener.aclose()


async def test_revocation_selector_rules(api: AdminAPI) -> None:
    """Exactly one known selector with a string value is required; no match is 200 with 0."""
    for body in ({}, {"id": "a", "sub": "b"}, {"kid": "x"}, {"sub": 5}, {"token": ""}):
        assert (await api.call("POST", "/revocations", body)).status == 400
    for body in ({"token": "not-a-credential"}, {"sub": unique()}, {"client_id": unique()}):
        assert (await revoke(api, body))["revoked"] == 0


async def test_revocation_says_when_the_invalidation_is_pending(
    settings: Settings, api: AdminAPI, authority: Authority
) -> None:
    """With Redis unreachable a revocation still commits and answers "invalidation": "pending"."""
    assert settings.database_url
    app = create_app(settings, settings.database_url, f"redis://127.0.0.1:{free_port()}/0")
    test_server = TestServer(app)
    await test_server.start_server()
    try:
        down = dataclasses.replace(
            api.server, url=str(test_server.make_url("")).rstrip("/"), app=app
        )
        issued = await created_key(api, sub=unique(), scopes=[])
        resp = await dataclasses.replace(api, server=down).call(
            "POST", "/revocations", {"id": issued["id"]}
        )
        assert resp.json() == {"revoked": 1, "listeners": 0, "invalidation": "pending"}
        found = await store.get_credential(authority.pool, issued["id"])
        assert found is not None
        assert found.revoked_at is not None
    finally:
        await test_server.close()
        await authority.cache.replay_outbox(older_than=store.now() + 1)
