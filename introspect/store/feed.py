"""The revocation feed: its events, each receiver's position, retention (sql/0011_event_feed.sql).

Events are written in the transaction of the change that causes them
(`add_feed_event`, `add_client_event`, and the revoking statement of
`revocations.py`); their ids are drawn in commit order (the table's trigger),
so a position may move past every id seen without skipping a later commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson

from introspect.store.credentials import LIVE
from introspect.store.records import FeedEvent, FeedPage, now

# At most this many acknowledged ids above a receiver's position are remembered.
MAX_ACKED = 10_000


async def add_feed_event(
    conn: asyncpg.Connection, event_type: str, subject: dict[str, Any], audiences: Sequence[str]
) -> None:
    """Record an event seen by callers sharing one of `audiences` (and those without any)."""
    await conn.execute(
        "INSERT INTO feed_events (type, subject, audiences) VALUES ($1, $2::text::jsonb, $3)",
        event_type,
        orjson.dumps(subject).decode(),
        list(audiences),
    )


async def add_client_event(conn: asyncpg.Connection, event_type: str, client_id: str) -> None:
    """Record an event about a client, seen by the callers that may see one of its live
    credentials (by their audiences, as /introspect decides)."""
    await conn.execute(
        "INSERT INTO feed_events (type, subject, audiences)"
        " SELECT $1, jsonb_build_object('client_id', $2::text),"
        "  coalesce((SELECT array_agg(DISTINCT a) FROM credentials c, unnest(c.audiences) a"
        f"   WHERE c.client_id = $2 AND {LIVE.format('$3')}), '{{}}')",
        event_type,
        client_id,
        now(),
    )


async def reset_receivers(conn: asyncpg.Connection, client_id: str) -> None:
    """Give every receiver of `client_id` a gap at its position: what it may see changed, so
    everything it cached may be wrong."""
    await conn.execute(
        "UPDATE feed_receivers SET gap = nextval('feed_gaps') WHERE client_id = $1", client_id
    )


async def poll_feed(
    conn: asyncpg.Connection,
    client_id: str,
    receiver: str,
    audiences: Sequence[str],
    *,
    acks: Sequence[int],
    gap_acked: int | None,
    limit: int,
) -> FeedPage:
    """Apply a receiver's acknowledgements, then read the events it may see and has not
    acknowledged, oldest first (`limit` at most), and move its position past everything
    acknowledged. A receiver's first poll starts it at the newest event, with a gap to
    tell; one whose position fell behind the pruned events starts again there too."""
    t = now()
    async with conn.transaction():
        # A new position starts with a gap: whatever the receiver cached before it had one
        # (or before it was forgotten for idleness) may be stale.
        await conn.execute(
            "WITH top AS (SELECT greatest((SELECT coalesce(max(id), 0) FROM feed_events),"
            "  (SELECT pruned_through FROM feed_horizon)) AS id)"
            " INSERT INTO feed_receivers (client_id, receiver, position, gap, polled_at)"
            " SELECT $1, $2, top.id, nextval('feed_gaps'), $3 FROM top"
            " ON CONFLICT DO NOTHING",
            client_id,
            receiver,
            t,
        )
        row = await conn.fetchrow(
            "SELECT r.position, r.acked, r.gap, h.pruned_through"
            " FROM feed_receivers r, feed_horizon h"
            " WHERE r.client_id = $1 AND r.receiver = $2 FOR UPDATE OF r",
            client_id,
            receiver,
        )
        position: int = row["position"]
        acked = set(row["acked"])
        gap: int | None = row["gap"]
        if gap is not None and gap == gap_acked:
            gap = None
        behind = position < row["pruned_through"]
        if not behind:
            acked.update(a for a in acks if a > position)
        rows = await conn.fetch(
            "WITH top AS (SELECT greatest(coalesce(max(id), 0),"
            "  (SELECT pruned_through FROM feed_horizon)) AS top FROM feed_events)"
            " SELECT top.top, e.id, e.created_at, e.type, e.subject::text AS subject"
            " FROM top LEFT JOIN LATERAL (SELECT id, created_at, type, subject FROM feed_events"
            "  WHERE id > $1 AND NOT (id = ANY($2::bigint[]))"
            "   AND (cardinality($3::text[]) = 0 OR audiences && $3::text[])"
            "  ORDER BY id LIMIT $4) e ON NOT $5"
            " ORDER BY e.id",
            position,
            sorted(acked),
            list(audiences),
            limit + 1,
            behind,
        )
        top: int = rows[0]["top"]
        events = [
            FeedEvent(r["id"], r["created_at"], r["type"], orjson.loads(r["subject"]))
            for r in rows
            if r["id"] is not None
        ]
        if behind:
            # Events it may need are gone: start again at the newest, and say so.
            position, acked = top, set()
            gap = await conn.fetchval("SELECT nextval('feed_gaps')")
        else:
            position = events[0].id - 1 if events else top
            acked = {a for a in acked if position < a <= top}
        await conn.execute(
            "UPDATE feed_receivers SET position = $3, acked = $4, gap = $5, polled_at = $6"
            " WHERE client_id = $1 AND receiver = $2",
            client_id,
            receiver,
            position,
            sorted(acked)[:MAX_ACKED],
            gap,
            t,
        )
    return FeedPage(events=events[:limit], more=len(events) > limit, gap=gap)


async def prune_feed(
    conn: asyncpg.Pool | asyncpg.Connection, before: float, idle_before: int
) -> int:
    """Forget the events written before `before` (and every event before those: a prefix of
    ids), recording how far; and receivers idle since before `idle_before`. How many events."""
    done: int = await conn.fetchval(
        "WITH cut AS (SELECT max(id) AS id FROM feed_events WHERE created_at < $1),"
        " d AS (DELETE FROM feed_events WHERE id <= (SELECT id FROM cut) RETURNING id),"
        " h AS (UPDATE feed_horizon SET pruned_through = (SELECT id FROM cut)"
        "  WHERE (SELECT id FROM cut) > pruned_through),"
        " r AS (DELETE FROM feed_receivers WHERE polled_at < $2)"
        " SELECT count(*) FROM d",
        before,
        idle_before,
    )
    return done
