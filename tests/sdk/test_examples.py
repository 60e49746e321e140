"""The SDK's example apps (aiohttp and FastAPI) behind a real introspect server: what callers
see for each kind of credential (RFC 6750), and that the handler sees the introspection answer."""

from __future__ import annotations

import pytest

from introspect import admin
from introspect_sdk import ClientAuth, Guard
from tests.helpers import Registered
from tests.integration.test_limits import parse_fields
from tests.sdk.conftest import FRAMEWORKS, Example, Issuer, access_token, example_app

INVALID_TOKEN = 'Bearer error="invalid_token"'


async def test_read_token_reads_but_cannot_write(
    example: Example, issuer: Issuer, reader: Registered
) -> None:
    """A token with scope read gets 200 on the read route, whose handler sees who it is, and
    403 insufficient_scope naming `write` on the write route."""
    token = await access_token(issuer.running, reader)
    resp = await example.request("GET", "/items", token)
    assert resp.status == 200, resp.body
    assert resp.json()["sub"] == resp.json()["client_id"] == reader.client_id
    resp = await example.request("POST", "/items", token)
    assert resp.status == 403, resp.body
    assert resp.headers["WWW-Authenticate"] == 'Bearer error="insufficient_scope", scope="write"'
    assert resp.json()["error"] == "insufficient_scope"


async def test_write_token_writes(example: Example, issuer: Issuer, app_client: Registered) -> None:
    """A token with scopes read and write gets 201 on the write route."""
    token = await access_token(issuer.running, app_client)
    assert (await example.request("POST", "/items", token)).status == 201


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Authorization": "Bearer itok_unknown_credential"}, id="unknown"),
        pytest.param({}, id="missing"),
        pytest.param({"Authorization": "Basic dXNlcjpwYXNz"}, id="other-scheme"),
        pytest.param({"Authorization": "Bearer "}, id="empty"),
        pytest.param({"X-API-Key": "ikey_unknown"}, id="unknown-api-key"),
    ],
)
async def test_no_active_credential_is_401(example: Example, headers: dict[str, str]) -> None:
    """An unknown, missing or malformed credential is 401 with the RFC 6750 challenge."""
    resp = await example.call("GET", "/items", headers)
    assert resp.status == 401, resp.body
    assert resp.headers["WWW-Authenticate"] == INVALID_TOKEN
    assert resp.json()["error"] == "invalid_token"


async def test_api_key_header_carries_the_credential(
    example: Example, issuer: Issuer, reader: Registered
) -> None:
    """An API key in the named header is read like a bearer token; the handler sees its
    metadata."""
    made = await admin.create_api_key(
        issuer.running.authority,
        "test",
        {"client_id": reader.client_id, "scopes": ["read"], "metadata": {"plan": "gold"}},
    )
    resp = await example.call("GET", "/items", {"X-API-Key": made["key"]})
    assert resp.status == 200, resp.body
    assert resp.json()["metadata"] == {"plan": "gold"}
    assert (await example.call("POST", "/items", {"X-API-Key": made["key"]})).status == 403


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_server_stopped_and_nothing_cached_is_503(
    framework: str, own_issuer: Issuer, rs: Registered, reader: Registered
) -> None:
    """With introspect stopped and no answer cached, a credential is refused 503 (never let
    through); a missing one is still 401; once introspect is back, the same token passes."""
    token = await access_token(own_issuer.running, reader)
    guard = Guard(own_issuer.url, ClientAuth.with_secret(rs.client_id, rs.secret))
    example = await example_app(framework, guard)
    try:
        assert await example.status("/healthz", None) == 200
        await own_issuer.stop()
        resp = await example.request("GET", "/items", token)
        assert resp.status == 503, resp.body
        assert resp.headers["Retry-After"] == "1"
        assert resp.json()["error"] == "temporarily_unavailable"
        assert await example.status("/items", None) == 401
        assert guard.metrics.unavailable == 1
        await own_issuer.start()
        assert await example.status("/items", token) == 200
    finally:
        for close in example.closers:
            await close()


async def test_an_exhausted_limit_is_429_with_the_limit_fields(
    example: Example, issuer: Issuer, reader: Registered
) -> None:
    """A key limited to 2 uses a minute passes twice; the third use is 429 with Retry-After and
    the RateLimit fields introspect sent (a limited credential's answer is never cached, so each
    use is counted). A key whose credits are spent, with no refill, is 429 with the fields and
    no Retry-After: waiting will not help."""
    windowed = await admin.create_api_key(
        issuer.running.authority,
        "test",
        {
            "client_id": reader.client_id,
            "scopes": ["read"],
            "rate_limits": [{"name": "minute", "limit": 2, "window": 60}],
        },
    )
    spent = await admin.create_api_key(
        issuer.running.authority,
        "test",
        {"client_id": reader.client_id, "scopes": ["read"], "credits": {"remaining": 2}},
    )
    for made, name in ((windowed, "key.minute"), (spent, "key-credits")):
        headers = {"X-API-Key": str(made["key"])}
        for _ in range(2):
            resp = await example.call("GET", "/items", headers)
            assert resp.status == 200, resp.body
        resp = await example.call("GET", "/items", headers)
        assert resp.status == 429, resp.body
        assert resp.json()["error"] == "rate_limited"
        assert parse_fields(resp.headers["RateLimit"])[name]["r"] == 0
        assert name in parse_fields(resp.headers["RateLimit-Policy"])
        if name == "key.minute":
            reset = parse_fields(resp.headers["RateLimit"])[name]["t"]
            assert 1 <= int(resp.headers["Retry-After"]) == reset <= 60
        else:
            assert "Retry-After" not in resp.headers
