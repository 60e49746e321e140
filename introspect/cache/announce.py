"""The write path after a commit: tombstone Redis, publish, wait for acknowledgements.

Also the outbox's replay (invalidations whose writer could not reach Redis)
and the change log's (every change of a window, written again to a Redis
whose history is not vouched for: see introspect/history.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import TypeVar

import asyncpg
import orjson

from introspect import acks, store
from introspect.cache.invalidation import CHANNEL, Invalidation
from introspect.metrics import METRICS
from introspect.redis.port import Redis, Unwritten

log = logging.getLogger(__name__)
T = TypeVar("T")

ACK_TIMEOUT = 1.0
# Writes per round trip when writing the change log again.
REPLAY_BATCH = 1000


class PostgresFailed(Exception):
    """A Postgres operation of the Redis upkeep failed: its OSError is not Redis's."""


async def postgres(operation: Awaitable[T]) -> T:
    """`operation`'s result; any failure of it raised as PostgresFailed.

    asyncpg raises OSError (a refused connection, a deadline) like the Redis
    client does: told apart here, a Postgres outage never makes a worker stop
    trusting a Redis that answers, and cached answers keep coming (promise 5).
    """
    try:
        return await operation
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        raise PostgresFailed(type(exc).__name__) from exc


class Announcer:
    """Publishes invalidations and collects their acknowledgements (introspect/acks.py)."""

    def __init__(self, redis: Redis, pool: asyncpg.Pool, lazy_pool: asyncpg.Pool) -> None:
        self.redis = redis
        self.pool = pool
        self.lazy_pool = lazy_pool
        self._background: set[asyncio.Task[None]] = set()
        # Acknowledgements of this process's changes, on one connection (introspect/acks.py).
        self._collector = acks.Collector(redis)

    def mark_published(self, outbox_id: int) -> None:
        """Mark an outbox row published, off the caller's path: a mark that fails or is lost
        only republishes."""
        task = asyncio.get_running_loop().create_task(self._mark_published(outbox_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _mark_published(self, outbox_id: int) -> None:
        try:
            await store.mark_published(self.lazy_pool, [outbox_id])
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            log.warning("published invalidation left pending: %s", type(exc).__name__)

    async def publish(self, invalidation: Invalidation) -> int:
        """Tombstone Redis and publish, in one pipeline; how many listeners acknowledged."""
        started = time.monotonic()
        nonce = self._collector.nonce()
        try:
            # Whatever the history: a newer version never brings back an old state.
            receivers = await self.redis.publish(
                CHANNEL, orjson.dumps(invalidation.message(nonce)), invalidation.writes()
            )
        except Unwritten as exc:  # received, yet pending: once every listener applied it
            await self._collector.wait(nonce, exc.receivers, time.monotonic() + ACK_TIMEOUT)
            raise
        except BaseException:
            self._collector.forget(nonce)
            raise
        METRICS.invalidations_sent.inc()
        deadline = time.monotonic() + ACK_TIMEOUT
        acknowledged = await self._collector.wait(nonce, receivers, deadline)
        METRICS.invalidation_acked.observe(time.monotonic() - started)
        return acknowledged

    async def replay_outbox(self, older_than: int) -> int:
        """Publish the invalidations left in the outbox; return how many."""
        rows = await postgres(store.pending_outbox(self.pool, older_than))
        for _id, raw in rows:
            await self.publish(Invalidation.loads(raw))
        if rows:
            await postgres(store.mark_published(self.pool, [i for i, _ in rows]))
            log.info("replayed %d pending invalidation(s)", len(rows))
        return len(rows)

    async def replay_changes(self, since: int, identity: bytes) -> int:
        """Write again, on the server `identity`, every change recorded since `since`."""
        changes = await store.changes_since(self.pool, since)
        writes = [w for raw in changes for w in Invalidation.loads(raw).writes()]
        for start in range(0, len(writes), REPLAY_BATCH):
            METRICS.redis_calls.inc()
            await self.redis.write(writes[start : start + REPLAY_BATCH], identity)
        return len(changes)

    async def close(self) -> None:
        """Finish the outbox marks under way and stop collecting acknowledgements."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self._collector.close()
