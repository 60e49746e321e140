"""The meter against the real stores: concurrent uses of one balance in one worker."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets

from introspect import admin, store
from introspect.limits import Meter
from introspect.service import Authority
from introspect.store import credits as store_credits
from introspect.store.records import Limits, Window
from tests.integration.test_limits import parse_fields


async def _thousand_credits(authority: Authority) -> Limits:
    """The limits of a fresh API key holding 1,000 credits."""
    issued = await admin.create_api_key(
        authority,
        "test",
        {"sub": "meter-" + secrets.token_hex(4), "scopes": [], "credits": {"remaining": 1000}},
    )
    key = await store.get_credential(authority.pool, issued["id"])
    assert key is not None
    assert key.limits is not None
    return key.limits


async def test_concurrent_uses_in_one_worker_spend_each_credit_once(authority: Authority) -> None:
    """2,000 concurrent uses of a 1,000-credit key through one meter: exactly 1,000 admitted,
    and once its leases are returned the balance is 0 with nothing leased (a lease renewed
    while others still spend from it must not give back what they spent)."""
    limits = await _thousand_credits(authority)
    meter = Meter(authority.cache.redis, authority.pool)
    answers = await asyncio.gather(*(meter.admit([limits], 1, b"x") for _ in range(2000)))
    assert sum(a.active for a in answers) == 1000
    await meter.sweep(everything=True)
    balance = await store_credits.balance(authority.pool, limits.owner)
    assert balance == store_credits.Balance(remaining=0, leased=0, lost=0)


async def test_a_renewal_racing_uses_of_the_same_lease_gives_back_only_what_is_unspent(
    authority: Authority,
) -> None:
    """A lease renewed (as a request that saw it empty a moment ago renews it) while other
    requests still spend from it: what they spent is not given back, so after every lease is
    returned the balance is exactly the credits less the uses admitted."""
    limits = await _thousand_credits(authority)
    meter = Meter(authority.cache.redis, authority.pool)
    admitted = int((await meter.admit([limits], 1, b"x")).active)
    renewal = asyncio.ensure_future(meter._take_credits(limits, 1))
    await asyncio.sleep(0)  # the renewal has read the lease and awaits Postgres
    while (decided := meter.decide([limits], 1, b"x")) is not None and decided.active:
        admitted += 1
    await renewal
    await meter.sweep(everything=True)
    balance = await store_credits.balance(authority.pool, limits.owner)
    assert balance == store_credits.Balance(remaining=1000 - admitted, leased=0, lost=0)


async def test_a_refusal_shows_a_window_whose_lease_must_be_taken_first(
    authority: Authority,
) -> None:
    """Credits spent, and a window of the same key whose lease this worker no longer holds (a
    new window began): the refusal still carries the window's fields, taken before refusing,
    not the credits' alone."""
    issued = await admin.create_api_key(
        authority,
        "test",
        {
            "sub": "meter-" + secrets.token_hex(4),
            "scopes": [],
            "rate_limits": [{"name": "day", "limit": 10, "window": 86400}],
            "credits": {"remaining": 1},
        },
    )
    key = await store.get_credential(authority.pool, issued["id"])
    assert key is not None
    assert key.limits is not None
    meter = Meter(authority.cache.redis, authority.pool)
    assert (await meter.admit([key.limits], 1, b"x")).active
    assert not (await meter.admit([key.limits], 1, b"x")).active
    meter._windows.clear()  # as when the window's number moves on
    refused = await meter.admit([key.limits], 1, b"x")
    assert not refused.active
    for name in ("RateLimit-Policy", "RateLimit"):
        assert set(parse_fields(refused.headers[name])) == {"key.day", "key-credits"}, name
    # (The lease dropped above keeps what it had reserved: at most 9 of 10 remain.)
    assert 0 < parse_fields(refused.headers["RateLimit"])["key.day"]["r"] <= 9
    await meter.sweep(everything=True)


async def test_an_equal_limit_set_read_again_spends_from_the_same_lease(
    authority: Authority,
) -> None:
    """An entry read again (refreshed from Redis) holds an equal copy of its limits: the meter
    goes on deciding from memory, counting on from the lease it holds; a changed limit set is
    a new one, whose lease must be taken first."""
    limits = Limits("api_key:meter-" + secrets.token_hex(4), (Window("day", 100, 86_400),))
    meter = Meter(authority.cache.redis, authority.pool)
    first = await meter.admit([limits], 1, b"x")
    again = meter.decide([dataclasses.replace(limits)], 1, b"x")
    assert again is not None
    remaining = [parse_fields(a.headers["RateLimit"])["key.day"]["r"] for a in (first, again)]
    assert remaining[1] == remaining[0] - 1
    changed = Limits(limits.owner, (Window("day", 50, 86_400),))
    assert meter.decide([changed], 1, b"x") is None
