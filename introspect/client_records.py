"""Client records, as authentication and decisions on their credentials read them.

In-process when cached, else from Redis, else from Postgres (one query per
event-loop iteration, whatever the lookups); ids that cannot be ours, or
were found unknown moments ago, cost no I/O.
"""

from __future__ import annotations

import functools
import time
from collections import OrderedDict

import asyncpg

from introspect import store
from introspect.cache import Coalescer, CredentialCache, LocalCache
from introspect.ids import has_id_shape
from introspect.metrics import METRICS
from introspect.store import Client

# Client ids found unknown, remembered per worker (see UnknownIds).
UNKNOWN_CLIENTS_SIZE = 10_000
UNKNOWN_CLIENT_TTL = 2.0


class UnknownIds:
    """Client ids recently looked up and not found: a bounded LRU, apart from known clients.

    Lookups of made-up ids fill only this, so they never push a known client's
    record, or a remembered authentication, out of the in-process cache. Like
    that cache, it is read only while the listener vouches for freshness, and
    an id is stored only if no invalidation arrived while its lookup ran (the
    epoch rule of LocalCache). An entry lives `ttl` seconds: a client created
    after its id was looked up (which takes guessing 22 random characters
    first) authenticates within that on every worker, and at once on the one
    that created it.
    """

    def __init__(self, local: LocalCache, size: int, ttl: float) -> None:
        self.local = local
        self.size = size
        self.ttl = ttl
        self._until: OrderedDict[str, float] = OrderedDict()

    def holds(self, client_id: str, mono: float) -> bool:
        """Whether `client_id` was found unknown moments ago (at `mono`, time.monotonic())."""
        local = self.local
        if not local.usable or mono > local.fresh_until:
            return False
        until = self._until.get(client_id)
        if until is None:
            return False
        if until <= mono:
            del self._until[client_id]
            return False
        self._until.move_to_end(client_id)
        return True

    def add(self, client_id: str, epoch: int) -> None:
        """Remember that `client_id` was found unknown by a lookup that started at `epoch`."""
        if not self.local.usable or epoch != self.local.epoch:
            return
        self._until[client_id] = time.monotonic() + self.ttl
        self._until.move_to_end(client_id)
        if len(self._until) > self.size:
            self._until.popitem(last=False)

    def forget(self, client_id: str) -> None:
        """`client_id` names a client now."""
        self._until.pop(client_id, None)


class ClientRecords:
    """Every read of a client record, over the three cache layers."""

    def __init__(self, pool: asyncpg.Pool, cache: CredentialCache, local: LocalCache) -> None:
        self.pool = pool
        self.cache = cache
        self.local = local
        self.unknown = UnknownIds(local, UNKNOWN_CLIENTS_SIZE, UNKNOWN_CLIENT_TTL)
        self._reads: Coalescer[str, Client] = Coalescer(self._read_many, flights=2)

    async def get(self, client_id: str) -> Client | None:
        """A client record: in-process when cached, else from Redis, else from Postgres.

        Through a Postgres outage, a record in Redis keeps authenticating its
        client, and deciding on its tokens, for the Redis cache lifetime.
        None with no I/O for an id that cannot be one of ours, or that was
        found unknown moments ago (see UnknownIds).
        """
        if not has_id_shape(client_id, "client"):
            return None
        local = self.local
        mono = time.monotonic()
        found, client = local.get_client(client_id, mono)
        if found:
            return client
        if self.unknown.holds(client_id, mono):
            return None
        epoch = local.epoch
        client = await self.cache.read_client(
            client_id, functools.partial(self._reads.get, client_id)
        )
        if client is None:
            self.unknown.add(client_id, epoch)
        else:
            local.put_client(client_id, client, epoch)
        return client

    async def _read_many(self, client_ids: list[str]) -> dict[str, Client]:
        """The client records of several lookups (of one loop iteration), in one query."""
        METRICS.pg_queries.inc()
        return {c.client_id: c for c in await store.get_clients(self.pool, client_ids)}
