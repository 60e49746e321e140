"""The C open-loop generator drives a real server at a fixed rate and reports what happened."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from bench import openloop
from bench.loadgen import Load
from tests.helpers import Registered, Server

pytestmark = pytest.mark.skipif(openloop.compiler() is None, reason="no C compiler")


async def test_drives_the_server_at_the_offered_rate(
    server: Server, resource_server: Registered, app_client: Registered, tmp_path: Path
) -> None:
    """200/s for 1 s: 200 answers, all 2xx, with sane latencies and generator CPU."""
    tokens = []
    for _ in range(3):
        resp = await server.post_form(
            "/token", {"grant_type": "client_credentials"}, headers=app_client.auth
        )
        tokens.append(resp.json()["access_token"])
    bodies = tmp_path / "bodies.txt"
    bodies.write_text("".join(f"token={t}\n" for t in tokens))
    url = urlsplit(server.url)
    assert url.hostname is not None
    assert url.port is not None
    load = Load(
        url.hostname, url.port, "/introspect", resource_server.auth, bodies, 4, 1.0, rate=200.0
    )
    # The server answers on this test's event loop: the generator runs in a thread meanwhile.
    out = await asyncio.to_thread(openloop.run, load)
    assert out.errors == {}
    assert out.ok == 200
    assert 0.99 <= out.duration < 2.0
    assert 0 < out.percentiles["p50"] <= out.percentiles["p99"] <= out.percentiles["max"] < 1000
    assert 0 < out.generator_cpu < 0.5


async def _count_per_connection(counts: dict[int, int]) -> asyncio.Server:
    """A minimal HTTP/1.1 server answering every request `{}`, counting requests by the
    client's port (each connection of the generator's pool is there from its connect)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        port = writer.get_extra_info("peername")[1]
        counts[port] = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                counts[port] += 1
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


async def test_every_connection_carries_an_even_share(tmp_path: Path) -> None:
    """Each request goes on the connection idle the longest: 8 connections at 160/s for 2 s
    carry about 40 requests each. (Reusing the most recently idle one put nearly all of them on
    one connection, and so on one server worker.)"""
    counts: dict[int, int] = {}
    server = await _count_per_connection(counts)
    bodies = tmp_path / "bodies.txt"
    bodies.write_text("token=x\n")
    port = server.sockets[0].getsockname()[1]
    load = Load("127.0.0.1", port, "/introspect", {}, bodies, 8, 2.0, rate=160.0)
    try:
        out = await asyncio.to_thread(openloop.run, load)
    finally:
        server.close()
    assert out.ok == 320
    assert len(counts) == 8
    assert sum(counts.values()) == 320
    assert all(20 <= n <= 60 for n in counts.values()), counts
