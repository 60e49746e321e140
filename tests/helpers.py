"""Helpers shared by the integration tests: a running server, client registration."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import aiohttp
import orjson
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.web_runner import BaseRunner
from multidict import CIMultiDict

from introspect import admin
from introspect.app import create_app
from introspect.config import Settings
from introspect.service import Authority
from introspect.web.keys import AUTHORITY, SETTINGS
from introspect.web.protocol import HEAD_TIMEOUT, Runner


@dataclass(frozen=True)
class Answer:
    """An HTTP answer read whole: status, headers and body."""

    status: int
    headers: CIMultiDict[str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON."""
        return orjson.loads(self.body)


@dataclass
class Server:
    """A running test server: its base URL, its app's authority and an HTTP session."""

    url: str
    app: web.Application
    http: aiohttp.ClientSession

    @property
    def authority(self) -> Authority:
        """The server's Authority (its caches, pools and services)."""
        return self.app[AUTHORITY]

    async def post_form(
        self, path: str, data: dict[str, Any] | list[tuple[str, str]] | bytes | str, **kw: Any
    ) -> Answer:
        """POST a form (or raw body) and read the answer whole."""
        async with self.http.post(self.url + path, data=data, **kw) as resp:
            return Answer(resp.status, CIMultiDict(resp.headers), await resp.read())

    async def request(self, method: str, path: str, **kw: Any) -> Answer:
        """Any request, its answer read whole."""
        async with self.http.request(method, self.url + path, **kw) as resp:
            return Answer(resp.status, CIMultiDict(resp.headers), await resp.read())


class HardenedTestServer(TestServer):
    """aiohttp's TestServer over the connection layer `introspect serve` uses."""

    def __init__(
        self, app: web.Application, *, head_timeout: float = HEAD_TIMEOUT, port: int | None = None
    ) -> None:
        super().__init__(app, port=port)
        self.head_timeout = head_timeout

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        settings = self.app[SETTINGS]
        return Runner(
            self.app,
            keepalive_timeout=settings.keepalive_timeout,
            head_timeout=self.head_timeout,
            **kwargs,
        )


async def start_server(
    settings: Settings, *, head_timeout: float = HEAD_TIMEOUT, port: int | None = None
) -> tuple[TestServer, Server]:
    """Start an app on `port` (default: a free one) and wait until its listener is subscribed."""
    app = create_app(settings, settings.database_url or "", settings.redis_url or "")
    test_server = HardenedTestServer(app, head_timeout=head_timeout, port=port)
    await test_server.start_server()
    listener = app[AUTHORITY].listener
    assert listener is not None
    await listener.subscribed.wait()
    http = aiohttp.ClientSession()
    return test_server, Server(str(test_server.make_url("")).rstrip("/"), app, http)


def basic(client_id: str, secret: str) -> dict[str, str]:
    """An Authorization header for client_secret_basic."""
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


@dataclass(frozen=True)
class Registered:
    """A registered client with its secret."""

    client_id: str
    secret: str

    @property
    def auth(self) -> dict[str, str]:
        """Its client_secret_basic header."""
        return basic(self.client_id, self.secret)


async def register(
    authority: Authority,
    *,
    scopes: tuple[str, ...] = ("read", "write"),
    audiences: tuple[str, ...] = (),
    can_introspect: bool = False,
    **kw: Any,
) -> Registered:
    """Register a client with a unique name."""
    client, secret = await authority.create_client(
        actor="test",
        name="t-" + secrets.token_hex(4),
        scopes=list(scopes),
        audiences=list(audiences),
        can_introspect=can_introspect,
        **kw,
    )
    return Registered(client.client_id, secret or "")  # no secret: a private_key_jwt client


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli_env(settings: Settings, data_dir: Path) -> dict[str, str]:
    """The environment that points `introspect` at the session's stores and secret."""
    assert settings.database_url
    assert settings.redis_url
    return {
        **os.environ,
        "INTROSPECT_DATABASE_URL": settings.database_url,
        "INTROSPECT_REDIS_URL": settings.redis_url,
        "INTROSPECT_SECRET": settings.secrets[0].decode(),
        "INTROSPECT_DATA_DIR": str(data_dir),
    }


@contextlib.contextmanager
def serve_subprocess(
    settings: Settings,
    data_dir: Path,
    *,
    workers: int,
    extra: dict[str, str] | None = None,
    stderr: IO[bytes] | int = subprocess.DEVNULL,
) -> Iterator[dict[str, str]]:
    """Run `introspect serve` over the session's stores until ready; yield the CLI's env.

    The env holds the stores' URLs, the server secret and `BASE`, the server's URL.
    """
    port = free_port()
    env = {
        **cli_env(settings, data_dir),
        "INTROSPECT_PORT": str(port),
        "BASE": f"http://127.0.0.1:{port}",
        **(extra or {}),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "introspect.cli", "serve", "--workers", str(workers)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    try:
        deadline = time.monotonic() + 30
        while not _ready(env["BASE"]):
            assert proc.poll() is None, "the server exited"
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.1)
        yield env
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/readyz", timeout=1) as resp:  # noqa: S310 (loopback)
            return resp.status == 200
    except OSError:
        return False


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    """Wait until `check()` holds, failing after `within` seconds."""
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


@dataclass(frozen=True)
class AdminAPI:
    """The admin API of a test server, called with an admin key of its own."""

    server: Server
    key_id: str
    key: str

    async def call(self, method: str, path: str, body: Any = None, **kw: Any) -> Answer:
        """`method /admin{path}` with the bearer key, and `body` as JSON when given."""
        headers = {"Authorization": f"Bearer {self.key}", **kw.pop("headers", {})}
        if body is not None:
            kw["data"] = orjson.dumps(body)
            headers.setdefault("Content-Type", "application/json")
        return await self.server.request(method, "/admin" + path, headers=headers, **kw)


async def admin_api(server: Server) -> AdminAPI:
    """A fresh admin key for `server`'s admin API."""
    minted = await admin.create_admin_key(
        server.authority, "test", {"name": "t-" + secrets.token_hex(4)}
    )
    return AdminAPI(server, minted["id"], minted["key"])


async def post_form(
    http: aiohttp.ClientSession, url: str, data: dict[str, str], auth: Registered
) -> tuple[float, dict[str, Any]]:
    """POST a form; return when it was sent (monotonic) and the JSON answer (200 required)."""
    sent = time.monotonic()
    async with http.post(url, data=data, headers=auth.auth) as resp:
        assert resp.status == 200, await resp.text()
        return sent, await resp.json() if resp.content_length else {}


async def revoke_during_storm(
    http: aiohttp.ClientSession,
    bases: Sequence[str],
    app: Registered,
    rs: Registered,
    in_flight: int = 200,
) -> None:
    """One round: a token warmed on every server (`bases`: instances), `in_flight`
    introspections spread over them while the first revokes it; none sent after the
    revocation returned may answer active."""
    _, tok = await post_form(http, f"{bases[0]}/token", {"grant_type": "client_credentials"}, app)
    form = {"token": tok["access_token"]}

    def spread(count: int) -> list[asyncio.Task[tuple[float, dict[str, Any]]]]:
        return [
            asyncio.create_task(post_form(http, f"{bases[i % len(bases)]}/introspect", form, rs))
            for i in range(count)
        ]

    warm = await asyncio.gather(*spread(30))
    assert all(body["active"] for _, body in warm)
    storm = spread(in_flight)
    await asyncio.sleep(0)
    await post_form(http, f"{bases[0]}/revoke", form, app)
    returned = time.monotonic()
    answers = await asyncio.gather(*storm)
    after = await asyncio.gather(*spread(30))
    late = [body for sent, body in answers + after if sent > returned]
    assert late, "some introspections must start after the revocation returned"
    assert all(body == {"active": False} for body in late)
