"""This worker's in-process cache: the first layer, read with no await."""

from __future__ import annotations

import math
import random
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from redis.crc import REDIS_CLUSTER_HASH_SLOTS as SLOTS
from redis.crc import key_slot

from introspect.cache.entry import (
    ANSWER,
    CACHEABLE,
    CLIENT_GEN,
    CLIENT_ID,
    KEY_PREFIX,
    LOCAL_EXPIRES,
    REFRESH_AT,
    REVOKED_TTL,
    SUB,
    SUB_GEN,
    Entry,
    client_key,
    inactive,
    lifetime,
    placed,
)
from introspect.store import Client

# In-process entries come due for a refresh at a random point in this span of their life.
REFRESH_FROM = 0.5
REFRESH_TO = 0.9
# Client records and remembered client authentications kept per worker (clients are few).
CLIENT_CACHE_SIZE = 10_000
# What a key of the final memory answers (see LocalCache.put).
_FINAL = inactive()


class LocalCache:
    """This worker's in-process cache: bounded in size and age, evictable by client or subject."""

    def __init__(self, size: int, ttl: float) -> None:
        self.size = size
        self.ttl = ttl
        self.epoch = 0
        # Usable only while the listener is subscribed and Redis is healthy (promise 4),
        # to the server whose history is vouched for (promise 6), and read only until
        # `fresh_until` (time.monotonic()): see Listener.
        self.subscribed = False
        self.healthy = True
        self.source: bytes | None = None
        self.vouched: bytes | None = None
        self.usable = False
        self.fresh_until = 0.0
        # Both bounded memories evict the oldest insertion first. In an OrderedDict that is
        # one step; a dict's first key is found by skipping the slots its deletions left at
        # the front until it is next compacted, a scan as long as the cache on every insertion
        # once the working set outgrows it (about 60 us at 100,000 entries).
        self._entries: OrderedDict[bytes, Entry] = OrderedDict()
        # Keys whose answer is final: inactive, and never active again (see `put`). Kept
        # apart from the entries, with no age, in a bound of their own (`size` more keys):
        # neither evicts the other, and a flood of unknown values evicts no live entry.
        self._final: OrderedDict[bytes, None] = OrderedDict()
        # Keys hit since they came due for a refresh (see CredentialCache._refresh).
        self.due: list[bytes] = []
        self._clients: dict[str, tuple[Client | None, float]] = {}
        self._auth: dict[str, tuple[Client, float]] = {}
        self._client_gen: dict[str, int] = {}
        self._sub_gen: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes, mono: float) -> Entry | None:
        """The entry for `key` (an inactive one for a final answer), or None (missing, aged out,
        or of a bumped client/subject)."""
        if not self.usable or mono > self.fresh_until:
            return None
        entries = self._entries
        entry = entries.get(key)
        if entry is None:
            return _FINAL if key in self._final else None
        client_id, sub = entry[CLIENT_ID], entry[SUB]
        if (
            entry[LOCAL_EXPIRES] <= mono
            or (client_id is not None and self._client_gen.get(client_id, 0) != entry[CLIENT_GEN])
            or (sub is not None and self._sub_gen.get(sub, 0) != entry[SUB_GEN])
        ):
            del entries[key]
            return None
        if entry[REFRESH_AT] <= mono:
            gens = entry[CLIENT_GEN], entry[SUB_GEN]
            entries[key] = entry = placed(entry, entry[LOCAL_EXPIRES], math.inf, gens)
            self.due.append(key)
        return entry

    def put(self, key: bytes, entry: Entry, epoch: int, now: int) -> None:
        """Store `entry` unless an invalidation arrived since `epoch` was read (package doc).

        An entry that lives its full in-process life (not cut short by its
        `exp`) comes due for a refresh at a random point late in it.

        An inactive entry's answer is final, so only its key is kept, for as
        long as the cache is not cleared: an unknown value never becomes known
        (issuing draws a new value of 190 random bits, and a credential is never
        stored under a value it was not issued with), a revoked credential
        stays revoked, and an expired one stays expired (PATCH changes a live
        key's expiry only, 409 otherwise). Every change to a credential sends
        its key in an invalidation message, which drops it from here too (as
        when a PATCH read it live while this worker, its clock ahead, read it
        expired), under the epoch rule like every entry.
        """
        if not self.usable or epoch != self.epoch or not entry[CACHEABLE] or self.size <= 0:
            return
        if entry[ANSWER] is None:
            self._entries.pop(key, None)
            final = self._final
            if key not in final and len(final) >= self.size:
                final.popitem(last=False)
            final[key] = None
            return
        ttl = min(self.ttl, lifetime(entry, now, REVOKED_TTL))
        if ttl <= 0:
            return
        mono = time.monotonic()
        refresh_at = math.inf
        if ttl == self.ttl:
            refresh_at = mono + ttl * random.uniform(REFRESH_FROM, REFRESH_TO)  # noqa: S311 (jitter)
        client_id, sub = entry[CLIENT_ID], entry[SUB]
        gens = (
            self._client_gen.get(client_id, 0) if client_id else 0,
            self._sub_gen.get(sub, 0) if sub else 0,
        )
        entry = placed(entry, mono + ttl, refresh_at, gens)
        self._final.pop(key, None)  # the later read wins, as between entries
        entries = self._entries
        if key not in entries and len(entries) >= self.size:
            entries.popitem(last=False)  # the oldest insertion
        entries[key] = entry

    def get_client(self, client_id: str, mono: float) -> tuple[bool, Client | None]:
        """(found, client) for a cached client record; a cached None means unknown."""
        if not self.usable or mono > self.fresh_until:
            return False, None
        hit = self._clients.get(client_id)
        if hit is None or hit[1] <= mono:
            return False, None
        return True, hit[0]

    def put_client(self, client_id: str, client: Client | None, epoch: int) -> None:
        """Cache a client record (or its absence) read since `epoch`."""
        if not self.usable or epoch != self.epoch:
            return
        if len(self._clients) >= CLIENT_CACHE_SIZE:
            self._clients.clear()
        self._clients[client_id] = (client, time.monotonic() + self.ttl)

    def recall(self, authorization: str, mono: float) -> Client | None:
        """The client a remembered Authorization header authenticated (see rfc6749.AuthMemo).

        Valid only while the client's cached record is the very one it was
        checked against (any change to the client evicts that record), and
        never past the end of a secret's grace period.
        """
        if not self.usable or mono > self.fresh_until:
            return None
        hit = self._auth.get(authorization)
        if hit is None:
            return None
        client, until = hit
        cached = self._clients.get(client.client_id)
        if cached is None or cached[0] is not client or until <= mono:
            del self._auth[authorization]
            return None
        return client

    def remember(self, authorization: str, client: Client) -> None:
        """Remember a header that authenticated `client`, until a grace period ends at most."""
        if not self.usable:
            return
        cached = self._clients.get(client.client_id)
        if cached is None or cached[0] is not client:
            return
        until = time.monotonic() + self.ttl
        graces = [exp for _hash, exp in client.secrets if exp is not None]
        if graces:
            until = min(until, time.monotonic() + min(graces) - time.time())
        if len(self._auth) >= CLIENT_CACHE_SIZE:
            self._auth.clear()
        self._auth[authorization] = (client, until)

    def apply(self, message: dict[str, Any]) -> None:
        """Apply one invalidation message: evict keys, bump clients and subjects.

        The keys of a revocation are not only evicted: they are known to be
        inactive from now on, and are cached so.
        """
        self.epoch += 1
        if message.get("all"):
            self.clear()
            return
        revoked = message.get("x", False)
        for hex_key in message.get("k", ()):
            key = bytes.fromhex(hex_key)
            self._entries.pop(key, None)
            self._final.pop(key, None)
            if revoked:
                self.put(key, inactive(), self.epoch, 0)
        for client_id in message.get("r", ()):
            self._clients.pop(client_id, None)
        for client_id in message.get("c", ()):
            self._client_gen[client_id] = self._client_gen.get(client_id, 0) + 1
        for sub in message.get("s", ()):
            self._sub_gen[sub] = self._sub_gen.get(sub, 0) + 1

    def set_state(
        self,
        *,
        subscribed: bool | None = None,
        healthy: bool | None = None,
        source: bytes | None = None,
        vouched: bytes | None = None,
    ) -> None:
        """Record the listener's and Redis's state; entering the usable state starts empty.

        `source` is the server the subscription reaches, `vouched` the one
        whose history the read path vouches for: they must be the same.
        """
        if subscribed is not None:
            self.subscribed = subscribed
        if healthy is not None:
            self.healthy = healthy
        if source is not None:
            self.source = source
        if vouched is not None:
            self.vouched = vouched
        usable = (
            self.subscribed
            and self.healthy
            and self.source is not None
            and self.source == self.vouched
        )
        if usable and not self.usable:
            self.clear()
        self.usable = usable

    def drop_slots(self, ranges: Sequence[tuple[int, int]]) -> None:
        """Drop what lives in these Redis Cluster hash slots (a primary whose history was
        lost: introspect/cache/health.py): entries, final keys, client records."""
        owned = bytearray(SLOTS)
        for start, end in ranges:
            owned[start : end + 1] = b"\x01" * (end + 1 - start)
        self.epoch += 1
        for keys in (self._entries, self._final):
            for key in [k for k in keys if owned[key_slot(KEY_PREFIX + k)]]:
                del keys[key]
        for client_id in [c for c in self._clients if owned[key_slot(KEY_PREFIX + client_key(c))]]:
            del self._clients[client_id]
        self.due.clear()

    def clear(self) -> None:
        """Drop every entry (after a possibly missed message)."""
        self.epoch += 1
        self._entries.clear()
        self._final.clear()
        self.due.clear()
        self._clients.clear()
        self._auth.clear()
