"""The introspections answered below aiohttp (introspect/web/fast.py): the same answers as
aiohttp's path, in order on a connection, counted, and under the same timers."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from introspect import credentials
from introspect.config import Settings
from introspect.credentials import Kind
from introspect.web.fast import Declined, Later, Shortcut
from tests.helpers import Registered, Server, start_server

GRANT = {"grant_type": "client_credentials"}
Pair = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def introspection(client: Registered, token: str, *extra: str) -> bytes:
    """A raw keep-alive introspection request, as resource servers send it."""
    body = f"token={token}".encode()
    head = [
        "POST /introspect HTTP/1.1",
        "Host: t",
        f"Authorization: {client.auth['Authorization']}",
        "Content-Type: application/x-www-form-urlencoded",
        *extra,
        f"Content-Length: {len(body)}",
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def read_answer(reader: asyncio.StreamReader) -> tuple[bytes, list[bytes], bytes]:
    """One answer: its status line, its header lines but Date, its body."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status, *lines = head[:-4].split(b"\r\n")
    length = next(int(x.split(b":")[1]) for x in lines if x.lower().startswith(b"content-length"))
    body = await asyncio.wait_for(reader.readexactly(length), 10)
    return status, [x for x in lines if not x.lower().startswith(b"date:")], body


@asynccontextmanager
async def connected(
    server: Server,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A raw connection to `server`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", int(server.url.rsplit(":", 1)[1]))
    try:
        yield reader, writer
    finally:
        writer.close()


@pytest.fixture
def outcomes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What the shortcut made of each read, in order ("answered", or the Declined value)."""
    seen: list[str] = []
    real: Callable[[Shortcut, bytes, bool], bytes | Later | Declined] = Shortcut.answer

    def spy(self: Shortcut, data: bytes, idle: bool) -> bytes | Later | Declined:
        out = real(self, data, idle)
        if isinstance(out, Declined):
            seen.append(out.value)
        else:
            seen.append("answered" if isinstance(out, bytes) else "later")
        return out

    monkeypatch.setattr(Shortcut, "answer", spy)
    return seen


async def token_for(server: Server, client: Registered) -> str:
    resp = await server.post_form("/token", GRANT, headers=client.auth)
    assert resp.status == 200, resp.body
    return resp.json()["access_token"]


async def held(server: Server, client: Registered, token: str) -> None:
    """Introspect `token` as `client` until every worker holds both (aiohttp's path the first
    time: the caller's record and the credential are then in memory)."""
    resp = await server.post_form("/introspect", {"token": token}, headers=client.auth)
    assert resp.status == 200, resp.body


async def test_the_shortcut_answers_as_aiohttp_does(
    server: Server, app_client: Registered, resource_server: Registered, outcomes: list[str]
) -> None:
    """The same introspection answered by the shortcut, then by aiohttp (two requests in one
    write go to aiohttp): the same status, headers (but Date) and body."""
    token = await token_for(server, app_client)
    await held(server, resource_server, token)
    request = introspection(resource_server, token)
    async with connected(server) as (reader, writer):
        writer.write(request)
        fast = await read_answer(reader)
        writer.write(request + request)
        slow = [await read_answer(reader), await read_answer(reader)]
    assert outcomes[-2:] == ["answered", "other"]
    assert fast[0] == b"HTTP/1.1 200 OK"
    assert b'"active":true' in fast[2]
    assert slow == [fast, fast]


async def test_a_read_through_the_stores_is_answered_as_aiohttp_does(
    server: Server, app_client: Registered, resource_server: Registered, outcomes: list[str]
) -> None:
    """A caller held in memory presenting a credential memory does not hold (a new token, an
    unknown one): the shortcut goes on through Redis and Postgres (`rfc7662.complete`) and
    answers as aiohttp's path does."""
    await held(server, resource_server, await token_for(server, app_client))  # the caller
    for token in (await token_for(server, app_client), credentials.generate(Kind.ACCESS_TOKEN)):
        request = introspection(resource_server, token)
        async with connected(server) as (reader, writer):
            writer.write(request)
            first = await read_answer(reader)
        async with connected(server) as (reader, writer):
            writer.write(request + request)
            slow = [await read_answer(reader), await read_answer(reader)]
        assert outcomes[-2:] == ["later", "other"]
        assert slow == [first, first]
        assert first[0] == b"HTTP/1.1 200 OK"


async def test_a_request_in_two_reads_is_answered(
    server: Server, app_client: Registered, resource_server: Registered, outcomes: list[str]
) -> None:
    """A head and its body in two reads (as clients that write them apart send them): held,
    then answered by the shortcut; the connection keeps it for the next."""
    token = await token_for(server, app_client)
    await held(server, resource_server, token)
    request = introspection(resource_server, token)
    cut = request.index(b"\r\n\r\n") + 4
    async with connected(server) as (reader, writer):
        for part in (request[:20], request[20:cut], request[cut:]):
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.05)
        first = await read_answer(reader)
        writer.write(request)
        second = await read_answer(reader)
    assert outcomes[-4:] == ["part", "part", "answered", "answered"]
    assert first == second
    assert b'"active":true' in first[2]


async def test_answers_keep_the_order_of_requests(
    server: Server, app_client: Registered, resource_server: Registered
) -> None:
    """Requests sent before their answers came (one aiohttp holds, reading through Postgres,
    and one memory could answer) are answered in the order they were sent."""
    tokens = [await token_for(server, app_client) for _ in range(20)]
    unknown = credentials.generate(Kind.ACCESS_TOKEN)
    async with connected(server) as (reader, writer):
        for token in tokens:
            writer.write(introspection(resource_server, token))
            writer.write(introspection(resource_server, unknown))
        answers = [(await read_answer(reader))[2] for _ in range(2 * len(tokens))]
    actives = [b'"active":true' in body for body in answers]
    assert actives == [True, False] * len(tokens)


async def test_shortcut_answers_are_counted(
    server: Server, app_client: Registered, resource_server: Registered, outcomes: list[str]
) -> None:
    """Each answer of the shortcut is in introspect_requests_total, as aiohttp's are."""

    def count(text: str) -> float:
        line = 'introspect_requests_total{route="/introspect",status="200"} '
        return sum(float(x[len(line) :]) for x in text.splitlines() if x.startswith(line))

    token = await token_for(server, app_client)
    await held(server, resource_server, token)
    before = count((await server.request("GET", "/metrics")).body.decode())
    async with connected(server) as (reader, writer):
        for _ in range(5):
            writer.write(introspection(resource_server, token))
            await read_answer(reader)
    await asyncio.sleep(1.5)  # the counters reach /metrics once a second
    after = count((await server.request("GET", "/metrics")).body.decode())
    assert outcomes.count("answered") >= 5
    assert after - before == 5


@asynccontextmanager
async def own_server(settings: Settings, head_timeout: float) -> AsyncIterator[Server]:
    test_server, srv = await start_server(settings, head_timeout=head_timeout)
    try:
        yield srv
    finally:
        await srv.http.close()
        await test_server.close()


async def test_keep_alive_runs_from_the_last_shortcut_answer(
    settings: Settings, app_client: Registered, resource_server: Registered, outcomes: list[str]
) -> None:
    """With a 1 s keep-alive, a connection answered by the shortcut every 0.4 s for 2 s stays
    open (nor does the 0.5 s head timer close it), then is closed about 1 s after the last."""
    quick = dataclasses.replace(settings, keepalive_timeout=1)
    async with own_server(quick, head_timeout=0.5) as srv, connected(srv) as (reader, writer):
        token = await token_for(srv, app_client)
        await held(srv, resource_server, token)
        for _ in range(5):
            writer.write(introspection(resource_server, token))
            assert b'"active":true' in (await read_answer(reader))[2]
            await asyncio.sleep(0.4)
        loop = asyncio.get_running_loop()
        began = loop.time()
        assert await asyncio.wait_for(reader.read(), 10) == b""
        assert 0.3 < loop.time() - began < 5
    assert outcomes.count("answered") == 5
