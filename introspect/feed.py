"""The revocation feed: RFC 8936 polls answered with RFC 8417 SETs, from Postgres.

Events are written by the changes themselves, in their own transaction
(`record_credential_event`, `record_client_event`, and the revoking statement
of `store/revocations.py`), next to the change-log row whose invalidation
every worker of every instance then receives over Redis pub/sub. That
invalidation is this worker's wake-up (`Waker`, fed by the listener): a long
poll parked here reads Postgres again at once. Postgres stays the source:
while the listener is not subscribed (Redis down, or reconnecting: its loss
wakes every poll too), a parked poll reads again every RECHECK seconds, so a
missed wake-up only delays an answer; a poll is answered within LONG_POLL
seconds whatever happens.

What a caller sees follows /introspect: a client registered without
audiences sees every event, one with audiences only the events whose
credentials share one of them (an event about a client or a subject: one of
the credentials it concerns). Each SET is addressed (`aud`) to the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg

from introspect import rfc8417, rfc8936, store
from introspect.jwts import Jwts
from introspect.metrics import METRICS
from introspect.store import Client, FeedEvent

log = logging.getLogger(__name__)

# A long poll is answered within this many seconds, events or not (SPEC).
LONG_POLL = 30.0
# A parked poll reads Postgres again at least this often, wake-up or not.
RECHECK = 5.0
# Receivers that have not polled for this long are forgotten (their next poll starts anew).
IDLE_RECEIVER = 7 * 86_400
# How often a worker prunes the feed (seconds).
PRUNE_INTERVAL = 60.0
# Added to the longest cache lifetime for the retention: clocks, a long poll under way.
RETENTION_MARGIN = 60


class Waker:
    """Wakes every poll parked in this process: `wake` on each change received."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.closed = False

    def current(self) -> asyncio.Event:
        """The event the next `wake` sets: take it before reading, wait on it after."""
        return self._event

    def wake(self) -> None:
        """Something changed: every parked poll reads again."""
        self._event.set()
        self._event = asyncio.Event()

    def close(self) -> None:
        """The worker stops: parked polls answer at once, and new ones do not wait."""
        self.closed = True
        self.wake()


async def record_credential_event(
    conn: asyncpg.Connection, event_type: str, jti: str, audiences: Sequence[str]
) -> None:
    """Record an event about one credential, in the caller's transaction."""
    await store.add_feed_event(conn, event_type, {"jti": jti}, audiences)
    METRICS.events_published.inc()


async def record_client_event(conn: asyncpg.Connection, event_type: str, client_id: str) -> None:
    """Record an event about a client, in the caller's transaction."""
    await store.add_client_event(conn, event_type, client_id)
    METRICS.events_published.inc()


class Feed:
    """Answers polls of `/events` for authenticated callers."""

    def __init__(self, pool: asyncpg.Pool, jwts: Jwts, retention: float) -> None:
        self.pool = pool
        self.jwts = jwts
        # Seconds an event is kept at least: the longest cache lifetime and a margin.
        self.retention = retention
        self.waker = Waker()
        # Whether every change reaches `waker` (the listener is subscribed); until told,
        # never, and parked polls read again every RECHECK.
        self.listening: Callable[[], bool] = lambda: False
        # Polls parked in this process now.
        self.waiting = 0
        self._pruner: asyncio.Task[None] | None = None

    async def poll(self, caller: Client, request: rfc8936.Poll) -> dict[str, Any]:
        """The §2.5 answer to `caller`'s poll: its acknowledgements applied, then the SETs
        it has not acknowledged, waiting for one (LONG_POLL at most) unless told not to."""
        acks, gap_acked = _acknowledged(caller.client_id, request.acks)
        if request.errors:
            log.info(
                "receiver %s reported %d SET(s) not processed (%s)",
                caller.client_id,
                len(request.errors),
                ", ".join(sorted({err for _jti, err in request.errors})[:5]),
            )
        deadline = time.monotonic() + LONG_POLL
        while True:
            woken = self.waker.current()
            METRICS.pg_queries.inc()
            async with self.pool.acquire() as conn:
                page = await store.poll_feed(
                    conn,
                    caller.client_id,
                    request.receiver,
                    caller.audiences,
                    acks=acks,
                    gap_acked=gap_acked,
                    limit=request.max_events,
                )
            acks, gap_acked = [], None  # applied
            left = deadline - time.monotonic()
            if (
                page.events
                or page.more
                or page.gap is not None
                or request.return_immediately
                or not request.max_events  # acknowledging only (§2.4)
                or self.waker.closed
                or left <= 0
            ):
                break
            self.waiting += 1
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        woken.wait(), left if self.listening() else min(left, RECHECK)
                    )
            finally:
                self.waiting -= 1
        sets = {}
        gap_sets = 0
        if page.gap is not None and request.max_events:
            gap_sets = 1
            jti = rfc8936.jti(rfc8936.GAP, page.gap, caller.client_id)
            sets[jti] = await self.jwts.sign_event(
                caller.client_id, jti, rfc8417.FEED_GAP, {"reason": GAP_REASON}
            )
        events = page.events[: request.max_events - gap_sets]
        for event in events:
            jti = rfc8936.jti(rfc8936.EVENT, event.id, caller.client_id)
            sets[jti] = await self.jwts.sign_event(caller.client_id, jti, event.type, event.subject)
        _delivered(events)
        more = (
            page.more or len(events) < len(page.events) or (page.gap is not None and not gap_sets)
        )
        return rfc8936.response(sets, more)

    def start(self) -> None:
        """Prune the feed in the background, every PRUNE_INTERVAL."""
        self._pruner = asyncio.get_running_loop().create_task(self._prune_forever())

    async def _prune_forever(self) -> None:
        while True:
            await asyncio.sleep(PRUNE_INTERVAL)
            try:
                await self.prune()
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                log.warning("feed pruning failed: %s", type(exc).__name__)

    async def prune(self) -> int:
        """Forget events older than the retention, and long-idle receivers; how many events."""
        t = time.time()
        return await store.prune_feed(self.pool, t - self.retention, int(t) - IDLE_RECEIVER)

    async def close(self) -> None:
        """Answer parked polls and stop pruning."""
        self.waker.close()
        if self._pruner is not None:
            self._pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pruner


# The payload of every feed-gap: a new position, events pruned before it read them, or a
# change of its own audiences.
GAP_REASON = "this receiver may have missed events: drop every cached answer"


def _acknowledged(client_id: str, jtis: Sequence[str]) -> tuple[list[int], int | None]:
    """The event ids, and the gap notice, that `jtis` acknowledge (others are ignored: SETs
    of no one, or of another caller)."""
    ids: list[int] = []
    gap = None
    for each in jtis:
        parsed = rfc8936.parse_jti(each, client_id)
        if parsed is None:
            continue
        kind, number = parsed
        if kind == rfc8936.GAP:
            gap = number
        else:
            ids.append(number)
    return ids, gap


def _delivered(events: list[FeedEvent]) -> None:
    """Count SETs delivered and how long after their change each one left."""
    t = time.time()
    METRICS.events_delivered.inc(len(events))
    for event in events:
        METRICS.event_lag.observe(max(0.0, t - event.created_at))
