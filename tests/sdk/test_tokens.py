"""The SDK's client side against a real server: the token provider (client secret, access key),
its single refresh for concurrent callers, and the aiohttp and httpx helpers that add the token."""

from __future__ import annotations

import asyncio

import aiohttp
import httpx
import pytest

from introspect import admin
from introspect_sdk import ClientAuth, Guard, TokenError, TokenProvider
from introspect_sdk.aiohttp import BearerMiddleware
from introspect_sdk.httpx import BearerAuth
from tests.helpers import Registered
from tests.sdk.conftest import Example, Issuer, example_app


async def access_key(issuer: Issuer, client: Registered) -> str:
    """A new access key string for `client`."""
    made = await admin.create_access_key(issuer.running.authority, "test", client.client_id, {})
    key: str = made["access_key"]
    return key


async def test_one_fetch_for_fifty_concurrent_callers(issuer: Issuer, reader: Registered) -> None:
    """Fifty callers at once share one token request; after the token is dropped, fifty more
    share one refresh."""
    auth = ClientAuth.with_secret(reader.client_id, reader.secret)
    async with TokenProvider(issuer.url, auth) as provider:
        first = await asyncio.gather(*(provider.token() for _ in range(50)))
        assert len(set(first)) == 1
        assert provider.fetches == 1
        provider.forget(first[0])
        second = await asyncio.gather(*(provider.token() for _ in range(50)))
        assert len(set(second)) == 1
        assert second[0] != first[0]
        assert provider.fetches == 2


async def test_access_key_gets_tokens_by_private_key_jwt(
    issuer: Issuer, reader: Registered, example: Example
) -> None:
    """An access key string alone gets tokens (private_key_jwt at /token) that the example app
    accepts, sent by the aiohttp client middleware and by the httpx auth class."""
    auth = ClientAuth.with_access_key(await access_key(issuer, reader))
    assert auth.method == "private_key_jwt"
    assert auth.client_id == reader.client_id
    async with TokenProvider(issuer.url, auth, scope=["read"]) as provider:
        token = await provider.token()
        assert (await example.request("GET", "/items", token)).json()["sub"] == reader.client_id
        if example.framework == "aiohttp":
            middleware = BearerMiddleware(provider)
            async with (
                aiohttp.ClientSession(middlewares=(middleware,)) as http,
                http.get(example.url + "/items") as resp,
            ):
                assert resp.status == 200
        else:
            transport = httpx.ASGITransport(app=example.app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://example", auth=BearerAuth(provider)
            ) as http:
                assert (await http.get("/items")).status_code == 200
        assert provider.fetches == 1


async def test_guard_authenticates_with_an_access_key(
    issuer: Issuer, rs: Registered, reader: Registered
) -> None:
    """A resource server whose guard holds only an access key introspects by private_key_jwt."""
    guard = Guard(issuer.url, ClientAuth.with_access_key(await access_key(issuer, rs)))
    app = await example_app("aiohttp", guard)
    try:
        auth = ClientAuth.with_secret(reader.client_id, reader.secret)
        async with TokenProvider(issuer.url, auth) as provider:
            assert await app.status("/items", await provider.token()) == 200
    finally:
        for close in app.closers:
            await close()


async def test_a_refused_grant_is_a_token_error(issuer: Issuer, reader: Registered) -> None:
    """A wrong secret is a TokenError carrying the server's error code, and no token."""
    auth = ClientAuth.with_secret(reader.client_id, "isec_wrong")
    async with TokenProvider(issuer.url, auth) as provider:
        with pytest.raises(TokenError) as refused:
            await provider.token()
        assert refused.value.error == "invalid_client"
        assert provider.fetches == 0
