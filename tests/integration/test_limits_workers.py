"""Credits and windows across the workers of `introspect serve`: exact credits under
concurrency, a worker SIGKILLed and Redis restarted mid-run; windows within their bound."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import secrets
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from introspect import admin
from introspect.config import Settings
from introspect.service import Authority
from tests.helpers import Registered, eventually, register
from tests.integration.test_limits import parse_fields
from tests.integration.test_supervisor import Served, all_listening, serve
from tests.valkey import Valkey

CREDITS = 100
PRESENTATIONS = 1000
CONNECTIONS = 48


class Remote:
    """A served instance, reached over a pool of keep-alive connections."""

    def __init__(self, base: str, admin_key: str) -> None:
        self.base = base
        self.admin = {"Authorization": f"Bearer {admin_key}"}
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONNECTIONS))

    async def admin_call(self, method: str, path: str, body: Any = None) -> Any:
        async with self.http.request(
            method, f"{self.base}/admin{path}", json=body, headers=self.admin
        ) as resp:
            answer = orjson.loads(await resp.read())
            assert resp.status in (200, 201), answer
            return answer

    async def introspect(self, rs: Registered, key: str) -> tuple[bool | None, Any]:
        """(active, headers), or (None, None) when the request failed (its worker died)."""
        try:
            async with self.http.post(
                f"{self.base}/introspect", data={"token": key}, headers=rs.auth
            ) as resp:
                body = orjson.loads(await resp.read())
                assert resp.status == 200, body
                return body["active"], resp.headers
        except (TimeoutError, aiohttp.ClientError):
            return None, None


async def _minted(authority: Authority) -> str:
    made = await admin.create_admin_key(authority, "test", {"name": "t-" + secrets.token_hex(4)})
    return str(made["key"])


@contextlib.asynccontextmanager
async def _key_served(
    settings: Settings, authority: Authority, tmp_path: Path, workers: int, key: dict[str, Any]
) -> AsyncIterator[tuple[Served, Remote, Registered, dict[str, Any]]]:
    """`workers` workers serving, once all listen: (the server, a Remote with an admin key,
    a resource server that may introspect, the API key created from `key`)."""
    with serve(settings, tmp_path, workers=workers) as served:
        await all_listening(served, workers)
        remote = Remote(served.base, await _minted(authority))
        try:
            rs = await register(authority, scopes=(), can_introspect=True)
            made = await remote.admin_call("POST", "/api-keys", {"scopes": [], **key})
            yield served, remote, rs, made
        finally:
            await remote.http.close()


async def _credit_run(
    remote: Remote, rs: Registered, key: str, fault: Callable[[], Awaitable[None]] | None
) -> Counter[bool | None]:
    """PRESENTATIONS concurrent introspections of `key`; `fault` runs once 40 have been
    answered. How many answers were active, inactive, or failed (None)."""
    answered = 0
    started = asyncio.Event()

    async def one() -> bool | None:
        nonlocal answered
        active, _ = await remote.introspect(rs, key)
        answered += 1
        if answered == 40:
            started.set()
        return active

    async def inject() -> None:
        if fault is not None:
            await started.wait()
            await fault()

    results, _ = await asyncio.gather(
        asyncio.gather(*(one() for _ in range(PRESENTATIONS))), inject()
    )
    return Counter(results)


async def _balance_settles(remote: Remote, key_id: str) -> dict[str, int]:
    """The key's credits once no live lease holds any (live workers return theirs)."""
    read: dict[str, int] = {}

    async def settled() -> bool:
        nonlocal read
        read = (await remote.admin_call("GET", f"/api-keys/{key_id}"))["credits"]
        return read["leased"] == 0

    await eventually(settled, within=40)
    return read


async def test_credits_are_exact_across_three_workers(
    settings: Settings, authority: Authority, tmp_path: Path
) -> None:
    """1,000 concurrent introspections of a 100-credit key over 3 workers: exactly 100 active
    answers, and the balance is 0 with nothing leased once the workers returned their leases."""
    credits = {"sub": "exact", "credits": {"remaining": CREDITS}}
    async with _key_served(settings, authority, tmp_path, 3, credits) as (_, remote, rs, key):
        counts = await _credit_run(remote, rs, key["key"], None)
        assert counts[True] == CREDITS
        assert counts[None] == 0
        read = await _balance_settles(remote, key["id"])
        assert read == {"refill": None, "remaining": 0, "leased": 0, "lost": 0}


async def test_a_killed_worker_never_lets_more_through_and_its_lease_is_reported(
    settings: Settings, authority: Authority, tmp_path: Path
) -> None:
    """A worker SIGKILLed mid-run: never more than 100 active answers; the credits neither
    answered nor in the balance are exactly what leases still hold, and once the dead
    worker's lease expires the admin read reports it as `lost`."""
    credits = {"sub": "killed", "credits": {"remaining": CREDITS}}
    async with _key_served(settings, authority, tmp_path, 3, credits) as (served, remote, rs, key):

        async def kill() -> None:
            os.kill(served.workers()[0], signal.SIGKILL)

        counts = await _credit_run(remote, rs, key["key"], kill)
        assert counts[True] <= CREDITS
        read = await remote.admin_call("GET", f"/api-keys/{key['id']}")
        unanswered = CREDITS - counts[True] - read["credits"]["remaining"]
        assert 0 <= unanswered <= read["credits"]["leased"] + read["credits"]["lost"]
        settled = await _balance_settles(remote, key["id"])
        assert settled["remaining"] == read["credits"]["remaining"]
        assert CREDITS - counts[True] - settled["remaining"] <= settled["lost"]


async def test_credits_stay_exact_when_redis_restarts_mid_run(
    settings: Settings, authority: Authority, valkey: Valkey, tmp_path: Path
) -> None:
    """Redis killed and restarted from an older snapshot mid-run: credits live in Postgres,
    so never more than 100 active answers, and the balance accounts for every one."""
    await valkey.wait_ready()
    private = replace(settings, redis_url=valkey.url)
    credits = {"sub": "restarted", "credits": {"remaining": CREDITS}}
    async with _key_served(private, authority, tmp_path, 2, credits) as (_, remote, rs, key):
        await valkey.command("SAVE")

        async def restart() -> None:
            valkey.kill()
            await valkey.restart()

        counts = await _credit_run(remote, rs, key["key"], restart)
        assert counts[True] <= CREDITS
        read = await _balance_settles(remote, key["id"])
        assert read["lost"] == 0
        assert read["remaining"] == CREDITS - counts[True]


async def test_the_refill_of_an_interval_is_applied_once_across_three_workers(
    settings: Settings, authority: Authority, tmp_path: Path
) -> None:
    """An empty account refilled last in the previous interval, presented 1,000 times at once
    over 3 workers: this interval's refill is applied once, whichever worker renews first, so
    exactly its amount of answers are active (not one refill per worker or per lease)."""
    amount = 30
    credits = {
        "sub": "refilled",
        "credits": {"remaining": 0, "refill": {"amount": amount, "interval": 3600}},
    }
    async with _key_served(settings, authority, tmp_path, 3, credits) as (_, remote, rs, key):
        moved = await authority.pool.execute(
            "UPDATE credit_accounts SET period = period - 1 WHERE owner = $1",
            f"api_key:{key['id']}",
        )
        assert moved == "UPDATE 1"
        counts = await _credit_run(remote, rs, key["key"], None)
        assert counts[True] == amount
        assert counts[None] == 0
        read = await _balance_settles(remote, key["id"])
        assert read["remaining"] == 0
        assert read["lost"] == 0


WINDOW = 2
LIMIT = 50
# Requests stop this long before a window ends, so each answer falls in one window.
MARGIN = 0.5


async def test_a_window_driven_at_three_times_its_limit_admits_within_the_bound(
    settings: Settings, authority: Authority, tmp_path: Path
) -> None:
    """50 per 2 s, driven at 3x by 2 workers for 3 windows: each window admits at most its
    limit (the bound while Redis keeps its writes), every answer carries well-formed RateLimit
    fields, and each refusal's Retry-After is the time left in its window."""
    limits = {
        "sub": "windowed",
        "rate_limits": [{"name": "burst", "limit": LIMIT, "window": WINDOW}],
    }
    async with _key_served(settings, authority, tmp_path, 2, limits) as (_, remote, rs, key):
        admitted: Counter[int] = Counter()
        refusals = 0

        async def one() -> None:
            nonlocal refusals
            sent = time.time()
            active, headers = await remote.introspect(rs, key["key"])
            received = time.time()
            number = int(sent // WINDOW)
            assert int(received // WINDOW) == number, "an answer crossed a window boundary"
            assert parse_fields(headers["RateLimit-Policy"]) == {
                "key.burst": {"q": LIMIT, "w": WINDOW}
            }
            state = parse_fields(headers["RateLimit"])["key.burst"]
            assert 0 <= state["r"] <= LIMIT
            if active:
                admitted[number] += 1
                return
            refusals += 1
            wait = int(headers["Retry-After"])
            end = (number + 1) * WINDOW
            assert end - received <= wait <= math.ceil(end - sent)
            assert state == {"r": 0, "t": wait}

        # Start at a window boundary; offer 3 x LIMIT per window, evenly, inside it.
        await asyncio.sleep(WINDOW - time.time() % WINDOW + 0.01)
        for _ in range(3):
            start = time.time()
            interval = (WINDOW - MARGIN) / (3 * LIMIT)
            tasks = []
            for n in range(3 * LIMIT):
                await asyncio.sleep(max(0.0, start + n * interval - time.time()))
                tasks.append(asyncio.ensure_future(one()))
            await asyncio.gather(*tasks)
            await asyncio.sleep(max(0.0, WINDOW - time.time() % WINDOW + 0.01))
        assert len(admitted) == 3
        assert all(0 < n <= LIMIT for n in admitted.values()), admitted
        assert refusals >= 3 * LIMIT
