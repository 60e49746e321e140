"""/readyz: each store's state, checked at most once a second per worker whatever the callers do."""

from __future__ import annotations

import asyncio

from introspect.config import Settings
from introspect.web.health import READY_TTL
from tests.helpers import Server, start_server


async def _pings(srv: Server) -> int:
    """How many PING commands the Redis server has answered so far."""
    stats = await srv.authority.redis.info("commandstats")
    return int(stats.get("cmdstat_ping", {}).get("calls", 0))


async def test_a_flood_of_readiness_probes_pings_the_stores_once(settings: Settings) -> None:
    """A hundred concurrent, then twenty sequential /readyz calls cost one ping per second."""
    test_server, srv = await start_server(settings)
    try:
        before = await _pings(srv)
        began = asyncio.get_running_loop().time()
        answers = await asyncio.gather(*(srv.request("GET", "/readyz") for _ in range(100)))
        answers += [await srv.request("GET", "/readyz") for _ in range(20)]
        elapsed = asyncio.get_running_loop().time() - began
        assert {(a.status, a.json()["status"]) for a in answers} == {(200, "ok")}
        assert "workers" not in answers[0].json()  # no supervisor around this test server
        assert await _pings(srv) - before <= 1 + int(elapsed / READY_TTL)
    finally:
        await srv.http.close()
        await test_server.close()
