"""/readyz: each store's state, checked at most once a second per worker whatever the callers do."""

from __future__ import annotations

import asyncio

from introspect.config import Settings
from introspect.redis import resp
from introspect.web.health import READY_TTL
from tests.valkey import Valkey, serving

# A readiness check asks Redis who it is (INFO server, replication, memory) and reads the
# history marker; so does the history watch, once a second (introspect/history.py).
INFOS_PER_CHECK = 3


async def _infos(valkey: Valkey) -> int:
    """How many INFO commands the Redis server has answered so far."""
    stats = resp.Server.fields(await valkey.command("INFO", "commandstats"))
    # cmdstat_info:calls=12,usec=...
    calls = dict(part.split("=", 1) for part in stats.get("cmdstat_info", "calls=0").split(","))
    return int(calls["calls"])


async def test_a_flood_of_readiness_probes_asks_the_stores_once_a_second(
    settings: Settings, valkey: Valkey
) -> None:
    """A hundred concurrent, then twenty sequential /readyz calls cost one check per second."""
    async with serving(settings, valkey) as srv:
        before = await _infos(valkey)
        began = asyncio.get_running_loop().time()
        answers = await asyncio.gather(*(srv.request("GET", "/readyz") for _ in range(100)))
        answers += [await srv.request("GET", "/readyz") for _ in range(20)]
        elapsed = asyncio.get_running_loop().time() - began
        after = await _infos(valkey)
    assert {(a.status, a.json()["status"]) for a in answers} == {(200, "ok")}
    assert "workers" not in answers[0].json()  # no supervisor around this test server
    checks = 2 * (2 + int(elapsed / READY_TTL))  # readiness and the watch
    assert after - before <= INFOS_PER_CHECK * checks
