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
from collections.abc import Awaitable, Callable

import asyncpg
from redis.exceptions import RedisError

from introspect import store
from introspect.cache.announce import Announcer, PostgresFailed, postgres
from introspect.cache.local import LocalCache
from introspect.history import History, ShardedHistory
from introspect.metrics import METRICS
from introspect.redis.cluster import CLUSTER, ClusterRedis, ShardLost
from introspect.redis.lean import LeanRedis
from introspect.redis.port import EvictingRedis, HistoryUnknown, Redis, ServerChanged, Unwritten

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
        self.history: History | ShardedHistory = self._history(
            pool, announcer.replay_changes, window
        )
        self._recovering: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None

    def _history(
        self, pool: asyncpg.Pool, replay: Callable[[int, bytes], Awaitable[int]], window: int
    ) -> History | ShardedHistory:
        assert isinstance(self.redis, LeanRedis), "a cluster's health is ClusterHealth"
        return History(self.redis, pool, replay, window=window)

    def failed(self, exc: BaseException) -> None:
        """Go straight to Postgres until Redis answers again, its history is vouched for
        and the outbox is replayed."""
        if isinstance(exc, ServerChanged):  # another server, or history lost
            if self.ok or self.history.value is not None:
                METRICS.history_losses.inc()
                log.warning("%s: answering from postgres until it is vouched for again", exc)
            self.history.forget()
        elif self.ok:
            log.warning("redis unreachable, answering from postgres: %s", type(exc).__name__)
        self.ok = False
        self.local.set_state(healthy=False)
        self._recover_soon()

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

    def _recover_soon(self) -> None:
        if self._recovering is None or self._recovering.done():
            self._recovering = asyncio.get_running_loop().create_task(self._recover())

    async def _check(self) -> None:
        """Raise unless the vouched history is still the one Redis holds."""
        await self.history.check()

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
                await self._check()
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
                await self._check()
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


class ClusterHealth(Health):
    """On a Valkey Cluster: each primary's history is vouched for on its own (ShardedHistory).

    A primary found lost (failed, replaced, its replica promoted, its marker gone) costs only
    its own slots: their keys are answered from Postgres and their in-process entries are
    dropped, while every other primary keeps serving reads, fills and the in-process cache;
    the recovery vouches for it again (its replay writes the change log's rows of its own
    slots). What is not one primary's (the layout unknown, the hub's publish failing) keeps
    the rules of one server.
    """

    history: ShardedHistory

    def _history(
        self, pool: asyncpg.Pool, replay: Callable[[int, bytes], Awaitable[int]], window: int
    ) -> ShardedHistory:
        assert isinstance(self.redis, ClusterRedis), "one server's health is Health"
        self.redis.on_lost = self.failed
        return ShardedHistory(self.redis, pool, replay, window)

    def failed(self, exc: BaseException) -> None:
        """A primary lost costs its slots only (a change's tombstones unwritten on it too);
        no vouched history at all, as on one server; any other failure (the hub, the layout)
        is left to the watch, which checks every primary."""
        lost = exc.__cause__ if isinstance(exc, Unwritten) else exc
        if isinstance(lost, ShardLost):
            if self.history.forget_unit(lost.address):
                if isinstance(lost.cause, ServerChanged):
                    METRICS.history_losses.inc()
                log.warning("%s: its slots answered from postgres until vouched for again", lost)
                self._drop_unused()
        elif isinstance(exc, ServerChanged) or not self.ok:
            super().failed(exc)
            return
        self._recover_soon()

    async def start(self) -> None:
        """Vouch for every primary once (bounded); those that fail, in the background."""
        try:
            async with asyncio.timeout(self.redis.timeout):
                await self._vouch()
        except _NOT_VOUCHED:
            self._recover_soon()

    def _drop_unused(self) -> None:
        """Drop the in-process entries of every slot whose primary is not in use."""
        layout, used = self.history.redis.layout, self.history.used
        for shard in () if layout is None else layout.shards:
            if shard.address not in used:
                self.local.drop_slots(shard.ranges)

    async def _vouch(self) -> None:
        used = self.history.used
        try:
            await self.history.vouch()
        finally:
            if used - self.history.used:  # a primary in use replaced (found by the layout)
                METRICS.history_losses.inc()
                log.warning("a redis cluster primary was replaced: its slots read from postgres")
                self._drop_unused()
            # Used as soon as vouched for, each primary, once the outbox is replayed: the
            # others' keys go to Postgres meanwhile.
            ready = self.history.ready()
            if ready:
                await self.announcer.replay_outbox(older_than=store.now() + 1)
                self.history.use(ready)
                if not self.ok:
                    self.ok = True
                    self.local.set_state(healthy=True, vouched=CLUSTER.identity)

    async def _check(self) -> None:
        for lost in await self.history.check():
            self.failed(lost)
        if self.history.pending:
            self._recover_soon()

    async def state(self) -> str:
        """`ok` once every primary is vouched for, `replay pending` while one is not."""
        found = await super().state()
        return "replay pending" if found == "ok" and self.history.pending else found


def open_health(
    redis: Redis,
    pool: asyncpg.Pool,
    lazy_pool: asyncpg.Pool,
    *,
    local: LocalCache,
    announcer: Announcer,
    window: int,
) -> Health:
    """The health of one server, or of a cluster's primaries each on its own."""
    kind = ClusterHealth if isinstance(redis, ClusterRedis) else Health
    return kind(redis, pool, lazy_pool, local=local, announcer=announcer, window=window)
