"""Missed messages and Redis outages: answers stay correct, and no restart is needed.

SPEC consistency promises 4 and 5: a worker whose subscription dropped
drops its in-process cache before using it again; without Redis the server
answers from Postgres, and a revocation made meanwhile is not hidden by a
stale Redis entry once Redis is back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import jwt
import pytest

from introspect import admin, credentials, feed, rfc8417
from introspect.cache import KEY_PREFIX
from introspect.config import Settings
from introspect.service import Authority
from introspect.store import Selection
from tests.helpers import Registered, Server, eventually, register, start_server
from tests.valkey import Valkey, serving

GRANT = {"grant_type": "client_credentials"}


async def test_killed_subscription_drops_the_in_process_cache(
    server: Server, app_client: Registered, resource_server: Registered
) -> None:
    """After CLIENT KILL of the subscriber, a change it missed is not answered from memory."""
    token = (await server.post_form("/token", GRANT, headers=app_client.auth)).json()[
        "access_token"
    ]
    form = {"token": token}
    assert (await server.post_form("/introspect", form, headers=resource_server.auth)).json()[
        "active"
    ]
    listener = server.authority.listener
    assert listener is not None
    before = listener.subscriptions
    await server.authority.cache.redis.client.call("CLIENT", "KILL", "TYPE", "pubsub")
    # A revocation whose message this worker never sees: Postgres and Redis change, no PUBLISH.
    key = credentials.keyed_hash(server.authority.server_secrets[0], token)
    await server.authority.pool.execute(
        "UPDATE credentials SET revoked_at = 1, version = nextval('change_version')"
        " WHERE hash = $1",
        key,
    )
    await server.authority.cache.redis.client.call("DEL", KEY_PREFIX + key)

    async def resubscribed() -> bool:
        return listener.subscriptions > before

    await eventually(resubscribed)
    resp = await server.post_form("/introspect", form, headers=resource_server.auth)
    assert resp.body == b'{"active":false}'


async def test_silent_listener_stops_answering_from_memory_before_the_revoke_returns(
    settings: Settings, authority: Authority, resource_server: Registered
) -> None:
    """A worker whose subscription went silent (no read, no close) answers a token revoked
    meanwhile as inactive once the revoke returns, though it never saw nor acknowledged it."""
    test_server, silent = await start_server(settings)
    try:
        app = await register(authority)
        token = (await silent.post_form("/token", GRANT, headers=app.auth)).json()["access_token"]
        form = {"token": token}
        first = await silent.post_form("/introspect", form, headers=resource_server.auth)
        assert first.json()["active"] is True  # now in its in-process cache
        listener = silent.authority.listener
        assert listener is not None
        assert listener.subscription is not None
        listener.subscription.pause(True)  # invalidations and heartbeats now stay unread
        revoked = await authority.revoke_presented(token, actor="test", owner=None)
        assert revoked.count == 1
        # Every listener but the silent one acknowledged; the call waited for it, then returned.
        resp = await silent.post_form("/introspect", form, headers=resource_server.auth)
        assert resp.body == b'{"active":false}'
        listener.subscription.pause(False)
        await eventually(lambda: _fresh(silent))
        resp = await silent.post_form("/introspect", form, headers=resource_server.auth)
        assert resp.body == b'{"active":false}'
    finally:
        await silent.http.close()
        await test_server.close()


async def _fresh(server: Server) -> bool:
    """Whether a heartbeat vouches for the server's in-process cache right now."""
    return server.authority.local.fresh_until > time.monotonic()


@pytest.fixture
async def outage_server(settings: Settings, valkey: Valkey) -> AsyncIterator[Server]:
    """An app on the session's Postgres and this test's private Valkey."""
    async with serving(settings, valkey) as srv:
        yield srv


async def test_redis_outage_answers_from_postgres_and_replays_revocations(
    outage_server: Server, valkey: Valkey
) -> None:
    """Without Redis answers stay right; a revocation made then is not undone by old Redis data."""
    srv = outage_server
    app = await register(srv.authority)
    rs = await register(srv.authority, scopes=(), can_introspect=True)
    doomed = (await srv.post_form("/token", GRANT, headers=app.auth)).json()["access_token"]
    kept = (await srv.post_form("/token", GRANT, headers=app.auth)).json()["access_token"]

    async def active(token: str) -> bool:
        resp = await srv.post_form("/introspect", {"token": token}, headers=rs.auth)
        assert resp.status == 200
        return resp.json()["active"]

    assert await active(doomed)  # cached active in Redis, and saved in its snapshot below
    assert await active(kept)
    await valkey.stop_keeping_data()

    assert await active(kept)  # answered from Postgres

    async def degraded() -> bool:  # readiness is computed at most once a second
        ready = await srv.request("GET", "/readyz")
        assert ready.status == 200
        return bool(ready.json()["status"] == "degraded")

    await eventually(degraded)
    revoked = await srv.authority.revoke_presented(doomed, actor="test", owner=None)
    assert revoked.count == 1
    assert revoked.announced.pending  # honest: committed, invalidation not yet published
    assert not await active(doomed)

    valkey.start()  # the snapshot brings the stale active entry back
    await valkey.wait_ready()

    async def recovered() -> bool:
        return (await srv.request("GET", "/readyz")).json()["status"] == "ok"

    await eventually(recovered)
    assert not await active(doomed)
    assert await active(kept)
    pending = await srv.authority.pool.fetchval(
        "SELECT count(*) FROM invalidation_outbox WHERE published_at IS NULL"
    )
    assert pending == 0


async def test_a_parked_feed_poll_is_answered_from_postgres_while_redis_is_dead(
    outage_server: Server, valkey: Valkey
) -> None:
    """With Redis killed (SIGKILL) while a long poll of /events is parked, a revocation made
    meanwhile (its invalidation unpublished) still reaches the poll: each loss of the
    subscription (and each failed attempt to subscribe again) wakes it, and unsubscribed it
    reads Postgres at least every feed.RECHECK seconds. Bounded under the 30 s after which
    any poll is answered."""
    srv = outage_server
    rs = await register(srv.authority, scopes=(), can_introspect=True)
    key = await admin.create_api_key(srv.authority, "test", {"sub": "outage", "scopes": ["r"]})
    events = {**rs.auth, "Content-Type": "application/json"}
    first = await srv.request("POST", "/events", json={"returnImmediately": True}, headers=events)
    parked = asyncio.create_task(
        srv.request("POST", "/events", json={"ack": list(first.json()["sets"])}, headers=events)
    )
    await eventually(lambda: _parked(srv.authority, parked))
    valkey.kill()
    revoked = await srv.authority.revoke("test", Selection(id=key["id"]))
    assert revoked.announced.pending
    answer = await asyncio.wait_for(parked, 2 * feed.RECHECK + 5)
    (token,) = answer.json()["sets"].values()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["events"] == {rfc8417.CREDENTIAL_REVOKED: {"jti": key["id"]}}
    assert feed.RECHECK * 2 + 5 < feed.LONG_POLL


async def _parked(authority: Authority, poll: asyncio.Task[object]) -> bool:
    assert not poll.done()
    return authority.feed.waiting == 1
