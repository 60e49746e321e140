"""Rate limits and credits of API keys and clients: set (at issue and by PATCH) and read.

Setting them is part of the change of the key or client it belongs to (the
same transaction, the same invalidation), so it is visible at once
everywhere. Setting `credits` writes the balance in `credit_accounts` under a
new generation: leases of the old one are void. Reads add the state now: the
balance (and what leases hold) and each window's uses left.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import asyncpg
from redis.exceptions import RedisError

from introspect.admin import validation
from introspect.limits.meter import window_key
from introspect.limits.policy import window_number
from introspect.service import Authority
from introspect.store import credits as store_credits
from introspect.store.records import Limits

FIELDS = ("rate_limits", "credits")


def parse(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The limits `fields` sets, validated: `rate_limits` and/or `credits` (None removes)."""
    parsed: dict[str, Any] = {}
    if "rate_limits" in fields:
        parsed["rate_limits"] = validation.rate_limits(fields["rate_limits"], "rate_limits")
    if "credits" in fields:
        parsed["credits"] = validation.credits(fields["credits"], "credits")
    return parsed


async def write(
    conn: asyncpg.Connection, owner: str, current: Limits | None, parsed: dict[str, Any]
) -> Limits | None:
    """The limits after applying `parsed` to `current`, with the credit balance written."""
    windows = parsed.get("rate_limits", () if current is None else current.windows)
    has_credits = current is not None and current.credits
    generation = 0 if current is None else current.generation
    refill = None if current is None else current.refill
    if "credits" in parsed:
        requested = parsed["credits"]
        has_credits = requested is not None
        if requested is None:
            await store_credits.drop_credits(conn, owner)
            generation, refill = 0, None
        else:
            remaining, refill = requested
            generation = await store_credits.new_generation(conn)
    if not windows and not has_credits:
        return None
    limits = Limits(owner, windows, has_credits, generation, refill if has_credits else None)
    if "credits" in parsed and has_credits:
        await store_credits.set_credits(conn, limits, remaining)
    return limits


async def state(authority: Authority, limits: Limits | None) -> dict[str, Any]:
    """`rate_limits` and `credits` as reads show them: each window with the uses left in it
    now (null when Redis cannot say), the balance now, what live leases hold (`leased`) and
    what leases of workers that died hold (`lost`: up to that many may have been used)."""
    if limits is None:
        return {"rate_limits": [], "credits": None}
    shown = limits.public()
    t = time.time()
    keys = [window_key(limits.owner, w, window_number(t, w.window)) for w in limits.windows]
    try:
        used: list[int | None] = list(await authority.cache.redis.window_use(keys))
    except (RedisError, OSError):
        used = [None] * len(keys)
    for item, window, n in zip(shown["rate_limits"], limits.windows, used, strict=True):
        item["remaining"] = None if n is None else max(0, window.limit - n)
    if limits.credits:
        balance = await store_credits.balance(authority.pool, limits.owner)
        shown["credits"].update(
            remaining=0 if balance is None else balance.remaining,
            leased=0 if balance is None else balance.leased,
            lost=0 if balance is None else balance.lost,
        )
    return shown
