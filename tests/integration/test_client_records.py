"""Client records in Redis: what they hold, and authentication from them.

A client record read from Postgres is filled into Redis (introspect/cache/),
so that authenticating its client needs no Postgres while it is there.
"""

from __future__ import annotations

import dataclasses

from introspect import admin, store
from introspect.cache import KEY_PREFIX, client_key, decode_client
from introspect.service import Authority
from tests.helpers import Server, basic, eventually, register

GRANT = {"grant_type": "client_credentials"}


async def _record(server: Server, client_id: str) -> bytes | None:
    """The raw Redis value of a client's record."""
    raw = await server.authority.cache.redis.client.call("GET", KEY_PREFIX + client_key(client_id))
    assert raw is None or isinstance(raw, bytes)
    return raw


async def test_a_redis_record_is_the_postgres_record_with_hashes_and_no_secret(
    server: Server, authority: Authority
) -> None:
    """The record an authentication fills into Redis decodes to the record Postgres holds,
    version and secret hashes included, and carries no client secret."""
    client = await register(authority, audiences=("orders",), can_introspect=True)
    assert (await server.post_form("/token", GRANT, headers=client.auth)).status == 200
    raw = await _record(server, client.client_id)
    assert raw is not None
    truth = await store.get_client(authority.pool, client.client_id)
    assert truth is not None
    assert decode_client(raw) == truth
    assert client.secret.encode() not in raw


async def test_a_secret_past_its_grace_is_refused_from_a_redis_record(
    server: Server, authority: Authority
) -> None:
    """A Redis record filled while a rotated-out secret was in grace still lists it after the
    grace ended, and authentication refuses it then: the expiry is checked on every use."""
    client = await register(authority)
    rotated = await admin.rotate_client_secret(
        authority, "test", client.client_id, {"grace_period": 1}
    )
    fresh = dataclasses.replace(client, secret=rotated["client_secret"])
    ends = store.now() + 1
    assert (await server.post_form("/token", GRANT, headers=client.auth)).status == 200
    raw = await _record(server, client.client_id)
    assert raw is not None
    filled = decode_client(raw)
    assert filled is not None
    assert len(filled.secrets) == 2  # the new secret and the one in grace

    async def grace_over() -> bool:
        return store.now() > ends

    await eventually(grace_over, within=5)
    server.authority.local.clear()  # so that the record is read from Redis
    assert await _record(server, client.client_id) == raw
    old = await server.post_form("/token", GRANT, headers=basic(client.client_id, client.secret))
    assert old.status == 401
    assert (await server.post_form("/token", GRANT, headers=fresh.auth)).status == 200
