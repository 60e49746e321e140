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
