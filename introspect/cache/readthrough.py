"""The read path over the three layers (in-process, Redis, Postgres), and the cache's facade.

A lookup records the in-process epoch and the history marker before it
starts, and stores what it read only under them: in-process if no
invalidation arrived meanwhile, in Redis by a versioned fill under the
marker it read under, abandoned past FILL_DEADLINE (see the package doc).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import asyncpg
from redis.exceptions import RedisError

from introspect import store
from introspect.cache.announce import Announcer
from introspect.cache.coalescer import Coalescer, Outcome
from introspect.cache.entry import (
    ANSWER,
    CACHEABLE,
    KEY_PREFIX,
    REVOKED_TTL,
    VERSION,
    Entry,
    client_key,
    decode,
    decode_client,
    encode,
    encode_client,
    inactive,
    lifetime,
)
from introspect.cache.health import HISTORY_MARGIN, open_health
from introspect.cache.invalidation import Announced, Invalidation
from introspect.cache.local import REFRESH_TO, LocalCache
from introspect.metrics import METRICS
from introspect.redis.port import HistoryUnknown, Redis, Write
from introspect.store import Client

log = logging.getLogger(__name__)

FILL_DEADLINE = 5.0
# Keys per MGET when refreshing.
REFRESH_BATCH = 500
# A refresh waits this long (at most half of the shortest time between an entry coming due and
# its end, see local.REFRESH_TO) for more keys to come due, and reads them in one MGET: keys
# come due at random moments (jitter), and read one at a time they cost a round trip and a
# task each (about 80 a second per worker with 1,000 hot keys, several % of its CPU).
REFRESH_GATHER = 0.1


def _by_key(keys: list[bytes], values: list[bytes | None]) -> dict[bytes, bytes]:
    """The values found, by key."""
    return {k: v for k, v in zip(keys, values, strict=True) if v is not None}


class CredentialCache:
    """The read path over the three layers, and the write path that keeps them coherent."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: Redis,
        *,
        local: LocalCache,
        redis_ttl: int,
        negative_ttl: int,
        lazy_pool: asyncpg.Pool | None = None,
    ) -> None:
        self.pool = pool
        # Marking a published outbox row need not wait for the WAL flush: if a crash
        # forgets the mark, the invalidation is only published once more.
        self.lazy_pool = lazy_pool or pool
        # Every Redis command goes through the port (introspect/redis/port.py), which names the
        # server each one requires (see introspect/history.py).
        self.redis = redis
        self.local = local
        self.redis_ttl = redis_ttl
        self.negative_ttl = negative_ttl
        self.announcer = Announcer(redis, pool, self.lazy_pool)
        self.health = open_health(
            redis,
            pool,
            self.lazy_pool,
            local=local,
            announcer=self.announcer,
            window=max(redis_ttl, negative_ttl) + HISTORY_MARGIN,
        )
        self.history = self.health.history
        self._gets: Coalescer[bytes, bytes] = Coalescer(self._mget, start_many=self._mget_now)
        self._fills: Coalescer[Write, None] = Coalescer(self._fill_many)
        self._refreshing: asyncio.Task[None] | None = None
        # Awaited between a read and the fills it leads to: tests force interleavings here.
        self.before_fill: Callable[[bytes], Awaitable[None]] | None = None

    # --- read path -----------------------------------------------------------------------

    def cached(self, key: bytes, mono: float) -> Entry | None:
        """The in-process entry for `key` at `mono` (time.monotonic()), if any: no await."""
        entry = self.local.get(key, mono)
        if entry is not None:
            METRICS.local_hits.inc()
            if self.local.due and self._refreshing is None:
                self._refreshing = asyncio.get_running_loop().create_task(self._refresh())
        return entry

    async def _refresh(self) -> None:
        """Read again from Redis the in-process entries that came due (see the package doc).

        Any that Redis no longer holds, or that an invalidation touched
        meanwhile (the epoch), are left to expire and be read through as usual.
        """
        local = self.local
        try:
            await asyncio.sleep(min(REFRESH_GATHER, local.ttl * (1 - REFRESH_TO) / 2))
            while local.due:
                keys, local.due = local.due[:REFRESH_BATCH], local.due[REFRESH_BATCH:]
                if not (self.health.ok and self.redis_ttl):
                    local.due.clear()  # left to expire and be read through as usual
                    break
                epoch = local.epoch
                try:
                    found = await self._mget(keys)
                except (RedisError, OSError) as exc:
                    self.health.failed(exc)
                    continue
                if self.before_fill is not None:
                    await self.before_fill(keys[0])
                now = store.now()
                for key in keys:
                    raw = found.get(key)
                    entry = None if raw is None else decode(raw)
                    if entry is not None:
                        local.put(key, entry, epoch, now)
        except Exception:  # a refresh is an optimization: log, never lose the task silently
            log.exception("refreshing in-process entries failed")
        finally:
            self._refreshing = None

    async def lookup(
        self,
        key: bytes,
        load: Callable[[], Awaitable[Entry]],
        admit: Callable[[], Awaitable[bool]] | None = None,
    ) -> Entry:
        """The entry for `key`: in-process, else Redis, else `load()` from Postgres.

        `admit`, when given, is asked after an in-process miss whether the
        lookup may go on (a JWT's signature check): an in-process entry was
        only ever stored after this worker admitted the very same string.
        """
        local = self.local
        entry = self.cached(key, time.monotonic())
        if entry is not None:
            return entry
        epoch = local.epoch
        # A fill is stored only in the history its lookup began under (introspect/history.py).
        marker = self.history.value
        METRICS.local_misses.inc()
        if admit is not None and not await admit():
            return inactive(cacheable=False)
        if self.health.ok and self.redis_ttl:
            raw = await self._redis_get(key)
            if raw is not None:
                entry = decode(raw)
                if entry is not None:
                    METRICS.redis_hits.inc()
                    if self.before_fill is not None:
                        await self.before_fill(key)
                    local.put(key, entry, epoch, store.now())
                    return entry
            METRICS.redis_misses.inc()
        started = time.monotonic()
        entry = await load()
        if self.before_fill is not None:
            await self.before_fill(key)
        if entry[CACHEABLE] and marker is not None and self._may_fill(started):
            self._redis_fill(key, entry, marker)
        local.put(key, entry, epoch, store.now())
        return entry

    async def read_client(
        self, client_id: str, load: Callable[[], Awaitable[Client | None]]
    ) -> Client | None:
        """A client record from Redis, else `load()` from Postgres and filled into Redis.

        Under the rules of credential lookups: one MGET with the history marker
        (batched with theirs), then a versioned fill under the marker the read
        began under, abandoned past FILL_DEADLINE. An unknown id is not stored
        (see client_records.UnknownIds). The in-process layer is the caller's.
        """
        key = client_key(client_id)
        marker = self.history.value
        if self.health.ok and self.redis_ttl:
            raw = await self._redis_get(key)
            client = None if raw is None else decode_client(raw)
            if client is not None:
                return client
        started = time.monotonic()
        client = await load()
        if self.before_fill is not None:
            await self.before_fill(key)
        if client is not None and marker is not None and self._may_fill(started):
            self._fill_key(key, client.version, encode_client(client), self.redis_ttl, marker)
        return client

    def _may_fill(self, started: float) -> bool:
        """Whether a reader whose Postgres read began at `started` may still fill Redis."""
        return (
            self.health.ok and bool(self.redis_ttl) and time.monotonic() - started < FILL_DEADLINE
        )

    async def _redis_get(self, key: bytes) -> bytes | None:
        try:
            return await self._gets.get(key)
        except (RedisError, OSError) as exc:
            self.health.failed(exc)
            return None

    async def _mget(self, keys: list[bytes]) -> dict[bytes, bytes]:
        """The entries of `keys`, read with the history marker, from the vouched server only."""
        marker, identity = self._vouched()
        METRICS.redis_calls.inc()
        values = await self.redis.lookup([KEY_PREFIX + k for k in keys], marker, identity)
        return _by_key(keys, values)

    def _mget_now(self, keys: list[bytes], found: Callable[[Outcome[bytes, bytes]], None]) -> bool:
        """`_mget` sent at once when a connection is open, its entries handed to `found` as
        they come in (see Coalescer); False when it cannot be (then `_mget`)."""
        marker, identity = self._vouched()

        def values(read: list[bytes | None] | BaseException) -> None:
            found(read if isinstance(read, BaseException) else _by_key(keys, read))

        sent = self.redis.lookup_then([KEY_PREFIX + k for k in keys], marker, identity, values)
        if sent:
            METRICS.redis_calls.inc()
        return sent

    def _vouched(self) -> tuple[bytes, bytes]:
        """The marker and server this worker vouches for; HistoryUnknown when none."""
        history = self.history
        marker, identity = history.value, history.identity
        if marker is None or identity is None:
            raise HistoryUnknown("no vouched redis history")
        return marker, identity

    def _redis_fill(self, key: bytes, entry: Entry, marker: bytes) -> None:
        now = store.now()
        if entry[ANSWER] is None:
            ttl = REVOKED_TTL if entry[VERSION] else self.negative_ttl
        else:
            ttl = lifetime(entry, now, self.redis_ttl)
        if ttl > 0:
            self._fill_key(key, entry[VERSION], encode(entry), ttl, marker)

    def _fill_key(self, key: bytes, version: int, value: bytes, ttl: int, marker: bytes) -> None:
        """A reader's versioned fill of `key` for `ttl` seconds, batched, and not waited for.

        The reader's answer is what it read from Postgres whether or not the
        fill lands, and a fill can only ever store that read where no newer
        version is (a tombstone or a later fill wins) and under the marker the
        read began under, so nothing is gained by holding the answer for it:
        waited for, it cost a read through Postgres a Redis round trip and
        two event-loop hops (about a third of that path's latency in the mix).
        """
        filled = self._fills.get(Write(KEY_PREFIX + key, version, value, ttl * 1000, marker))
        filled.add_done_callback(self._filled)

    def _filled(self, fill: asyncio.Future[None]) -> None:
        """A fill's outcome: a Redis failure counts against its health, as a read's does."""
        if fill.cancelled():
            return
        exc = fill.exception()
        if isinstance(exc, (RedisError, OSError)):
            self.health.failed(exc)
        elif exc is not None:
            log.error("a Redis fill failed", exc_info=exc)

    async def _fill_many(self, fills: list[Write]) -> dict[Write, None]:
        """Run the fills of one loop iteration in one round trip.

        Each names the marker its lookup began under; the server must be the
        vouched one, and a fill under another marker is refused.
        """
        METRICS.redis_calls.inc()
        await self.redis.write(fills, self.history.identity)
        return {}

    # --- the cache's state, its upkeep and its write path -------------------------------------

    @property
    def redis_ok(self) -> bool:
        """Whether reads use Redis now (its history is vouched for)."""
        return self.health.ok

    async def start(self) -> None:
        """Vouch for the Redis history once (bounded), else keep trying in the background."""
        await self.health.start()

    def start_sweeper(self) -> None:
        """Watch the Redis history, replay unpublished invalidations, prune the change log."""
        self.health.start_sweeper()

    async def redis_state(self) -> str:
        """For readiness: `ok`, `replay pending` or `unreachable` (see Health.state)."""
        return await self.health.state()

    async def remember_once(self, key: bytes, until: int) -> bool:
        """Remember `key` until `until` (epoch s) in the vouched history; False if seen before.

        Raises HistoryUnknown (a Redis error) when no history is vouched for:
        what is remembered must be kept where it is checked.
        """
        marker, identity = self.history.value, self.history.identity
        if not self.health.ok or marker is None or identity is None:
            raise HistoryUnknown("no vouched redis history")
        METRICS.redis_calls.inc()
        try:
            return await self.redis.remember_once(key, until, marker, identity)
        except (RedisError, OSError) as exc:  # HistoryUnknown too: another history
            self.health.failed(exc)
            raise

    async def announce(self, invalidation: Invalidation, outbox_id: int) -> Announced:
        """After a commit: tombstone Redis, publish, wait for acks, mark the outbox row published.

        When Redis cannot be reached the outbox row stays, to be replayed, and
        the answer says the invalidation is pending.
        """
        try:
            listeners = await self.announcer.publish(invalidation)
        except (RedisError, OSError) as exc:
            self.health.failed(exc)
            return Announced(listeners=0, pending=True)
        self.announcer.mark_published(outbox_id)
        return Announced(listeners=listeners, pending=False)

    async def replay_outbox(self, older_than: int) -> int:
        """Publish the invalidations left in the outbox; return how many."""
        return await self.announcer.replay_outbox(older_than)

    async def close(self) -> None:
        """Finish the outbox marks under way and stop the background tasks."""
        await self.announcer.close()
        await self.health.close()
        if self._refreshing is not None:
            self._refreshing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refreshing
