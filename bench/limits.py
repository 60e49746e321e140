"""The limits scenarios (issue 17): keys with limits, credits exactness, a window at 3x.

`limited-hit` is a load scenario like `local-hit` whose keys carry a window
so generous that it never refuses: it measures what metering costs on the
hot path, as a % of `local-hit` in the same run. `credits` and `over-limit`
are phases of their own, like revocation: `credits` presents keys holding
credits more often than they have credits, concurrently over every
worker, and prints the active answers beside the credits; `over-limit`
drives one key at 3x its window and prints what each window admitted as a
share of its limit, with the latencies.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.http import Connection, basic_auth, form_request, request_head
from bench.loadgen import percentiles_ms
from bench.seed import AUDIENCE, Registered
from introspect import admin
from introspect.service import Authority

LIMITED_KEYS = 1_000
GENEROUS = [{"name": "generous", "limit": 1_000_000_000, "window": 86_400}]
ACTIVE = b'"active":true'


async def _issued(authority: Authority, owner: Registered, **limits: object) -> str:
    """A new API key of `owner` with `limits`, for the bench's audience (which the resource
    server is registered for)."""
    body = {"client_id": owner.client_id, "scopes": [], "audiences": [AUDIENCE], **limits}
    issued = await admin.create_api_key(authority, "bench", body)
    return str(issued["key"])


async def limited_keys(authority: Authority, owner: Registered, count: int) -> list[str]:
    """`count` API keys of `owner` with a window that never refuses."""
    return [await _issued(authority, owner, rate_limits=GENEROUS) for _ in range(count)]


class _Pool:
    """Keep-alive connections to the server, each sending one request at a time."""

    def __init__(self, host: str, port: int, rs: Registered) -> None:
        self.host, self.port = host, port
        self.head = request_head(
            "POST",
            host,
            port,
            "/introspect",
            {"Authorization": basic_auth(rs.client_id, rs.secret)},
        )
        self.idle: asyncio.Queue[Connection] = asyncio.Queue()

    async def open(self, count: int) -> None:
        for _ in range(count):
            self.idle.put_nowait(await Connection.open(self.host, self.port))

    async def active(self, key: str) -> tuple[bool, float, float]:
        """Whether `key` introspects active, when the request was sent and answered."""
        conn = await self.idle.get()
        try:
            sent = time.time()
            status, body = await conn.send(form_request(self.head, b"token=" + key.encode()))
            if status != 200:
                raise RuntimeError(f"/introspect answered {status}")
            return ACTIVE in body, sent, time.time()
        finally:
            self.idle.put_nowait(conn)

    def close(self) -> None:
        while not self.idle.empty():
            self.idle.get_nowait().close()


@dataclass(frozen=True, slots=True)
class Credits:
    """Keys with `credits` each, presented `presented` times in all: active answers per key."""

    credits: int
    presented: int
    active: list[int] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        """Every key answered active exactly as often as it had credits."""
        return all(n == self.credits for n in self.active)


async def credits_run(
    host: str,
    port: int,
    authority: Authority,
    rs: Registered,
    owner: Registered,
    *,
    keys: int = 20,
    credits: int = 100,
    factor: int = 3,
    connections: int = 32,
) -> Credits:
    """`keys` keys of `credits` credits, each presented `factor` times as often, all at once
    in random order over `connections` connections."""
    issued = [await _issued(authority, owner, credits={"remaining": credits}) for _ in range(keys)]
    order = [i for i in range(keys) for _ in range(credits * factor)]
    random.Random(17).shuffle(order)
    pool = _Pool(host, port, rs)
    await pool.open(connections)
    try:
        answers = await asyncio.gather(*(pool.active(issued[i]) for i in order))
    finally:
        pool.close()
    per_key: Counter[int] = Counter(
        i for i, (active, _, _) in zip(order, answers, strict=True) if active
    )
    return Credits(credits, len(order), [per_key[i] for i in range(keys)])


@dataclass(frozen=True, slots=True)
class OverLimit:
    """One key limited to `limit` per `window` s, driven at `factor` x: what each window
    admitted, and the latencies of every answer (ms)."""

    limit: int
    window: int
    factor: int
    admitted: list[int]
    latency_ms: dict[str, float]

    @property
    def ratios(self) -> list[float]:
        return [n / self.limit for n in self.admitted]

    @property
    def worst(self) -> float:
        return max(self.ratios, default=0.0)

    @property
    def median(self) -> float:
        return statistics.median(self.ratios) if self.ratios else 0.0


async def over_limit_run(
    host: str,
    port: int,
    authority: Authority,
    rs: Registered,
    owner: Registered,
    *,
    limit: int = 50,
    window: int = 2,
    windows: int = 5,
    factor: int = 3,
    connections: int = 16,
) -> OverLimit:
    """Offer `factor` x `limit` per window, evenly, for `windows` windows from a boundary;
    count what each window admitted (by when the answer came; the few answers in flight
    across a boundary are counted in the later window)."""
    key = await _issued(
        authority, owner, rate_limits=[{"name": "burst", "limit": limit, "window": window}]
    )
    pool = _Pool(host, port, rs)
    await pool.open(connections)
    try:
        await asyncio.sleep(window - time.time() % window)
        start = time.time()
        interval = window / (factor * limit)
        tasks = []
        for n in range(windows * factor * limit):
            await asyncio.sleep(max(0.0, start + n * interval - time.time()))
            tasks.append(asyncio.ensure_future(pool.active(key)))
        answers = await asyncio.gather(*tasks)
    finally:
        pool.close()
    first = int(start // window)
    admitted: Counter[int] = Counter(
        int(received // window) - first for active, _, received in answers if active
    )
    latencies = [int((received - sent) * 1e6) for _, sent, received in answers]
    return OverLimit(
        limit, window, factor, [admitted[n] for n in range(windows)], percentiles_ms(latencies)
    )


def describe(credits: Credits | None, over: OverLimit | None) -> Sequence[str]:
    """The report's lines for the two phases that ran."""
    lines = []
    if credits is not None:
        lines.append(
            f"credits: {len(credits.active)} keys of {credits.credits} credits, presented"
            f" {credits.presented:,} times at once: active answers per key"
            f" min {min(credits.active)} max {max(credits.active)}"
            f" ({'exact' if credits.exact else 'NOT EXACT'})"
        )
    if over is not None:
        lines.append(
            f"over-limit: {over.limit} per {over.window} s driven at {over.factor}x:"
            f" admitted/limit per window {', '.join(f'{r:.2f}' for r in over.ratios)}"
            f" (p50 {over.median:.2f}, max {over.worst:.2f}); latency p50"
            f" {over.latency_ms.get('p50', 0):.2f} ms, p99 {over.latency_ms.get('p99', 0):.2f} ms"
        )
    return lines
