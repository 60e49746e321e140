"""Several worker processes on one port: a revocation is seen by every one of them at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import jwt
import pytest

from introspect import rfc8417
from introspect.admin import create_admin_key
from introspect.config import Settings
from introspect.service import Authority
from tests.helpers import eventually, post_form, register, revoke_during_storm, serve_subprocess

WORKERS = 3
ROUNDS = 20
IN_FLIGHT = 200
# Long polls parked at once, and how long they may take to be woken (a test bound only).
PARKED = 6
WOKEN_WITHIN = 20


@pytest.fixture(scope="module")
async def base(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """`introspect serve --workers 3` over the session's stores."""
    with serve_subprocess(settings, tmp_path_factory.mktemp("workers"), workers=WORKERS) as env:
        yield env["BASE"]


async def test_no_worker_answers_active_after_revoke_returns(
    base: str, authority: Authority
) -> None:
    """With 200 introspections in flight during a revoke, none sent after it returns is active."""
    app = await register(authority)
    rs = await register(authority, scopes=(), can_introspect=True)
    # A new connection per request, so the kernel spreads requests over every worker.
    connector = aiohttp.TCPConnector(limit=IN_FLIGHT, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        for _ in range(ROUNDS):
            await revoke_during_storm(http, [base], app, rs, IN_FLIGHT)


async def test_api_key_patch_is_seen_by_every_worker_at_once(
    base: str, authority: Authority
) -> None:
    """After PATCH of an API key's scopes returns, every worker answers the new scopes."""
    admin_key = (await create_admin_key(authority, "test", {"name": "workers"}))["key"]
    bearer = {"Authorization": f"Bearer {admin_key}"}
    rs = await register(authority, scopes=(), can_introspect=True)
    connector = aiohttp.TCPConnector(limit=64, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.post(
            f"{base}/admin/api-keys",
            json={"sub": "patched-user", "scopes": ["old"]},
            headers=bearer,
        ) as resp:
            assert resp.status == 201, await resp.text()
            created = await resp.json()
        form = {"token": created["key"]}
        warm = await asyncio.gather(
            *(post_form(http, f"{base}/introspect", form, rs) for _ in range(30))
        )
        assert all(body["scope"] == "old" for _, body in warm)
        async with http.patch(
            f"{base}/admin/api-keys/{created['id']}", json={"scopes": ["new"]}, headers=bearer
        ) as resp:
            assert resp.status == 200, await resp.text()
        after = await asyncio.gather(
            *(post_form(http, f"{base}/introspect", form, rs) for _ in range(60))
        )
        assert all(body["scope"] == "new" for _, body in after)


async def test_served_workers_answer_from_their_caches(base: str, authority: Authority) -> None:
    """Served workers (on their production event loop) hit their in-process cache and Redis.

    Falling back to Postgres would still answer correctly, so only the
    counters tell a cache layer that silently stopped working.
    """
    app = await register(authority)
    rs = await register(authority, scopes=(), can_introspect=True)
    connector = aiohttp.TCPConnector(limit=16, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        _, tok = await post_form(http, f"{base}/token", {"grant_type": "client_credentials"}, app)
        form = {"token": tok["access_token"]}
        await asyncio.gather(*(post_form(http, f"{base}/introspect", form, rs) for _ in range(60)))

        async def both_layers_hit() -> bool:
            async with http.get(f"{base}/metrics") as resp:
                text = await resp.text()
            hits = {
                layer: sum(
                    float(line.rsplit(" ", 1)[1])
                    for line in text.splitlines()
                    if line.startswith(f'introspect_cache_hits_total{{layer="{layer}"}}')
                )
                for layer in ("local", "redis")
            }
            return hits["local"] > 0 and hits["redis"] > 0

        # Workers hand their counters to /metrics every second: wait for them, bounded.
        await eventually(both_layers_hit, within=10)


async def test_a_revocation_wakes_long_polls_parked_on_every_worker(
    base: str, authority: Authority
) -> None:
    """Long polls of /events parked on several connections (so, over the workers) are all
    answered with the SET of a revocation made through any worker: each worker wakes its
    own polls on the invalidation it receives. Bounded well under the 30 s a poll would
    wait unwoken (while subscribed, a parked poll does not read again before that)."""
    app = await register(authority)
    rs = await register(authority, scopes=(), can_introspect=True)
    receivers = [f"r{i}" for i in range(PARKED)]
    connector = aiohttp.TCPConnector(limit=PARKED + 4, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def poll(receiver: str, wait: bool, ack: list[str]) -> dict:
            body = {"returnImmediately": not wait, "receiver": receiver, "ack": ack}
            async with http.post(f"{base}/events", json=body, headers=rs.auth) as resp:
                assert resp.status == 200, await resp.text()
                return await resp.json()

        # Each starts its position now; its first answer is a feed-gap, acknowledged by the
        # long poll that follows.
        gaps = [list((await poll(r, wait=False, ack=[]))["sets"]) for r in receivers]
        parked = [
            asyncio.create_task(poll(r, wait=True, ack=gap))
            for r, gap in zip(receivers, gaps, strict=True)
        ]

        async def all_parked() -> bool:
            async with http.get(f"{base}/metrics") as resp:
                text = await resp.text()
            waiting = sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("introspect_feed_polls_waiting")
            )
            return waiting >= PARKED

        await eventually(all_parked, within=10)
        _, tok = await post_form(http, f"{base}/token", {"grant_type": "client_credentials"}, app)
        await post_form(http, f"{base}/revoke", {"token": tok["access_token"]}, app)
        answers = await asyncio.wait_for(asyncio.gather(*parked), WOKEN_WITHIN)
    for answer in answers:
        (token,) = answer["sets"].values()
        claims = jwt.decode(token, options={"verify_signature": False})
        ((event_type, _payload),) = claims["events"].items()
        assert event_type == rfc8417.CREDENTIAL_REVOKED
        assert claims["aud"] == rs.client_id
