"""Vouching for a Redis history (promise 6): a lost write never brings back an old state.

Redis acknowledges a write and may still forget it: a restart from a
snapshot older than the write, a failover to a replica that had not received
it, an eviction, a `FLUSHALL`. If the forgotten write was a revocation's
inactive answer or a change's tombstone, the entry it replaced (an active
answer filled earlier) may come back, and Redis would serve the old state for
the rest of that entry's life. Postgres keeps the record of every change for
longer than any entry lives (the change log, `invalidation_outbox`), so what
Redis forgot can be written to it again; the question is only when a worker
may believe what a Redis server holds.

A history is vouched for by a marker
------------------------------------
Each worker trusts one *marker*: the value of the key `introspect:history`
(`introspect.redis.port.MARKER`), written once per history, after the replay described below. It
names the server it was written on (its `run_id` and replication id: see
`resp.Server`), when that history started, and a random nonce. A worker
reads Redis, and fills it, only while:

1. the connection it uses reaches the server named by its marker. The lean
   client asks every new connection who answers (`INFO`) before sending
   anything on it, and a batch that requires an identity is never sent on a
   connection to another one (`resp.Client.execute(..., identity=...)`).
   A restart, from any snapshot, changes the `run_id`; a promoted replica
   has another `run_id` and a new replication id; a connection never
   outlives its server process.
2. the marker is still there, unchanged. Every MGET of the read path reads
   it in the same command as the entries, and every fill by a reader checks
   it in the same script that writes: a flush or an eviction (which would
   take the marker too, or refuse to start: eviction policies are refused)
   is seen by the very command that would have used the lost state.
3. a watch, once a second, asks the server's identity again over the same
   connection (a demoted primary keeps its connections open; Sentinel kills
   them, a manual `REPLICAOF` may not) and the marker.

A reconnection alone is not a signal: a server process only loses an
acknowledged write by restarting (another `run_id`), by being replaced (a
promoted replica: another server), or by losing keys while it runs (a flush,
an eviction: the marker goes too, or the policy is refused). Overwritten
values are gone from a running server, so deleting single keys by hand
cannot resurrect anything either: an absent key is read from Postgres. Two
operator commands escape these signals and are not supported: `DEBUG RELOAD
NOSAVE` (an older snapshot loaded without a restart), and demoting a primary
to a replica behind the same address without closing its clients'
connections, which the once-a-second watch sees within a second.

On a Valkey Cluster (introspect/redis/cluster.py) each primary is such a
server, vouched for on its own (`ShardedHistory`: one `History` per primary,
by address): its marker names its own run id and replication id and lives
on it, under a hash tag it serves, and is read with its entries. A primary
that restarts, is replaced, or whose replica is promoted in its place is a
history this worker cannot vouch for: the keys of its slots (and only
those) are answered from Postgres, and the in-process entries of those
slots dropped, until the change log is written to it again; the other
primaries keep serving. A slot moved between two vouched primaries loses
nothing (MIGRATE carries each key with its value, a primary cannot give a
slot away while it holds keys of it, and a writer's tombstone follows ASK
and MOVED): no history changes, the layout is only read again.

Any other state is a history this worker cannot vouch for: it answers from
Postgres only (neither from Redis nor from its in-process cache, which is
dropped and starts empty once it is usable again) until it vouches again.

How a history becomes vouched for
---------------------------------
A worker that cannot vouch for the server it reaches (`History.vouch`):

* finds the marker written for this very server: another worker replayed
  already, and its marker is the proof (never a timer). It adopts it.
* else takes the replay lock (`SET NX` with a lifetime; one replayer per
  server across every instance), then writes again, with their versions,
  the tombstones and inactive answers of every change recorded within
  `window` seconds before it started, and finally writes the marker and
  releases the lock in one script, only if the lock is still its own.
  Other workers wait for the marker, or for the lock to lapse (a replayer
  that died) and then try themselves.

Why the replay leaves no old state behind: an entry that shows an old state
of a credential was filled before the change that superseded it, and lives
at most the Redis cache lifetime (or the negative one) after its fill, the
fill itself coming at most `FILL_DEADLINE` after its Postgres read. So
every change older than `window` (the longest of those lifetimes plus a
margin for clocks) only superseded entries that have expired by now, and
every change inside it is replayed: its version wins over any entry of an
older state (the same versioned `_FILL` rule as every write). A change
committed while the replay runs writes its own tombstones, as always:
writers' tombstones do not require a vouched history (a newer version can
never restore an old state), so none falls between the replay's read of the
log and the marker. A reader's fill that began before the loss carries the
old marker and is refused. Postgres keeps the log longer than `window`
(rows are pruned by age, published or not only once published).

The replay memory of private_key_jwt assertions (RFC 7523 `jti`) cannot be
replayed from Postgres: it is never written there. An assertion seen in a
lost history is refused in the next one because only assertions issued at
least `rfc7523.LEEWAY` after the new history's replay started are accepted
(an assertion's `iat` is at most LEEWAY ahead of the time it was seen). The
first history a deployment ever vouches for forgot nothing (no assertion
was accepted before it), so it starts at 0 (`redis_histories` in Postgres).
On a cluster the rule holds per primary: an assertion's key is checked
against the history of the primary serving it (`started_at_of`). The
primaries of a new cluster may be vouched for one after the other: only the
first starts at 0, so for LEEWAY after a deployment's very first start an
assertion whose key lives on another primary may be refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from introspect import store
from introspect.metrics import METRICS
from introspect.redis import open_redis, resp
from introspect.redis.cluster import ClusterRedis, ShardLost, compose
from introspect.redis.port import EvictingRedis, HistoryPort, HistoryUnknown

__all__ = [
    "EvictingRedis",
    "History",
    "HistoryUnknown",
    "Marker",
    "ShardedHistory",
    "refuse_eviction",
]

log = logging.getLogger(__name__)

# A replayer that died lets the others try again after this (ms); a replay takes far less.
LOCK_TTL_MS = 15_000
# How often a waiting worker looks whether the replay it waits for is done (s).
WAIT_INTERVAL = 0.05
_HEX = re.compile(rb"[0-9a-f]+")
# The only eviction policy under which Redis never drops a key by itself.
NO_EVICTION = "noeviction"


@dataclass(frozen=True, slots=True)
class Marker:
    """A vouched history: on which server (identity), since when (0: the first), and a nonce."""

    identity: bytes
    started_at: int
    nonce: str

    def encode(self) -> bytes:
        """The marker's value in Redis."""
        return b"%s|%d|%s" % (self.identity, self.started_at, self.nonce.encode())

    @classmethod
    def decode(cls, raw: bytes | None) -> Marker | None:
        """The marker read back; None when absent or not one of ours."""
        if not isinstance(raw, bytes):
            return None
        identity, sep, rest = raw.partition(b"|")
        started, sep2, nonce = rest.partition(b"|")
        if not (sep and sep2 and identity and started.isdigit() and _HEX.fullmatch(nonce)):
            return None
        return cls(identity=identity, started_at=int(started), nonce=nonce.decode())


def refuse_eviction(server: resp.Server) -> None:
    """Raise EvictingRedis unless the server keeps every key until it expires or is deleted."""
    if server.maxmemory_policy and server.maxmemory_policy != NO_EVICTION:
        raise EvictingRedis(
            f"redis maxmemory-policy is {server.maxmemory_policy}: introspect needs"
            f" '{NO_EVICTION}' (an evicted revocation could bring back an active answer);"
            f" set `maxmemory-policy {NO_EVICTION}` in the Redis configuration"
        )


async def refuse_evicting(url: str, *, cluster: bool = False) -> None:
    """At start: raise EvictingRedis if the Redis at `url` (a cluster: any of its primaries)
    may evict keys (unreachable: pass, the server then answers from Postgres until it can
    vouch for one)."""
    redis = open_redis(url, cluster=cluster)
    try:
        server = await redis.server()
    except (RedisConnectionError, OSError, TimeoutError):
        return
    finally:
        redis.close()
    refuse_eviction(server)


class History:
    """This worker's trust in the Redis it reaches: the marker it holds, and how it gets one."""

    def __init__(
        self,
        redis: HistoryPort,
        pool: asyncpg.Pool,
        replay: Callable[[int, bytes], Awaitable[int]],
        window: int,
    ) -> None:
        self.redis = redis
        self.pool = pool
        # Writes again the changes recorded since a time, on a server (identity); how many.
        self._replay = replay
        self.window = window
        self.marker: Marker | None = None
        # The marker's encoded value, compared with what Redis holds on every read.
        self.value: bytes | None = None

    @property
    def identity(self) -> bytes | None:
        """The server this worker vouches for, or None."""
        return None if self.marker is None else self.marker.identity

    @property
    def started_at(self) -> int:
        """When the vouched history started (0 for the first ever, or none vouched yet)."""
        return 0 if self.marker is None else self.marker.started_at

    def started_at_of(self, _key: bytes) -> int:
        """When the vouched history holding `key` started: `started_at`."""
        return self.started_at

    def forget(self) -> None:
        """Stop vouching (a loss was seen): nothing is read from Redis until `vouch`."""
        self.marker = None
        self.value = None

    async def check(self) -> None:
        """Raise HistoryUnknown unless the server and marker are still the vouched ones."""
        marker, value = self.marker, self.value
        if marker is None or value is None:
            raise HistoryUnknown("no vouched redis history")
        server, held = await self.redis.watch()
        refuse_eviction(server)
        if server.identity != marker.identity:
            raise HistoryUnknown("redis restarted or failed over")
        if held != value:
            raise HistoryUnknown("redis lost its history marker")

    async def vouch(self) -> None:
        """Vouch for the server reached now: adopt its marker, or replay and write one."""
        while True:
            server = await self.redis.server()
            refuse_eviction(server)
            identity = server.identity
            raw, _locked = await self.redis.history_state(identity)
            found = Marker.decode(raw)
            if found is not None and found.identity == identity:
                self._adopt(found)
                return
            owner = os.urandom(12).hex()
            if not await self.redis.lock(owner, LOCK_TTL_MS, identity):
                await self._wait(identity)
                continue
            try:
                if await self._replay_as(owner, identity):
                    return
            except BaseException:
                await self._release(owner, identity)
                raise

    async def _replay_as(self, owner: str, identity: bytes) -> bool:
        """Replay the window and seal it with a new marker; False if the lock lapsed meanwhile."""
        started = store.now()
        METRICS.history_replays.inc()
        count = await self._replay(started - self.window, identity)
        earlier = await store.start_redis_history(self.pool, started)
        marker = Marker(identity, started if earlier else 0, owner)
        if not await self.redis.seal(owner, marker.encode(), identity):
            log.warning("redis history replay took longer than its lock; starting again")
            return False
        if earlier:
            log.warning(
                "redis history vouched for again: %d change(s) of the last %d s written again",
                count,
                self.window,
            )
        else:
            log.info("vouching for the first redis history of this deployment")
        self._adopt(marker)
        return True

    async def _release(self, owner: str, identity: bytes) -> None:
        """Let another worker replay at once rather than after the lock lapses (best effort)."""
        with contextlib.suppress(RedisError, OSError):
            await self.redis.unlock(owner, identity)

    async def _wait(self, identity: bytes) -> None:
        """Wait until another worker's replay wrote its marker, or its lock lapsed."""
        while True:
            await asyncio.sleep(WAIT_INTERVAL)
            raw, locked = await self.redis.history_state(identity)
            found = Marker.decode(raw)
            if (found is not None and found.identity == identity) or not locked:
                return

    def _adopt(self, marker: Marker) -> None:
        if marker != self.marker:
            log.info("vouching for redis history %s", marker.nonce)
        self.marker = marker
        self.value = marker.encode()


class ShardedHistory:
    """A Valkey Cluster's histories: one `History` per primary, each vouched for on its own.

    What the read path names (`value`, `identity`) is every vouched primary's marker and
    identity (`cluster.compose`): a lookup reads, and a fill writes, only the keys of those
    primaries, each on that very process; the keys of any other are answered from Postgres.
    """

    def __init__(
        self,
        redis: ClusterRedis,
        pool: asyncpg.Pool,
        replay: Callable[[int, bytes], Awaitable[int]],
        window: int,
    ) -> None:
        self.redis = redis
        self.pool = pool
        self._replay = replay
        self.window = window
        # One history per primary (`host:port`), vouched for or not.
        self.units: dict[str, History] = {}
        # The vouched primaries the read path uses: a primary vouched for again is used only
        # once the outbox is replayed (a change whose tombstone it missed is written first).
        self._used: set[str] = set()
        self.value: bytes | None = None
        self.identity: bytes | None = None

    def _unit(self, address: str) -> History:
        unit = self.units.get(address)
        if unit is None:
            replay = functools.partial(self._replay_on, address)
            node = self.redis.node(address)
            unit = self.units[address] = History(node, self.pool, replay, self.window)
        return unit

    async def _replay_on(self, address: str, since: int, identity: bytes) -> int:
        """The change log written again on one primary: the rows of its slots only (the
        other primaries hold every change already, and a write never leaves its primary)."""
        return await self._replay(since, compose({address: identity}) or b"")

    def _vouched(self) -> dict[str, History]:
        return {a: u for a, u in self.units.items() if u.marker is not None}

    def _compose(self) -> None:
        vouched = {a: u for a, u in self._vouched().items() if a in self._used}
        self.value = compose({a: u.value for a, u in vouched.items() if u.value is not None})
        self.identity = compose({a: u.identity for a, u in vouched.items() if u.identity})

    @property
    def pending(self) -> bool:
        """Whether a primary serving slots now is not vouched for (or none is known yet)."""
        layout = self.redis.layout
        vouched = self._vouched()
        return layout is None or any(s.address not in vouched for s in layout.shards)

    def started_at_of(self, key: bytes) -> int:
        """When the vouched history of the primary serving `key` started (0: none)."""
        address = self.redis.address_of(key)
        unit = None if address is None else self.units.get(address)
        return 0 if unit is None else unit.started_at

    def forget(self) -> None:
        """Stop vouching for every primary."""
        for unit in self.units.values():
            unit.forget()
        self._used.clear()
        self._compose()

    @property
    def used(self) -> frozenset[str]:
        """The primaries read and filled now."""
        return frozenset(self._used)

    def ready(self) -> list[str]:
        """The primaries vouched for and not used yet (see `use`)."""
        return [a for a in self._vouched() if a not in self._used]

    def use(self, addresses: list[str]) -> None:
        """Read and fill these vouched primaries from now on."""
        self._used.update(addresses)
        self._compose()

    def forget_unit(self, address: str) -> bool:
        """Stop vouching for one primary; whether it was vouched for."""
        unit = self.units.get(address)
        if unit is None or unit.marker is None:
            return False
        unit.forget()
        self._used.discard(address)
        self._compose()
        return True

    async def check(self) -> list[ShardLost]:
        """The layout asked again, and every vouched primary checked as `History.check`
        does: the primaries found lost."""
        layout = await self.redis.refresh()
        vouched = self._vouched()

        async def one(address: str) -> None:
            try:
                await vouched[address].check()
            except (RedisError, OSError) as exc:
                raise ShardLost(address, exc) from exc

        shards = [s.address for s in layout.shards if s.address in vouched]
        found = await asyncio.gather(*map(one, shards), return_exceptions=True)
        lost = [f for f in found if isinstance(f, ShardLost)]
        for failure in found:
            if isinstance(failure, BaseException) and not isinstance(failure, ShardLost):
                raise failure
        return lost

    async def vouch(self) -> None:
        """Vouch for every primary serving slots now that is not vouched for (each as
        `History.vouch`, all at once; `use` makes them read); raise the first failure once
        the others are done."""
        layout = await self.redis.refresh()
        serving = {s.address for s in layout.shards}
        for address in [a for a in self.units if a not in serving]:
            del self.units[address]  # no longer a primary (a killed one rejoins as a replica)
            self._used.discard(address)
        self._compose()
        pending = [a for a in sorted(serving) if self._unit(a).marker is None]
        found = await asyncio.gather(
            *(self.units[a].vouch() for a in pending), return_exceptions=True
        )
        for failure in found:
            if isinstance(failure, BaseException):
                raise failure
