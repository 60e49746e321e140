"""Fixtures of the SDK's tests: introspect servers whose issuer is their own URL (so the SDK
discovers reachable endpoints), clients, tokens, and the example apps (aiohttp and FastAPI)
protected by a guard, all over real connections to the session's Postgres and Redis."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict

from introspect.config import Settings
from introspect.service import Authority
from introspect_sdk import ClientAuth, Guard
from tests.helpers import Answer, Registered, Server, eventually, free_port, register, start_server

EXAMPLES = Path(__file__).resolve().parents[2] / "sdk" / "examples"
sys.path.insert(0, str(EXAMPLES))

import aiohttp_app  # noqa: E402 (the examples are scripts in sdk/examples, not a package)
import fastapi_app  # noqa: E402

FRAMEWORKS = ("aiohttp", "fastapi")


@dataclass
class Issuer:
    """An introspect server on a fixed loopback port, its issuer that URL; it can be stopped
    and started again on the same port (a restart, as a resource server sees it)."""

    settings: Settings
    port: int
    test_server: TestServer | None = None
    server: Server | None = None

    @property
    def url(self) -> str:
        """Its issuer: the URL resource servers reach it at."""
        return self.settings.issuer

    async def start(self) -> Server:
        """Serve (again)."""
        self.test_server, self.server = await start_server(self.settings, port=self.port)
        return self.server

    async def stop(self) -> None:
        """Stop serving: listening socket and connections closed."""
        if self.server is not None:
            await self.server.http.close()
        if self.test_server is not None:
            await self.test_server.close()
        self.test_server = self.server = None

    @property
    def running(self) -> Server:
        """The running server (fails when stopped)."""
        assert self.server is not None
        return self.server


async def issuer_of(settings: Settings, public_port: int | None = None) -> Issuer:
    """A started Issuer on a free port, its issuer that port's URL or `public_port`'s (where
    a relay forwards to it)."""
    port = free_port()
    public = f"http://127.0.0.1:{public_port or port}"
    issuer = Issuer(replace(settings, issuer_override=public), port)
    await issuer.start()
    return issuer


@pytest.fixture(scope="session")
async def issuer(settings: Settings) -> AsyncIterator[Issuer]:
    """One such server for the session's tests that leave it running."""
    started = await issuer_of(settings)
    try:
        yield started
    finally:
        await started.stop()


@pytest.fixture
async def own_issuer(settings: Settings) -> AsyncIterator[Issuer]:
    """A server of this test's own, to stop and restart."""
    started = await issuer_of(settings)
    try:
        yield started
    finally:
        await started.stop()


@pytest.fixture
async def rs(authority: Authority) -> Registered:
    """The resource server's own client: allowed to introspect, no audiences."""
    return await register(authority, scopes=(), can_introspect=True)


@pytest.fixture
async def reader(authority: Authority) -> Registered:
    """A service client allowed scope `read` only."""
    return await register(authority, scopes=("read",))


async def access_token(server: Server, client: Registered, scope: str | None = None) -> str:
    """A fresh access token of `client` (client credentials grant)."""
    form = {"grant_type": "client_credentials", **({"scope": scope} if scope else {})}
    resp = await server.post_form("/token", form, headers=client.auth)
    assert resp.status == 200, resp.body
    token: str = resp.json()["access_token"]
    return token


async def revoke(server: Server, client: Registered, token: str) -> None:
    """Revoke `token` as its client (RFC 7009)."""
    resp = await server.post_form("/revoke", {"token": token}, headers=client.auth)
    assert resp.status == 200, resp.body


@dataclass
class Example:
    """One of the example apps, protected by `guard`, and a way to call it."""

    framework: str
    guard: Guard
    call: Any  # async (method, path, headers) -> Answer
    closers: list[Any] = field(default_factory=list)
    url: str = ""  # the aiohttp app's base URL
    app: Any = None  # the FastAPI app

    async def request(
        self, method: str, path: str, token: str | None = None, **headers: str
    ) -> Answer:
        """`method path` with `token` as a bearer credential, when given."""
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return await self.call(method, path, headers)

    async def status(self, path: str, token: str | None) -> int:
        """The status of `GET path`."""
        return (await self.request("GET", path, token)).status

    async def following(self) -> None:
        """Wait (bounded) until the guard follows the feed, so answers are cached."""
        await self.guard.metadata()

        async def following() -> bool:
            return self.guard.feed is not None and self.guard.feed.following

        await eventually(following, within=10)


async def example_app(framework: str, guard: Guard) -> Example:
    """The example app of `framework`, started, over real HTTP (aiohttp) or ASGI (FastAPI)."""
    if framework == "aiohttp":
        server = TestServer(aiohttp_app.create_app(guard))
        await server.start_server()
        http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

        async def call_aiohttp(method: str, path: str, headers: dict[str, str]) -> Answer:
            async with http.request(method, str(server.make_url(path)), headers=headers) as r:
                return Answer(r.status, CIMultiDict(r.headers), await r.read())

        url = str(server.make_url("")).rstrip("/")
        return Example(framework, guard, call_aiohttp, [http.close, server.close], url=url)
    app = fastapi_app.create_app(guard)
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://example")

    async def call_fastapi(method: str, path: str, headers: dict[str, str]) -> Answer:
        r = await client.request(method, path, headers=headers)
        return Answer(r.status_code, CIMultiDict(r.headers), r.content)

    async def leave() -> None:
        await lifespan.__aexit__(None, None, None)

    return Example(framework, guard, call_fastapi, [client.aclose, leave], app=app)


@pytest.fixture(params=FRAMEWORKS)
async def example(
    request: pytest.FixtureRequest, issuer: Issuer, rs: Registered
) -> AsyncIterator[Example]:
    """An example app behind the session's issuer, authenticated by client secret."""
    guard = Guard(
        issuer.url, ClientAuth.with_secret(rs.client_id, rs.secret), api_key_header="X-API-Key"
    )
    app = await example_app(request.param, guard)
    try:
        yield app
    finally:
        for close in app.closers:
            await close()
