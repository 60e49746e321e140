"""The change log: the invalidation outbox, kept for replay, and Redis histories."""

from __future__ import annotations

import asyncpg

from introspect.store.records import now


async def add_outbox(conn: asyncpg.Connection, message: bytes) -> int:
    """Record an invalidation in the change's own transaction; returns its id."""
    outbox_id: int = await conn.fetchval(
        "INSERT INTO invalidation_outbox (message, created_at) VALUES ($1, $2) RETURNING id",
        message,
        now(),
    )
    return outbox_id


async def mark_published(conn: asyncpg.Pool | asyncpg.Connection, ids: list[int]) -> None:
    """Record that these invalidations were published (the rows stay: see prune_changes)."""
    await conn.execute(
        "UPDATE invalidation_outbox SET published_at = $2"
        " WHERE id = ANY($1::bigint[]) AND published_at IS NULL",
        ids,
        now(),
    )


async def pending_outbox(
    conn: asyncpg.Pool | asyncpg.Connection, older_than: int, limit: int = 100
) -> list[tuple[int, bytes]]:
    """Invalidations still unpublished, oldest first."""
    rows = await conn.fetch(
        "SELECT id, message FROM invalidation_outbox"
        " WHERE published_at IS NULL AND created_at <= $1 ORDER BY id LIMIT $2",
        older_than,
        limit,
    )
    return [(r["id"], bytes(r["message"])) for r in rows]


async def changes_since(conn: asyncpg.Pool | asyncpg.Connection, since: int) -> list[bytes]:
    """Every change recorded at or after `since`, published or not, oldest first."""
    rows = await conn.fetch(
        "SELECT message FROM invalidation_outbox WHERE created_at >= $1 ORDER BY id", since
    )
    return [bytes(r["message"]) for r in rows]


async def prune_changes(conn: asyncpg.Pool | asyncpg.Connection, before: int) -> int:
    """Forget published changes recorded before `before`; how many."""
    done: str = await conn.execute(
        "DELETE FROM invalidation_outbox WHERE published_at IS NOT NULL AND created_at < $1",
        before,
    )
    return int(done.rsplit(" ", 1)[-1])


async def start_redis_history(conn: asyncpg.Pool | asyncpg.Connection, started_at: int) -> bool:
    """Record a Redis history whose replay started at `started_at`; whether one came before."""
    earlier: bool = await conn.fetchval(
        "WITH earlier AS (SELECT EXISTS (SELECT 1 FROM redis_histories) AS found),"
        " added AS (INSERT INTO redis_histories (started_at) VALUES ($1))"
        " SELECT found FROM earlier",
        started_at,
    )
    return earlier
