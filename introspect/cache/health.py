"""Whether this worker uses Redis now, and how it comes back to using it (promises 4 to 6).

Any Redis failure sends lookups straight to Postgres and switches the
in-process cache off; a background task then vouches for the history of the
Redis it reaches (introspect/history.py) and replays the outbox before Redis
is used again. A sweep watches the vouched history, replays invalidations
whose writer could not reach Redis, and prunes the change log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
from redis.exceptions import RedisError

from introspect import store
from introspect.cache.announce import Announcer, PostgresFailed, postgres
from introspect.cache.local import LocalCache
from introspect.history import History
from introspect.metrics import METRICS
from introspect.redis.port import EvictingRedis, HistoryUnknown, Redis, ServerChanged

log = logging.getLogger(__name__)

# A change whose writer could not reach Redis is replayed by a worker within about this.
OUTBOX_SWEEP_INTERVAL = 2
# Added to the longest cache lifetime for the change log's replay window: clocks, fill delays.
HISTORY_MARGIN = 60
# How often a worker checks that its Redis is the server and history it vouches for (s).
HISTORY_CHECK_INTERVAL = 1.0
# What stops a worker from vouching for its Redis for now: either store failing.
_NOT_VOUCHED = (RedisError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError, PostgresFailed)
# Published changes older than the replay window and this are pruned, about this often (s).
PRUNE_INTERVAL = 60


class Health:
    """This worker's use of Redis: on while its history is vouched for, else recovering."""

    def __init__(
        self,
        redis: Redis,
        pool: asyncpg.Pool,
        lazy_pool: asyncpg.Pool,
        *,
        local: LocalCache,
        announcer: Announcer,
        window: int,
    ) -> None:
        self.redis = redis
        self.lazy_pool = lazy_pool
        self.local = local
        self.announcer = announcer
        # Reads use Redis only once its history is vouched for: see `start` and `_recover`.
        self.ok = False
        self.history = History(redis, pool, announcer.replay_changes, window=window)
        self._recovering: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None

    def failed(self, exc: BaseException) -> None:
        """Go straight to Postgres until Redis answers again, its history is vouched for
        and the outbox is replayed."""
        if isinstance(exc, ServerChanged):  # another server, or history lost
            if self.ok or self.history.marker is not None:
                METRICS.history_losses.inc()
                log.warning("%s: answering from postgres until it is vouched for again", exc)
            self.history.forget()
        elif self.ok:
            log.warning("redis unreachable, answering from postgres: %s", type(exc).__name__)
        self.ok = False
        self.local.set_state(healthy=False)
        if self._recovering is None or self._recovering.done():
            self._recovering = asyncio.get_running_loop().create_task(self._recover())

    async def start(self) -> None:
        """Vouch for the Redis history once (bounded), else keep trying in the background."""
        try:
            async with asyncio.timeout(self.redis.timeout):
                await self._vouch()
        except _NOT_VOUCHED:
            self.failed(HistoryUnknown("redis history not vouched for yet"))

    async def _vouch(self) -> None:
        await self.history.vouch()
        await self.announcer.replay_outbox(older_than=store.now() + 1)
        self.ok = True
        self.local.set_state(healthy=True, vouched=self.history.identity)

    async def _recover(self) -> None:
        delay = 0.05
        failing = False
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
            try:
                await self._vouch()
            except EvictingRedis as exc:
                log.error("%s", exc)
                delay = 10.0
                continue
            except _NOT_VOUCHED as exc:
                if not failing:  # once per streak
                    log.warning("redis not usable yet: %s", type(exc).__name__)
                failing = True
                continue
            log.info("redis usable again")
            return

    def start_sweeper(self) -> None:
        """Watch the Redis history, replay unpublished invalidations, prune the change log."""
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(HISTORY_CHECK_INTERVAL)
            ticks += 1
            if not self.ok:
                continue  # recovery vouches and replays the outbox before Redis is trusted
            try:
                await self.history.check()
                if ticks % OUTBOX_SWEEP_INTERVAL == 0:
                    await self.announcer.replay_outbox(
                        older_than=store.now() - OUTBOX_SWEEP_INTERVAL
                    )
                if ticks % PRUNE_INTERVAL == 0:
                    await postgres(
                        store.prune_changes(
                            self.lazy_pool, store.now() - self.history.window - HISTORY_MARGIN
                        )
                    )
            except PostgresFailed as exc:
                log.warning("outbox sweep failed: %s", exc)
            except (RedisError, OSError) as exc:
                self.failed(exc)
            except Exception:  # the watch must outlive any surprise: log it, go on
                log.exception("redis history watch failed")

    async def state(self) -> str:
        """For readiness: `ok`, `replay pending` (reachable, history not vouched for yet) or
        `unreachable`. A history found lost here is handled as on any read."""
        try:
            if self.ok:
                await self.history.check()
                return "ok"
            await self.redis.ping()
        except HistoryUnknown as exc:
            self.failed(exc)
        except (RedisError, OSError) as exc:
            self.failed(exc)
            return "unreachable"
        return "replay pending"

    async def close(self) -> None:
        """Stop recovering and sweeping."""
        for task in (self._recovering, self._sweeper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
