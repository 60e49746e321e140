"""RFC 7662 at /introspect: who may call it, what each caller sees, inactive answers."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

from introspect import admin, credentials
from introspect.config import Settings
from introspect.credentials import Kind
from introspect.service import Authority
from tests.helpers import Registered, Server, register, start_server

GRANT = {"grant_type": "client_credentials"}


async def token_for(server: Server, client: Registered, **form: str) -> str:
    resp = await server.post_form("/token", {**GRANT, **form}, headers=client.auth)
    assert resp.status == 200, resp.body
    return resp.json()["access_token"]


async def test_caller_must_authenticate(server: Server) -> None:
    """Introspection without client authentication is 401 invalid_client."""
    resp = await server.post_form("/introspect", {"token": "x"})
    assert resp.status == 401
    assert resp.json()["error"] == "invalid_client"


async def test_caller_must_be_allowed(server: Server, app_client: Registered) -> None:
    """A client without the introspection right is 403 unauthorized_client."""
    resp = await server.post_form("/introspect", {"token": "x"}, headers=app_client.auth)
    assert resp.status == 403
    assert resp.json()["error"] == "unauthorized_client"


async def test_missing_token_is_invalid_request(
    server: Server, resource_server: Registered
) -> None:
    """A missing token parameter is 400 invalid_request."""
    resp = await server.post_form(
        "/introspect", {"token_type_hint": "access_token"}, headers=resource_server.auth
    )
    assert resp.status == 400
    assert resp.json()["error"] == "invalid_request"


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        credentials.generate(Kind.ACCESS_TOKEN),  # well-formed, unknown
        credentials.generate(Kind.ACCESS_TOKEN)[:-1] + "0",  # bad checksum
        credentials.generate(Kind.CLIENT_SECRET),  # a secret is not a token
        credentials.generate(Kind.ADMIN_KEY),
    ],
)
async def test_unknown_and_malformed_are_exactly_inactive(
    server: Server, resource_server: Registered, token: str
) -> None:
    """Every inactive case answers exactly {"active": false}."""
    resp = await server.post_form("/introspect", {"token": token}, headers=resource_server.auth)
    assert resp.status == 200
    assert resp.body == b'{"active":false}'


async def test_malformed_credentials_cost_no_io(
    server: Server, resource_server: Registered
) -> None:
    """A wrong prefix or checksum is answered without a Redis or Postgres lookup."""
    from introspect.metrics import METRICS

    def count() -> float:
        # Every lookup beyond memory counts an in-process miss first; Redis and Postgres
        # call counters would also count the server's background work (usage flushes).
        counters = (METRICS.local_hits, METRICS.local_misses, METRICS.redis_hits)
        return sum(counter.value() for counter in (*counters, METRICS.redis_misses))

    good = credentials.generate(Kind.API_KEY)
    bad = good[:-1] + ("Y" if good.endswith("Z") else "Z")  # a checksum it does not have
    await server.post_form("/introspect", {"token": "warm"}, headers=resource_server.auth)
    before = count()
    for token in (bad, "x" * 600, "ikey_short"):
        resp = await server.post_form("/introspect", {"token": token}, headers=resource_server.auth)
        assert resp.body == b'{"active":false}'
    assert count() == before


async def test_audience_restricted_resource_server(server: Server, authority: Authority) -> None:
    """A resource server with audiences sees only credentials whose aud shares one."""
    issuer = await register(authority, audiences=("https://orders", "https://billing"))
    orders_rs = await register(
        authority, scopes=(), audiences=("https://orders",), can_introspect=True
    )
    other_rs = await register(
        authority, scopes=(), audiences=("https://other",), can_introspect=True
    )
    open_rs = await register(authority, scopes=(), can_introspect=True)
    billing_only = await token_for(server, issuer, audience="https://billing")
    both = await token_for(server, issuer)

    async def active(rs: Registered, token: str) -> bool:
        resp = await server.post_form("/introspect", {"token": token}, headers=rs.auth)
        return resp.json()["active"]

    assert await active(orders_rs, both)
    assert not await active(orders_rs, billing_only)
    assert not await active(other_rs, both)
    assert await active(open_rs, billing_only)


async def test_disabled_owner_makes_tokens_inactive_while_disabled(
    server: Server, authority: Authority, resource_server: Registered
) -> None:
    """A disabled client's tokens introspect inactive, and active again once re-enabled."""
    client = await register(authority)
    token = await token_for(server, client)

    async def set_disabled(value: bool) -> None:
        await admin.update_client(authority, "test", client.client_id, {"disabled": value})

    async def active() -> bool:
        resp = await server.post_form("/introspect", {"token": token}, headers=resource_server.auth)
        return resp.json()["active"]

    assert await active()
    await set_disabled(True)
    assert not await active()
    await set_disabled(False)
    assert await active()


async def test_cached_token_turns_inactive_at_exp(
    server: Server, authority: Authority, resource_server: Registered
) -> None:
    """A token cached in every layer answers inactive as soon as its exp passes."""
    client = await register(authority, token_ttl=1)
    token = await token_for(server, client)
    resp = await server.post_form("/introspect", {"token": token}, headers=resource_server.auth)
    exp = resp.json()["exp"]
    await asyncio.sleep(max(0.0, exp - time.time()) + 0.01)  # the condition is the clock
    resp = await server.post_form("/introspect", {"token": token}, headers=resource_server.auth)
    assert resp.body == b'{"active":false}'


async def test_expired_credential_is_cached_as_inactive(
    server: Server, authority: Authority, resource_server: Registered
) -> None:
    """Presenting an expired credential again costs no Postgres query."""
    from introspect.metrics import METRICS

    client = await register(authority, token_ttl=1)
    token = await token_for(server, client)
    await authority.pool.execute(
        "UPDATE credentials SET exp = exp - 10 WHERE client_id = $1", client.client_id
    )
    first = await server.post_form("/introspect", {"token": token}, headers=resource_server.auth)
    assert first.body == b'{"active":false}'
    before = METRICS.pg_queries.value()
    for _ in range(3):
        again = await server.post_form(
            "/introspect", {"token": token}, headers=resource_server.auth
        )
        assert again.body == b'{"active":false}'
    assert METRICS.pg_queries.value() == before


async def test_revoked_credential_costs_no_lookup_afterwards(
    server: Server, app_client: Registered, resource_server: Registered
) -> None:
    """A revocation leaves the inactive state in every layer: no Redis or Postgres read follows."""
    from introspect.metrics import METRICS

    def count() -> float:
        return METRICS.redis_calls.value() + METRICS.pg_queries.value()

    token = await token_for(server, app_client)
    first = await server.post_form("/introspect", {"token": token}, headers=resource_server.auth)
    assert first.json()["active"] is True
    revoked = await server.post_form("/revoke", {"token": token}, headers=app_client.auth)
    assert revoked.status == 200
    before = count()
    resp = await server.post_form("/introspect", {"token": token}, headers=resource_server.auth)
    assert resp.body == b'{"active":false}'
    assert count() == before  # answered from this worker's cache, put there by the listener
    server.authority.local.clear()
    # The caller's client record, cleared too, is read once again first.
    await server.post_form("/introspect", {"token": "warm"}, headers=resource_server.auth)
    before_pg = METRICS.pg_queries.value()
    resp = await server.post_form("/introspect", {"token": token}, headers=resource_server.auth)
    assert resp.body == b'{"active":false}'
    assert METRICS.pg_queries.value() == before_pg  # Redis holds the inactive answer itself


@pytest.mark.parametrize(
    "content_type",
    [
        "application/x-www-form-urlencoded",
        "application/x-www-form-urlencoded; charset=UTF-8",
        "Application/X-WWW-Form-Urlencoded",
    ],
)
async def test_form_media_type_is_matched_as_a_media_type(
    server: Server, resource_server: Registered, content_type: str
) -> None:
    """The form media type is recognised with parameters and in any case (RFC 9110 §8.3.1)."""
    resp = await server.post_form(
        "/introspect",
        b"token=iat_unknown",
        headers={"Content-Type": content_type, **resource_server.auth},
    )
    assert resp.status == 200
    assert resp.body == b'{"active":false}'


@pytest.mark.parametrize("token_format", ["opaque", "jwt"])
async def test_a_credential_in_constant_use_stays_in_memory_past_its_lifetime(
    settings: Settings, token_format: str
) -> None:
    """Hot entries (JWTs too) are read again from Redis before their in-process life ends."""
    from introspect.metrics import METRICS

    test_server, server = await start_server(dataclasses.replace(settings, local_cache_ttl=1.0))
    try:
        issuer = await register(
            server.authority, audiences=("https://api",), token_format=token_format
        )
        rs = await register(server.authority, scopes=(), can_introspect=True)
        token = await token_for(server, issuer)
        assert token.count(".") == (2 if token_format == "jwt" else 0)
        first = await server.post_form("/introspect", {"token": token}, headers=rs.auth)
        assert first.json()["active"] is True
        misses, mgets = METRICS.local_misses.value(), METRICS.redis_calls.value()
        deadline = time.monotonic() + 2.5  # two and a half in-process lifetimes
        while time.monotonic() < deadline:
            resp = await server.post_form("/introspect", {"token": token}, headers=rs.auth)
            assert resp.json()["active"] is True
            await asyncio.sleep(0.02)
        assert METRICS.local_misses.value() == misses
        assert METRICS.redis_calls.value() > mgets  # the refreshes
    finally:
        await server.http.close()
        await test_server.close()


async def test_answers_say_how_long_a_resource_server_may_reuse_them(
    server: Server, authority: Authority, resource_server: Registered
) -> None:
    """Cache-Control: private, max-age = INTROSPECT_RS_CACHE_TTL (60) for an active answer,
    never past exp; for an inactive one, no longer than the negative cache (30 s); the same
    on the memory path, the stores path and the signed (RFC 9701) answer. No more no-store:
    a resource server following the revocation feed may cache them."""
    forever = await admin.create_api_key(authority, "test", {"sub": "cc", "scopes": ["read"]})
    soon = await admin.create_api_key(
        authority, "test", {"sub": "cc", "scopes": ["read"], "expires_in": 20}
    )
    cases = [(forever["key"], 60), (soon["key"], None), ("nope", 30)]
    for token, max_age in cases:
        for accept in (
            "application/json",
            "application/json",
            "application/token-introspection+jwt",
        ):
            resp = await server.post_form(
                "/introspect", {"token": token}, headers={**resource_server.auth, "Accept": accept}
            )
            assert resp.status == 200
            cache = resp.headers["Cache-Control"]
            assert cache.startswith("private, max-age=")
            assert "Pragma" not in resp.headers
            seconds = int(cache.removeprefix("private, max-age="))
            if max_age is None:
                assert 0 < seconds <= 20
            else:
                assert seconds == max_age
