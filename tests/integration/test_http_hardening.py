"""The connection layer (SPEC "Hardening"): nothing of a request in a log line or an error
answer, no Server banner, idle and slow connections closed."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from introspect.app import create_app
from introspect.config import Settings
from tests.helpers import (
    AdminAPI,
    HardenedTestServer,
    Registered,
    Server,
    free_port,
    serve_subprocess,
    start_server,
)

PAD = "A" * 9 * 1024  # past aiohttp's 8,190-byte limit for a line


def malformed_requests(client: Registered, admin_key: str) -> dict[str, bytes]:
    """Requests aiohttp's parser refuses, each carrying a real secret where a log may quote it."""
    secret = client.secret
    basic = base64.b64encode(f"{client.client_id}:{secret}".encode()).decode()
    head = "POST /introspect HTTP/1.1\r\nHost: t\r\n"
    chunked = (
        head + f"Authorization: Basic {basic}\r\nTransfer-Encoding: chunked\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n\r\n"
    )
    cases = {
        "9 KiB Authorization: Basic": f"{head}Authorization: Basic {basic}{PAD}\r\n\r\n",
        "9 KiB Authorization: Bearer": (
            f"GET /admin/clients HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {admin_key}{PAD}"
            "\r\n\r\n"
        ),
        "9 KiB header name": f"{head}X-{secret}{PAD}: 1\r\n\r\n",
        "control character in Authorization": (
            f"{head}Authorization: Bearer {admin_key}\x01\r\n\r\n"
        ),
        "NUL in Authorization": f"{head}Authorization: Basic {basic}\x00x\r\n\r\n",
        "NUL in a header name": f"{head}X-{secret}\x00: 1\r\n\r\n",
        "header line without a colon": f"{head}{admin_key}\r\n\r\n",
        "non-numeric Content-Length": f"{head}Content-Length: {secret}\r\n\r\n",
        "bad chunk size": f"{chunked}zz{secret}\r\n",
        "bad chunk after a good one": f"{chunked}6\r\ntoken=\r\n{secret}\r\n",
        "bad request line": f"POST /introspect?{secret} HTTP/1.1 {admin_key}\r\nHost: t\r\n\r\n",
        "invalid method": f"{admin_key}\x01 / HTTP/1.1\r\nHost: t\r\n\r\n",
        "9 KiB request line": f"GET /{secret}{PAD} HTTP/1.1\r\nHost: t\r\n\r\n",
    }
    return {name: raw.encode("latin-1") for name, raw in cases.items()}


def fragments(*secrets: str) -> set[str]:
    """Every 8-character piece of each secret."""
    return {s[i : i + 8] for s in secrets for i in range(len(s) - 7)}


def leaked(text: str, pieces: set[str]) -> list[str]:
    """The pieces found in `text`."""
    return sorted(piece for piece in pieces if piece in text)


def secrets_of(client: Registered, admin_key: str) -> set[str]:
    """The fragments of the client secret, its Basic value and the admin key."""
    basic = base64.b64encode(f"{client.client_id}:{client.secret}".encode()).decode()
    return fragments(client.secret, basic, admin_key)


async def exchange(port: int, raw: bytes, within: float = 10.0) -> bytes:
    """Send `raw` on a new connection and read until the server closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), within)
    finally:
        writer.close()


def head_of(answer: bytes) -> tuple[int, dict[str, str]]:
    """Status and headers (names lowercased) of a raw HTTP answer."""
    lines = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split(" ")[1]), headers


def port_of(server: Server) -> int:
    """The port a test server listens on."""
    return int(server.url.rsplit(":", 1)[1])


@pytest.mark.parametrize("case", list(malformed_requests(Registered("c", "s" * 8), "k" * 8)))
async def test_malformed_request_echoes_no_secret(
    server: Server,
    app_client: Registered,
    api: AdminAPI,
    case: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A request the parser refuses gets a fixed 4xx; no piece of its secrets is logged or sent."""
    raw = malformed_requests(app_client, api.key)[case]
    caplog.set_level(logging.DEBUG)
    answer = await exchange(port_of(server), raw)
    status, headers = head_of(answer)
    assert status in (400, 431), answer[:200]
    assert "server" not in headers
    pieces = secrets_of(app_client, api.key)
    assert leaked(answer.decode("latin-1"), pieces) == []
    logged = caplog.text + "\n".join(str(r.__dict__) for r in caplog.records)
    assert leaked(logged, pieces) == []


async def test_no_server_banner(server: Server, api: AdminAPI) -> None:
    """No answer of the public app or its admin API names the server software."""
    answers = [
        await server.request("GET", "/.well-known/oauth-authorization-server"),
        await server.request("GET", "/nope"),
        await server.post_form("/introspect", {"token": "x"}),
        await server.request("GET", "/admin/clients"),
        await api.call("GET", "/clients"),
    ]
    assert [a.status for a in answers] == [200, 404, 401, 401, 200]
    assert [a.headers.get("Server") for a in answers] == [None] * len(answers)


async def test_access_log_lines_carry_nothing_of_the_request(
    settings: Settings, app_client: Registered, caplog: pytest.LogCaptureFixture
) -> None:
    """With the access log on, a line names the peer, route and status, and nothing sent."""
    app = create_app(settings, settings.database_url or "", settings.redis_url or "")
    test_server = HardenedTestServer(app)
    await test_server.start_server(access_log=logging.getLogger("introspect.access"))
    caplog.set_level(logging.INFO, logger="introspect.access")
    secret = app_client.secret
    headers = {"User-Agent": secret, "Referer": secret, "Authorization": "Bearer " + secret}
    try:
        async with aiohttp.ClientSession() as http:
            url = test_server.make_url("/introspect").with_query(token=secret)
            async with http.post(url, headers=headers) as resp:
                assert resp.status == 400  # no credential in a query string
    finally:
        await test_server.close()
    [line] = [r.getMessage() for r in caplog.records if r.name == "introspect.access"]
    assert line.startswith("127.0.0.1 /introspect 400 ")
    assert leaked(line, fragments(secret)) == []


@asynccontextmanager
async def serving(settings: Settings, *, head_timeout: float) -> AsyncIterator[int]:
    """A server of its own with the given timeouts; its port."""
    test_server, srv = await start_server(settings, head_timeout=head_timeout)
    try:
        yield port_of(srv)
    finally:
        await srv.http.close()
        await test_server.close()


async def closed_after(reader: asyncio.StreamReader, within: float) -> float:
    """Seconds until the server closes the connection (reading everything it sends)."""
    began = time.monotonic()
    while await asyncio.wait_for(reader.read(65536), within):
        pass
    return time.monotonic() - began


async def answered(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
    """Send one keep-alive GET of the discovery document and read its answer; its status."""
    writer.write(b"GET /.well-known/oauth-authorization-server HTTP/1.1\r\nHost: t\r\n\r\n")
    await writer.drain()
    status, headers = head_of(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10))
    await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 10)
    return status


async def test_idle_keepalive_connection_is_closed(settings: Settings) -> None:
    """An idle keep-alive connection is closed once the keep-alive timeout has passed."""
    async with serving(dataclasses.replace(settings, keepalive_timeout=1), head_timeout=30) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            assert await answered(reader, writer) == 200
            assert 0.5 < await closed_after(reader, within=10) < 10
        finally:
            writer.close()


@pytest.mark.parametrize("sent", [b"", b"POST /introspect HTTP/1.1\r\nHost: t\r\nAuthoriz"])
async def test_incomplete_head_is_closed(settings: Settings, sent: bytes) -> None:
    """A connection that has not sent a whole request head within the head timeout is closed."""
    async with serving(settings, head_timeout=0.5) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(sent)
            await writer.drain()
            assert await closed_after(reader, within=10) < 10
        finally:
            writer.close()


async def test_head_timeout_spares_a_connection_that_sent_its_head(settings: Settings) -> None:
    """A connection whose first head came in time outlives the head timeout (keep-alive rules)."""
    async with serving(settings, head_timeout=0.3) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            assert await answered(reader, writer) == 200
            with pytest.raises(TimeoutError):  # nothing comes, not even the close, past 0.3 s
                await asyncio.wait_for(reader.read(1), 1.0)
            assert await answered(reader, writer) == 200
        finally:
            writer.close()


async def test_served_process_redacts_and_closes_idle_connections(
    settings: Settings,
    server: Server,
    app_client: Registered,
    api: AdminAPI,
    tmp_path: Path,
) -> None:
    """`introspect serve` (public and admin ports) logs and echoes no secret of a malformed
    request, shows no Server banner, and closes an idle connection after its keep-alive."""
    admin_port = free_port()
    extra = {"INTROSPECT_ADMIN_PORT": str(admin_port), "INTROSPECT_KEEPALIVE_TIMEOUT": "1"}
    log_path = tmp_path / "stderr"
    with (
        log_path.open("wb") as stderr,
        serve_subprocess(settings, tmp_path, workers=1, extra=extra, stderr=stderr) as env,
    ):
        port = int(env["BASE"].rsplit(":", 1)[1])
        answers = [
            await exchange(each, raw)
            for each in (port, admin_port)
            for raw in malformed_requests(app_client, api.key).values()
        ]
        for each in (port, admin_port):
            reader, writer = await asyncio.open_connection("127.0.0.1", each)
            try:
                writer.write(b"GET /admin/clients HTTP/1.1\r\nHost: t\r\n\r\n")
                answers.append(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10))
                assert 0.5 < await closed_after(reader, within=10) < 10
            finally:
                writer.close()
    statuses = [head_of(answer)[0] for answer in answers]
    assert set(statuses[:-2]) <= {400, 431}
    assert statuses[-2:] == [404, 401]  # /admin lives on the admin port only
    assert [head_of(answer)[1].get("server") for answer in answers] == [None] * len(answers)
    pieces = secrets_of(app_client, api.key)
    assert leaked(b"".join(answers).decode("latin-1"), pieces) == []
    logged = log_path.read_text(errors="replace")
    assert "refused a malformed request" in logged
    assert leaked(logged, pieces) == []
