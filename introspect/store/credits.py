"""Credit balances and their leases (`credit_accounts`, `credit_leases`): the truth of credits.

A worker never spends a credit it has not taken in a lease: `renew_lease`
returns what its previous lease did not spend and takes a new block, in one
transaction holding the account's row lock, after applying the refill of the
current interval exactly once (the row's `period` moves forward under that
lock, whichever instance gets there first).
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from introspect.store.records import Limits, now


@dataclass(frozen=True, slots=True)
class Lease:
    """Credits taken from an account: `amount` may be spent until `expires_at` (epoch s), while
    the account's generation and refill period are still these."""

    id: int
    amount: int
    generation: int
    period: int
    expires_at: int
    # The account's balance right after the lease was taken (for the RateLimit fields).
    remaining: int


@dataclass(frozen=True, slots=True)
class Balance:
    """An account as the admin API reads it: the balance, what live leases hold, and what
    expired leases hold that no worker returned (held by a worker that died)."""

    remaining: int
    leased: int
    lost: int


def period_of(t: int, interval: int | None) -> int:
    """The refill interval number of epoch second `t` (0 without a refill)."""
    return 0 if interval is None else t // interval


async def set_credits(conn: asyncpg.Connection, limits: Limits, remaining: int) -> None:
    """Set an account's balance and refill (a new generation: older leases are void), or
    create it."""
    refill = limits.refill
    await conn.execute(
        "INSERT INTO credit_accounts"
        " (owner, generation, remaining, refill_amount, refill_interval, period)"
        " VALUES ($1, $2, $3, $4, $5, $6)"
        " ON CONFLICT (owner) DO UPDATE SET generation = $2, remaining = $3,"
        " refill_amount = $4, refill_interval = $5, period = $6",
        limits.owner,
        limits.generation,
        remaining,
        None if refill is None else refill.amount,
        None if refill is None else refill.interval,
        period_of(now(), None if refill is None else refill.interval),
    )


async def drop_credits(conn: asyncpg.Connection, owner: str) -> None:
    """Forget an account (its credits were removed): its leases go with it."""
    await conn.execute("DELETE FROM credit_accounts WHERE owner = $1", owner)


_REFILL = (
    "UPDATE credit_accounts SET remaining = refill_amount, period = $2"
    " WHERE owner = $1 AND refill_interval IS NOT NULL AND period < $2"
)

# Unspent credits go back only to the generation and period they came from: $1 the
# lease, $2 what it did not spend.
_RETURN = (
    "WITH gone AS (DELETE FROM credit_leases WHERE id = $1"
    "  RETURNING owner, generation, period)"
    " UPDATE credit_accounts a SET remaining = a.remaining + $2 FROM gone"
    " WHERE a.owner = gone.owner AND a.generation = gone.generation"
    " AND a.period = gone.period"
)


async def renew_lease(
    pool: asyncpg.Pool,
    owner: str,
    *,
    returned: tuple[int, int] | None,
    want: int,
    demand: int,
    divisor: int,
    max_block: int,
    holder: str,
    ttl: int,
) -> Lease | None:
    """Return `returned` (lease id, credits unspent) and take a lease: 1/`divisor` of what
    remains, or `demand` (the uses waiting for it) when more, at most `max_block` and at least
    `want`: blocks shrink as the balance nears zero, so the last credits go one by one unless
    requests already wait for them; none when fewer than `want` remain. The new lease (its
    amount may be 0, then it has no row), or None when the account does not exist."""
    t = now()
    async with pool.acquire() as conn, conn.transaction():
        account = await conn.fetchrow(
            "SELECT refill_interval, period FROM credit_accounts WHERE owner = $1 FOR UPDATE",
            owner,
        )
        if account is None:
            return None
        period = period_of(t, account["refill_interval"])
        if period > account["period"]:
            # The refill of this interval, once: the row lock orders every instance.
            await conn.execute(
                "UPDATE credit_accounts SET remaining = refill_amount, period = $2"
                " WHERE owner = $1 AND period < $2",
                owner,
                period,
            )
        if returned is not None:
            await conn.execute(_RETURN, *returned)
        current = await conn.fetchrow(
            "SELECT generation, period, remaining FROM credit_accounts WHERE owner = $1", owner
        )
        remaining = current["remaining"]
        block = min(max_block, max(demand, -(-remaining // divisor)))
        amount = 0 if remaining < want else min(remaining, max(want, block))
        lease_id = 0
        if amount:
            remaining -= amount
            await conn.execute(
                "UPDATE credit_accounts SET remaining = $2 WHERE owner = $1", owner, remaining
            )
            lease_id = await conn.fetchval(
                "INSERT INTO credit_leases"
                " (owner, generation, period, holder, amount, taken_at, expires_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                owner,
                current["generation"],
                current["period"],
                holder,
                amount,
                t,
                t + ttl,
            )
    return Lease(
        id=lease_id,
        amount=amount,
        generation=current["generation"],
        period=current["period"],
        expires_at=t + ttl,
        remaining=remaining,
    )


async def return_lease(pool: asyncpg.Pool, lease_id: int, unspent: int) -> None:
    """Give back what a lease did not spend, and drop it."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(_RETURN, lease_id, unspent)


# A lease still in the table this long after its expiry was held by a worker that died.
LOST_AFTER = 5


async def balance(conn: asyncpg.Pool | asyncpg.Connection, owner: str) -> Balance | None:
    """The account's balance now (with the refill due, unwritten), what live leases of its
    generation and period hold, and what expired ones hold (lost)."""
    t = now()
    record = await conn.fetchrow(
        "SELECT a.remaining, a.refill_amount, a.refill_interval, a.period,"
        " coalesce(sum(l.amount) FILTER (WHERE l.expires_at + $2 > $3), 0)::bigint AS leased,"
        " coalesce(sum(l.amount) FILTER (WHERE l.expires_at + $2 <= $3), 0)::bigint AS lost"
        " FROM credit_accounts a LEFT JOIN credit_leases l ON l.owner = a.owner"
        " AND l.generation = a.generation AND l.period = a.period"
        " WHERE a.owner = $1 GROUP BY a.owner",
        owner,
        LOST_AFTER,
        t,
    )
    if record is None:
        return None
    if period_of(t, record["refill_interval"]) > record["period"]:
        return Balance(remaining=record["refill_amount"], leased=0, lost=0)
    return Balance(remaining=record["remaining"], leased=record["leased"], lost=record["lost"])


async def new_generation(conn: asyncpg.Connection) -> int:
    """A new generation for a balance set again (from `change_version`)."""
    generation: int = await conn.fetchval("SELECT nextval('change_version')")
    return generation
