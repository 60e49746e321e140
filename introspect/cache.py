"""Three layers, one truth: the in-process cache, the Redis cache, and their invalidation.

An introspection answer is looked up by the keyed hash of the credential:
first in this worker's in-process cache, then in Redis, then in Postgres.
Every change commits in Postgres, then overwrites Redis, then PUBLISHes one
invalidation message that every worker of every instance applies to its
in-process cache and acknowledges; the change call returns once every
listener has acknowledged (or after a short bound, saying how many did).

Why no interleaving can leave an old state cached
-------------------------------------------------
Every change to a credential takes a fresh, larger `version` from one
Postgres sequence, in the transaction that makes the change. A Redis entry
is `<version>|<payload>`, where the payload is an answer or `T`, a
tombstone meaning "changed: read Postgres again". All Redis writes go
through one script, `_FILL`, which writes only when the key is absent, or
holds a smaller version, or holds a tombstone of the same version.

* A writer, after its commit, writes a tombstone with the new version v.
  Any entry an earlier reader filled carries a version < v, so the
  tombstone replaces it; a later reader that read Postgres after the commit
  carries v and replaces the tombstone with the new state; a reader that
  read Postgres before the commit carries a version < v and is refused.
* Two writers may reach Redis in either order; the larger version wins.
* A revocation's writer knows the final state, so instead of a tombstone
  it writes `<v>|0`, the inactive answer, under the same rule (and the
  listeners cache it in-process): no reader needs Postgres afterwards. A
  reader that read Postgres after the commit carries v too and the same
  state, and is refused as a duplicate.
* A tombstone lives `TOMBSTONE_TTL` seconds, and a reader abandons its fill
  when more than `FILL_DEADLINE` (far smaller) has passed since it started
  its Postgres read: so a stale reader cannot arrive after the tombstone
  expired. (The Redis socket timeout bounds how long a sent command can
  wait; the residual case is a command delayed in the kernel for minutes.)
* Entries never outlive the credential's `exp` (promise 3): the Redis TTL
  is capped by it, and every layer checks `exp` again on each hit.

The in-process layer is protected by an epoch. Every invalidation message
a worker applies increments its `LocalCache.epoch`; a read-through records
the epoch before it starts and stores its result in-process only if the
epoch is unchanged when it finishes. A message that arrived in between
could concern this key, so the result is used for this answer only.

Bulk changes (every credential of a client or of a subject) send one
message naming the client or subject. Each in-process entry remembers the
generation of its client and subject when it was filled; the message bumps
that generation, which makes every such entry stale in O(1), without a
scan. In Redis, the writer tombstones each affected key from the
`RETURNING` list of its own UPDATE, in one pipeline.

Client records
--------------
Authenticating the caller, and deciding on a credential (is its owner
disabled?), need client records: they are cached in the same three layers
under the same rules, so that a Postgres outage leaves every cached answer
answerable for its remaining Redis lifetime (promise 5). A client takes a
fresh `version` from the same sequence with every change to it or to its
secrets (creation, PATCH, deletion, rotation, access keys: whatever sets
its row or its secrets), in the change's transaction. Its Redis value is
`<version>|<record>` (`encode_client`: what authentication needs, with the
keyed hashes of its live secrets and their grace expiries, never a secret;
as sensitive as the credentials' keyed hashes, which are Redis keys
already) under `client_key`, filled by readers through `_FILL` under their
marker and FILL_DEADLINE, for the Redis cache lifetime. The change's writer
tombstones it with the change's version (`Invalidation.records`), so the
change log's replay writes that tombstone again: the argument above holds
word for word. A record keeps a secret still in grace when it was read;
authentication checks each secret's expiry against the clock on every use,
so a record outliving a grace period accepts nothing expired. Unknown ids
never reach Redis (service.UnknownIds keeps them per worker, briefly).
In-process, a record is stored under the epoch rule and dropped by the
change's message.

The upkeep of Redis (the outbox sweep) also reads Postgres; a failure there
is Postgres's (`PostgresFailed`), never taken for a Redis failure, which
would stop the in-process and Redis layers from answering.

Hot entries are read again before they expire: an in-process entry hit in
the last part of its life (from a random point between REFRESH_FROM and
REFRESH_TO of it, so that entries filled together do not all come due
together) is read again from Redis in the background, one MGET for all that
came due in the meantime, and stored under the same epoch rule as any
read-through. A credential in constant use therefore never waits for Redis
when its in-process life ends. This holds for JWTs too: their entries were
stored after a signature check of that very string, and no signing key is
retired while a token it signed is live (see introspect/signing.py).

A change call returns once every listener acknowledged, or after
ACK_TIMEOUT at most; a worker that did not acknowledge in time stops
reading its in-process cache before then (heartbeats: see Listener).

Missed messages (promise 4): the listener runs on a connection that never
retries silently. When it fails, the in-process cache is switched off at
once; on every (re)subscription it is cleared whole before it is used
again. While Redis is unreachable, lookups go straight to Postgres, and a
change records its invalidation in the `invalidation_outbox` table in its
own transaction; the change call answers that the invalidation is pending,
and every worker replays the outbox, before it trusts Redis again.

Lost writes (promise 6): Redis may forget what it acknowledged. Reads and
readers' fills use Redis only while this worker vouches for the history of
the server it reaches (introspect/history.py: the argument is there); the
change log (the outbox, whose rows are now kept for longer than any entry
lives) is written again to a server whose history it cannot vouch for,
before any worker reads from it. Writers' tombstones need no vouching: a
newer version never restores an old state. The in-process cache is usable
only while its subscription reaches the vouched server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Any, Generic, TypeVar

import asyncpg
import orjson
from redis.exceptions import RedisError, ResponseError

from introspect import acks, resp, store
from introspect.history import MARKER, EvictingRedis, History, HistoryUnknown
from introspect.metrics import METRICS
from introspect.store import Client

log = logging.getLogger(__name__)
K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")

CHANNEL = "introspect:invalidate"
KEY_PREFIX = b"ic:"
# A client record's key, after KEY_PREFIX: never the 32 bytes of a credential's keyed hash.
CLIENT_KEY = b"client:"
TOMBSTONE = b"T"
INACTIVE_PAYLOAD = b"0"
TOMBSTONE_TTL = 600
FILL_DEADLINE = 5.0
# Revocation is final: an inactive answer for a revoked credential can be kept long.
REVOKED_TTL = 86_400
ACK_TIMEOUT = 1.0
# How long a heartbeat vouches for the in-process cache: under ACK_TIMEOUT (see Listener).
FRESHNESS = 0.9 * ACK_TIMEOUT
HEARTBEAT_INTERVAL = 0.1
# A change whose writer could not reach Redis is replayed by a worker within about this.
OUTBOX_SWEEP_INTERVAL = 2
# In-process entries come due for a refresh at a random point in this span of their life.
REFRESH_FROM = 0.5
REFRESH_TO = 0.9
# Keys per MGET when refreshing.
REFRESH_BATCH = 500
# Client records and remembered client authentications kept per worker (clients are few).
CLIENT_CACHE_SIZE = 10_000
# Added to the longest cache lifetime for the change log's replay window: clocks, fill delays.
HISTORY_MARGIN = 60
# How often a worker checks that its Redis is the server and history it vouches for (s).
HISTORY_CHECK_INTERVAL = 1.0
# Published changes older than the replay window and this are pruned, about this often (s).
PRUNE_INTERVAL = 60
# Commands per pipeline when writing the change log again.
REPLAY_BATCH = 1000

# KEYS[1] the key, KEYS[2] (readers' fills only) the history marker; ARGV[1] version,
# ARGV[2] the value, ARGV[3] TTL in ms, ARGV[4] the marker the reader vouches for.
# -1: the marker is not that one (see introspect/history.py).
_FILL = """
if KEYS[2] and redis.call('GET', KEYS[2]) ~= ARGV[4] then return -1 end
local cur = redis.call('GET', KEYS[1])
if cur then
  local sep = string.find(cur, '|', 1, true)
  local v = tonumber(string.sub(cur, 1, sep - 1))
  local new = tonumber(ARGV[1])
  if v > new then return 0 end
  if v == new and string.sub(cur, sep + 1) ~= 'T' then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""


# KEYS[1] an assertion's key, KEYS[2] the history marker; ARGV[1] the marker vouched for,
# ARGV[2] when to forget it. 1: first use; 0: seen before; -1: another history.
_ONCE = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return -1 end
if redis.call('SET', KEYS[1], '1', 'NX', 'EXAT', ARGV[2]) then return 1 end
return 0
"""


def _fill(
    key: bytes, version: int, value: bytes, ttl_ms: int, marker: bytes | None = None
) -> resp.Command:
    """One `_FILL` (EVAL of the text: no NOSCRIPT after a restart; the server caches it).

    A reader's fill names the history marker it read under, and is refused
    (-1) in any other; a writer's tombstone passes none.
    """
    if marker is None:
        return ("EVAL", _FILL, 1, KEY_PREFIX + key, version, value, ttl_ms)
    return ("EVAL", _FILL, 2, KEY_PREFIX + key, MARKER, version, value, ttl_ms, marker)


class PostgresFailed(Exception):
    """A Postgres operation of the Redis upkeep failed: its OSError is not Redis's."""


async def _postgres(operation: Awaitable[T]) -> T:
    """`operation`'s result; any failure of it raised as PostgresFailed.

    asyncpg raises OSError (a refused connection, a deadline) like the Redis
    client does: told apart here, a Postgres outage never makes a worker stop
    trusting a Redis that answers, and cached answers keep coming (promise 5).
    """
    try:
        return await operation
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        raise PostgresFailed(type(exc).__name__) from exc


def _checked(replies: list[Any]) -> list[Any]:
    """The replies of a batch, or the first error reply raised."""
    for reply in replies:
        if isinstance(reply, ResponseError):
            raise reply
    return replies


class Coalescer(Generic[K, V]):
    """Coalesces concurrent single-key calls into batched calls, at most `flights` at a time.

    Concurrent requests each ask for one key. An ask schedules a flush for
    the end of the current event-loop iteration, unless `flights` batches
    are already out: then asks wait and go together in the next batch, as
    soon as one lands. The busier the worker, the larger the batches and the
    fewer the round trips: one MGET, one query, one COPY of new rows for
    many requests. Asks for the same key share the answer.
    """

    def __init__(
        self, fetch_many: Callable[[list[K]], Awaitable[dict[K, V]]], flights: int = 1
    ) -> None:
        self._fetch_many = fetch_many
        self._flights = flights
        self._out = 0
        self._scheduled = False
        self._pending: dict[K, list[asyncio.Future[V | None]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def get(self, key: K) -> V | None:
        """The value for `key`, or None when `fetch_many` found none."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[V | None] = loop.create_future()
        waiting = self._pending.get(key)
        if waiting is None:
            self._pending[key] = [future]
        else:
            waiting.append(future)
        if not self._scheduled and self._out < self._flights:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        if not self._pending or self._out >= self._flights:
            return
        batch, self._pending = self._pending, {}
        self._out += 1
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: dict[K, list[asyncio.Future[V | None]]]) -> None:
        try:
            found = await self._fetch_many(list(batch))
        except Exception as exc:  # every asker gets the failure, raised in its own request
            for futures in batch.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
                        future.exception()  # retrieved, so an abandoned asker stays quiet
            return
        else:
            for key, futures in batch.items():
                value = found.get(key)
                for future in futures:
                    if not future.done():
                        future.set_result(value)
        finally:
            self._out -= 1
            if self._pending and not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)


@dataclass(slots=True)
class Entry:
    """What a lookup yields: a pre-serialized active answer and what serving it depends on.

    `answer` is None for an inactive credential (unknown, revoked). `exp` is
    None for a credential that never expires.
    """

    answer: bytes | None
    version: int = 0
    aud: frozenset[str] = frozenset()
    exp: int | None = None
    nbf: int = 0
    client_id: str | None = None
    sub: str | None = None
    # The id of an API key, whose `last_used_at` is kept (see Authority.note_use).
    key_id: str | None = None
    cacheable: bool = True
    # In-process bookkeeping: set by LocalCache.put.
    local_expires: float = 0.0
    refresh_at: float = math.inf
    client_gen: int = 0
    sub_gen: int = 0

    def ttl(self, now: int, cap: int) -> int:
        """Seconds this entry may live in a cache: capped, and never past `exp`."""
        if self.exp is None:
            return cap
        return max(0, min(cap, self.exp - now))


INACTIVE = Entry(answer=None)


def encode(entry: Entry) -> bytes:
    """The Redis value of an entry: `<version>|<answer JSON>` or `<version>|0`."""
    return b"%d|%s" % (
        entry.version,
        entry.answer if entry.answer is not None else INACTIVE_PAYLOAD,
    )


# Client ids, subjects and audience sets repeat across cached entries: one object each.
_SHARED: dict[Any, Any] = {}
SHARED_MAX = 100_000


def shared(value: T) -> T:
    """The one object kept for values equal to `value` (hashable), stored if new.

    Entries of the same client otherwise each hold their own copies of its id,
    subject and audience set: about 400 bytes per cached entry.
    """
    found = _SHARED.get(value)
    if found is None:
        if len(_SHARED) >= SHARED_MAX:
            _SHARED.clear()
        _SHARED[value] = found = value
    return found


def decode(raw: bytes) -> Entry | None:
    """An entry from its Redis value; None for a tombstone."""
    version, _, payload = raw.partition(b"|")
    if payload == TOMBSTONE:
        return None
    if payload == INACTIVE_PAYLOAD:
        return Entry(answer=None, version=int(version))
    body = orjson.loads(payload)
    aud = body.get("aud")
    client_id, sub = body.get("client_id"), body.get("sub")
    return Entry(
        answer=payload,
        version=int(version),
        aud=shared(frozenset((aud,) if isinstance(aud, str) else (aud or ()))),
        exp=body.get("exp"),
        nbf=body.get("nbf", 0),
        client_id=None if client_id is None else shared(client_id),
        sub=None if sub is None else shared(sub),
        key_id=body.get("jti") if body.get("kind") == "api_key" else None,
    )


def client_key(client_id: str) -> bytes:
    """The Redis key of a client record (after KEY_PREFIX)."""
    return CLIENT_KEY + client_id.encode()


# The fields of a client record kept in Redis as they are; `secrets` and `version` apart.
_CLIENT_FIELDS = tuple(f.name for f in fields(Client) if f.name not in ("secrets", "version"))
_CLIENT_TUPLES = ("scopes", "audiences")


def encode_client(client: Client) -> bytes:
    """The Redis value of a client record: `<version>|<JSON>`, with what authenticating it
    needs (the keyed hashes of its live secrets and their grace expiries; never a secret)."""
    body = {name: getattr(client, name) for name in _CLIENT_FIELDS}
    body["secrets"] = [[h.hex(), exp] for h, exp in client.secrets]
    return b"%d|%s" % (client.version, orjson.dumps(body))


def decode_client(raw: bytes) -> Client | None:
    """A client record from its Redis value; None for a tombstone, or a value not ours (then
    Postgres is read)."""
    version, _, payload = raw.partition(b"|")
    if payload == TOMBSTONE:
        return None
    try:
        body = orjson.loads(payload)
        values = {name: body[name] for name in _CLIENT_FIELDS}
        for name in _CLIENT_TUPLES:
            values[name] = tuple(values[name])
        secrets = tuple((bytes.fromhex(h), exp) for h, exp in body["secrets"])
        return Client(**values, secrets=secrets, version=int(version))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        log.warning("ignored a malformed client record in redis")
        return None


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
        self._entries: dict[bytes, Entry] = {}
        # Keys hit since they came due for a refresh (see CredentialCache._refresh).
        self.due: list[bytes] = []
        self._clients: dict[str, tuple[Client | None, float]] = {}
        self._auth: dict[str, tuple[Client, float]] = {}
        self._client_gen: dict[str, int] = {}
        self._sub_gen: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes, mono: float) -> Entry | None:
        """The live entry for `key`, or None (missing, aged out, or of a bumped client/subject)."""
        if not self.usable or mono > self.fresh_until:
            return None
        entry = self._entries.get(key)
        if entry is None:
            return None
        if (
            entry.local_expires <= mono
            or (
                entry.client_id is not None
                and self._client_gen.get(entry.client_id, 0) != entry.client_gen
            )
            or (entry.sub is not None and self._sub_gen.get(entry.sub, 0) != entry.sub_gen)
        ):
            del self._entries[key]
            return None
        if entry.refresh_at <= mono:
            entry.refresh_at = math.inf
            self.due.append(key)
        return entry

    def put(self, key: bytes, entry: Entry, epoch: int, now: int) -> None:
        """Store `entry` unless an invalidation arrived since `epoch` was read (see module doc).

        An entry that lives its full in-process life (not cut short by its
        `exp`) comes due for a refresh at a random point late in it.
        """
        if not self.usable or epoch != self.epoch or not entry.cacheable or self.size <= 0:
            return
        ttl = min(self.ttl, entry.ttl(now, REVOKED_TTL))
        if ttl <= 0:
            return
        mono = time.monotonic()
        entry.local_expires = mono + ttl
        if ttl == self.ttl:
            entry.refresh_at = mono + ttl * random.uniform(REFRESH_FROM, REFRESH_TO)  # noqa: S311 (jitter)
        entry.client_gen = self._client_gen.get(entry.client_id, 0) if entry.client_id else 0
        entry.sub_gen = self._sub_gen.get(entry.sub, 0) if entry.sub else 0
        entries = self._entries
        if key not in entries and len(entries) >= self.size:
            # Oldest insertion first: a dict keeps insertion order.
            del entries[next(iter(entries))]
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
            if revoked:
                self.put(key, Entry(answer=None), self.epoch, 0)
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

    def clear(self) -> None:
        """Drop every entry (after a possibly missed message)."""
        self.epoch += 1
        self._entries.clear()
        self.due.clear()
        self._clients.clear()
        self._auth.clear()


@dataclass(slots=True)
class Invalidation:
    """One change's invalidation: the Redis keys to tombstone and the message to publish."""

    # Keyed hashes of credentials: never in a repr (a log line).
    tombstones: list[tuple[bytes, int]] = field(default_factory=list, repr=False)
    keys: list[bytes] = field(default_factory=list, repr=False)
    # A revocation: what is known is the final state, inactive, rather than "changed".
    revoked: bool = False
    # Client records changed, each with the version of its change: the Redis record is
    # tombstoned with it (0: none, a change logged before client records had versions), and
    # the in-process record dropped.
    records: list[tuple[str, int]] = field(default_factory=list)
    # Clients whose credentials all changed.
    clients: list[str] = field(default_factory=list)
    subs: list[str] = field(default_factory=list)
    everything: bool = False

    def writes(self) -> list[resp.Command]:
        """The versioned Redis writes of this change: tombstones, or inactive answers, and
        the tombstones of the client records it changed."""
        payload, ttl_ms = (
            (INACTIVE_PAYLOAD, REVOKED_TTL * 1000)
            if self.revoked
            else (TOMBSTONE, TOMBSTONE_TTL * 1000)
        )
        return [
            *(
                _fill(key, version, b"%d|%s" % (version, payload), ttl_ms)
                for key, version in self.tombstones
            ),
            *(
                _fill(
                    client_key(client_id),
                    version,
                    b"%d|%s" % (version, TOMBSTONE),
                    TOMBSTONE_TTL * 1000,
                )
                for client_id, version in self.records
                if version
            ),
        ]

    def message(self, nonce: str) -> dict[str, Any]:
        """The published message: the nonce to acknowledge and what to evict."""
        out: dict[str, Any] = {"n": nonce}
        if self.keys:
            out["k"] = [k.hex() for k in self.keys]
        if self.records:
            out["r"] = [client_id for client_id, _version in self.records]
        if self.clients:
            out["c"] = self.clients
        if self.subs:
            out["s"] = self.subs
        if self.everything:
            out["all"] = True
        if self.revoked:
            out["x"] = True
        return out

    def dumps(self) -> bytes:
        """The outbox form of this invalidation."""
        return orjson.dumps(
            {
                "t": [[k.hex(), v] for k, v in self.tombstones],
                "k": [k.hex() for k in self.keys],
                "r": [client_id for client_id, _version in self.records],
                "rv": [version for _client_id, version in self.records],
                "c": self.clients,
                "s": self.subs,
                "all": self.everything,
                "x": self.revoked,
            }
        )

    @classmethod
    def loads(cls, raw: bytes) -> Invalidation:
        """An invalidation read back from the outbox."""
        data = orjson.loads(raw)
        versions = data.get("rv") or [0] * len(data["r"])  # none before client versions
        return cls(
            tombstones=[(bytes.fromhex(k), v) for k, v in data["t"]],
            keys=[bytes.fromhex(k) for k in data["k"]],
            records=list(zip(data["r"], versions, strict=True)),
            clients=data["c"],
            subs=data["s"],
            everything=data["all"],
            revoked=data.get("x", False),
        )

    @classmethod
    def for_credentials(
        cls, changed: Iterable[tuple[str, bytes, int]], *, revoked: bool = False
    ) -> Invalidation:
        """Tombstone and evict each (id, hash, version) a change returned."""
        inv = cls(revoked=revoked)
        for _id, key, version in changed:
            inv.tombstones.append((key, version))
            inv.keys.append(key)
        return inv


@dataclass(frozen=True, slots=True)
class Announced:
    """What an announcement achieved: listeners that acknowledged, or pending in the outbox."""

    listeners: int
    pending: bool


class CredentialCache:
    """The read path over the three layers, and the write path that keeps them coherent."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        fast: resp.Client,
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
        # Every command goes through the lean client (see introspect/resp.py), which
        # identifies the server of each connection it opens (see introspect/history.py).
        self.fast = fast
        self.local = local
        self.redis_ttl = redis_ttl
        self.negative_ttl = negative_ttl
        # Reads use Redis only once its history is vouched for: see `start` and `_recover`.
        self.redis_ok = False
        self.history = History(
            fast,
            pool,
            self._replay_changes,
            window=max(redis_ttl, negative_ttl) + HISTORY_MARGIN,
        )
        self._gets: Coalescer[bytes, bytes] = Coalescer(self._mget)
        self._fills: Coalescer[tuple[bytes, int, bytes, int, bytes], None] = Coalescer(
            self._fill_many
        )
        self._recovering: asyncio.Task[None] | None = None
        self._refreshing: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        # Acknowledgements of this process's changes, on one connection (introspect/acks.py).
        self._collector = acks.Collector(fast.url, fast.timeout)
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
        """Read again from Redis the in-process entries that came due (see module doc).

        Any that Redis no longer holds, or that an invalidation touched
        meanwhile (the epoch), are left to expire and be read through as usual.
        """
        local = self.local
        try:
            while local.due:
                keys, local.due = local.due[:REFRESH_BATCH], local.due[REFRESH_BATCH:]
                if not (self.redis_ok and self.redis_ttl):
                    local.due.clear()  # left to expire and be read through as usual
                    break
                epoch = local.epoch
                try:
                    found = await self._mget(keys)
                except (RedisError, OSError) as exc:
                    self._redis_failed(exc)
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
            return Entry(answer=None, cacheable=False)
        if self.redis_ok and self.redis_ttl:
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
        if entry.cacheable and marker is not None and self._may_fill(started):
            await self._redis_fill(key, entry, marker)
        local.put(key, entry, epoch, store.now())
        return entry

    async def read_client(
        self, client_id: str, load: Callable[[], Awaitable[Client | None]]
    ) -> Client | None:
        """A client record from Redis, else `load()` from Postgres and filled into Redis.

        Under the rules of credential lookups: one MGET with the history marker
        (batched with theirs), then a versioned fill under the marker the read
        began under, abandoned past FILL_DEADLINE. An unknown id is not stored
        (see service.UnknownIds). The in-process layer is the caller's.
        """
        key = client_key(client_id)
        marker = self.history.value
        if self.redis_ok and self.redis_ttl:
            raw = await self._redis_get(key)
            client = None if raw is None else decode_client(raw)
            if client is not None:
                return client
        started = time.monotonic()
        client = await load()
        if self.before_fill is not None:
            await self.before_fill(key)
        if client is not None and marker is not None and self._may_fill(started):
            await self._fill_key(key, client.version, encode_client(client), self.redis_ttl, marker)
        return client

    def _may_fill(self, started: float) -> bool:
        """Whether a reader whose Postgres read began at `started` may still fill Redis."""
        return self.redis_ok and bool(self.redis_ttl) and time.monotonic() - started < FILL_DEADLINE

    async def _redis_get(self, key: bytes) -> bytes | None:
        try:
            return await self._gets.get(key)
        except (RedisError, OSError) as exc:
            self._redis_failed(exc)
            return None

    async def _mget(self, keys: list[bytes]) -> dict[bytes, bytes]:
        """The entries of `keys`, read with the history marker, from the vouched server only."""
        history = self.history
        marker, identity = history.value, history.identity
        if marker is None:
            raise HistoryUnknown("no vouched redis history")
        METRICS.redis_calls.inc()
        (values,) = _checked(
            await self.fast.execute(
                ("MGET", MARKER, *[KEY_PREFIX + k for k in keys]), identity=identity
            )
        )
        if values[0] != marker:
            raise HistoryUnknown("redis lost its history marker")
        return {k: v for k, v in zip(keys, values[1:], strict=True) if isinstance(v, bytes)}

    async def _redis_fill(self, key: bytes, entry: Entry, marker: bytes) -> None:
        now = store.now()
        if entry.answer is None:
            ttl = REVOKED_TTL if entry.version else self.negative_ttl
        else:
            ttl = entry.ttl(now, self.redis_ttl)
        if ttl > 0:
            await self._fill_key(key, entry.version, encode(entry), ttl, marker)

    async def _fill_key(
        self, key: bytes, version: int, value: bytes, ttl: int, marker: bytes
    ) -> None:
        """A reader's fill of `key` (through `_FILL`, batched), for `ttl` seconds."""
        try:
            await self._fills.get((key, version, value, ttl * 1000, marker))
        except (RedisError, OSError) as exc:
            self._redis_failed(exc)

    async def _fill_many(
        self, fills: list[tuple[bytes, int, bytes, int, bytes]]
    ) -> dict[Any, None]:
        """Run the fills of one loop iteration through `_FILL` in one pipeline.

        Each names the marker its lookup began under; the server must be the
        vouched one, and a fill under another marker is refused by the script.
        """
        METRICS.redis_calls.inc()
        results = _checked(
            await self.fast.execute(
                *(_fill(*fill) for fill in fills), identity=self.history.identity
            )
        )
        if -1 in results:
            raise HistoryUnknown("redis lost its history marker")
        return {}

    # --- Redis health ------------------------------------------------------------------------

    def _redis_failed(self, exc: BaseException) -> None:
        """Go straight to Postgres until Redis answers again, its history is vouched for
        and the outbox is replayed."""
        if isinstance(exc, resp.ServerChanged):  # another server, or history lost
            if self.redis_ok or self.history.marker is not None:
                METRICS.history_losses.inc()
                log.warning("%s: answering from postgres until it is vouched for again", exc)
            self.history.forget()
        elif self.redis_ok:
            log.warning("redis unreachable, answering from postgres: %s", type(exc).__name__)
        self.redis_ok = False
        self.local.set_state(healthy=False)
        if self._recovering is None or self._recovering.done():
            self._recovering = asyncio.get_running_loop().create_task(self._recover())

    async def start(self) -> None:
        """Vouch for the Redis history once (bounded), else keep trying in the background."""
        try:
            async with asyncio.timeout(self.fast.timeout):
                await self._vouch()
        except (
            RedisError,
            OSError,
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            PostgresFailed,
        ):
            self._redis_failed(HistoryUnknown("redis history not vouched for yet"))

    async def _vouch(self) -> None:
        await self.history.vouch()
        await self.replay_outbox(older_than=store.now() + 1)
        self.redis_ok = True
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
            except (
                RedisError,
                OSError,
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                PostgresFailed,
            ) as exc:
                if not failing:  # once per streak
                    log.warning("redis not usable yet: %s", type(exc).__name__)
                failing = True
                continue
            log.info("redis usable again")
            return

    async def _replay_changes(self, since: int, identity: bytes) -> int:
        """Write again, on the server `identity`, every change recorded since `since`."""
        changes = await store.changes_since(self.pool, since)
        writes = [w for raw in changes for w in Invalidation.loads(raw).writes()]
        for start in range(0, len(writes), REPLAY_BATCH):
            METRICS.redis_calls.inc()
            _checked(
                await self.fast.execute(*writes[start : start + REPLAY_BATCH], identity=identity)
            )
        return len(changes)

    def start_sweeper(self) -> None:
        """Watch the Redis history, replay unpublished invalidations, prune the change log."""
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(HISTORY_CHECK_INTERVAL)
            ticks += 1
            if not self.redis_ok:
                continue  # recovery vouches and replays the outbox before Redis is trusted
            try:
                await self.history.check()
                if ticks % OUTBOX_SWEEP_INTERVAL == 0:
                    await self.replay_outbox(older_than=store.now() - OUTBOX_SWEEP_INTERVAL)
                if ticks % PRUNE_INTERVAL == 0:
                    await _postgres(
                        store.prune_changes(
                            self.lazy_pool, store.now() - self.history.window - HISTORY_MARGIN
                        )
                    )
            except PostgresFailed as exc:
                log.warning("outbox sweep failed: %s", exc)
            except (RedisError, OSError) as exc:
                self._redis_failed(exc)
            except Exception:  # the watch must outlive any surprise: log it, go on
                log.exception("redis history watch failed")

    async def redis_state(self) -> str:
        """For readiness: `ok`, `replay pending` (reachable, history not vouched for yet) or
        `unreachable`. A history found lost here is handled as on any read."""
        try:
            if self.redis_ok:
                await self.history.check()
                return "ok"
            await self.fast.call("PING")
        except HistoryUnknown as exc:
            self._redis_failed(exc)
        except (RedisError, OSError) as exc:
            self._redis_failed(exc)
            return "unreachable"
        return "replay pending"

    async def remember_once(self, key: bytes, until: int) -> bool:
        """Remember `key` until `until` (epoch s) in the vouched history; False if seen before.

        Raises HistoryUnknown (a Redis error) when no history is vouched for:
        what is remembered must be kept where it is checked.
        """
        marker = self.history.value
        if not self.redis_ok or marker is None:
            raise HistoryUnknown("no vouched redis history")
        METRICS.redis_calls.inc()
        try:
            (first,) = _checked(
                await self.fast.execute(
                    ("EVAL", _ONCE, 2, key, MARKER, marker, until),
                    identity=self.history.identity,
                )
            )
        except (RedisError, OSError) as exc:
            self._redis_failed(exc)
            raise
        if first == -1:
            lost = HistoryUnknown("redis lost its history marker")
            self._redis_failed(lost)
            raise lost
        return bool(first == 1)

    async def close(self) -> None:
        """Finish the outbox marks under way and stop the background tasks."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self._collector.close()
        for task in (self._recovering, self._sweeper, self._refreshing):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    # --- write path ----------------------------------------------------------------------

    async def announce(self, invalidation: Invalidation, outbox_id: int) -> Announced:
        """After a commit: tombstone Redis, publish, wait for acks, mark the outbox row published.

        When Redis cannot be reached the outbox row stays, to be replayed, and
        the answer says the invalidation is pending.
        """
        try:
            listeners = await self._publish(invalidation)
        except (RedisError, OSError) as exc:
            self._redis_failed(exc)
            return Announced(listeners=0, pending=True)
        # Off the caller's path: a mark that fails or is lost only republishes.
        task = asyncio.get_running_loop().create_task(self._mark_published(outbox_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return Announced(listeners=listeners, pending=False)

    async def _mark_published(self, outbox_id: int) -> None:
        try:
            await store.mark_published(self.lazy_pool, [outbox_id])
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            log.warning("published invalidation left pending: %s", type(exc).__name__)

    async def _publish(self, invalidation: Invalidation) -> int:
        nonce = self._collector.nonce()
        try:
            # Whatever the history: a newer version never brings back an old state.
            results = _checked(
                await self.fast.execute(
                    *invalidation.writes(),
                    ("PUBLISH", CHANNEL, orjson.dumps(invalidation.message(nonce))),
                )
            )
        except BaseException:
            self._collector.forget(nonce)
            raise
        METRICS.invalidations_sent.inc()
        deadline = time.monotonic() + ACK_TIMEOUT
        return await self._collector.wait(nonce, int(results[-1]), deadline)

    async def replay_outbox(self, older_than: int) -> int:
        """Publish the invalidations left in the outbox; return how many."""
        rows = await _postgres(store.pending_outbox(self.pool, older_than))
        for _id, raw in rows:
            await self._publish(Invalidation.loads(raw))
        if rows:
            await _postgres(store.mark_published(self.pool, [i for i, _ in rows]))
            log.info("replayed %d pending invalidation(s)", len(rows))
        return len(rows)


class Listener:
    """Subscribes to invalidations, applies them to the in-process cache, acknowledges them.

    It also vouches for the cache's freshness with heartbeats: every
    HEARTBEAT_INTERVAL it publishes its monotonic time on a channel only it
    subscribes to, on the connection that carries the invalidations. Redis
    delivers a connection's messages in the order it received them, so a
    heartbeat sent at t and read back proves every invalidation that reached
    Redis before t has been applied; the cache is then read until t +
    FRESHNESS. A change call returns at the latest ACK_TIMEOUT after its
    message reached Redis, and FRESHNESS < ACK_TIMEOUT: so a worker that
    neither applied nor acknowledged it (its loop stalled, its connection
    silently dead) has no heartbeat recent enough, and answers from Redis
    and Postgres, which the writer updated before publishing.
    """

    def __init__(self, redis_url: str, local: LocalCache, ack: resp.Client) -> None:
        # Its own connection, which never reconnects silently: a drop must be seen (promise 4).
        self._url = redis_url
        self._ack = ack
        self.local = local
        # Only this listener subscribes to it: its heartbeats come back on its connection.
        self.heartbeat_channel = f"introspect:heartbeat:{os.urandom(8).hex()}".encode()
        # Set once subscribed and a first heartbeat came back: the cache is usable.
        self.subscribed = asyncio.Event()
        # How many times the subscription was (re)established, and the current one.
        self.subscriptions = 0
        self.subscription: resp.Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._acks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Run the subscription loop in the background."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop listening and close the connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._acks:
            await asyncio.gather(*self._acks, return_exceptions=True)

    async def _run(self) -> None:
        delay = 0.05
        while True:
            subscription = self.subscription = resp.Subscription(
                self._url, self._ack.timeout, identify=True
            )
            beating: asyncio.Task[None] | None = None
            try:
                lost = await subscription.open(
                    [CHANNEL, self.heartbeat_channel.decode()], self._on_message
                )
                # Messages may have been missed before this (re)subscription: start empty.
                # The cache is usable only if this is the server whose history is vouched for.
                self.local.set_state(subscribed=False)
                server = subscription.server
                self.local.set_state(
                    subscribed=True, source=None if server is None else server.identity
                )
                self.subscriptions += 1
                beating = asyncio.get_running_loop().create_task(self._beat())
                delay = 0.05
                await lost
                log.warning("invalidation subscription lost")
            except (RedisError, OSError) as exc:
                log.warning("invalidation subscription failed: %s", type(exc).__name__)
            finally:
                if beating is not None:
                    beating.cancel()
                self._lost()
                subscription.close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _lost(self) -> None:
        self.local.set_state(subscribed=False)
        self.local.fresh_until = 0.0
        self.subscribed.clear()

    async def _beat(self) -> None:
        """Publish this process's monotonic time to the heartbeat channel, every interval."""
        failing = False
        while True:
            try:
                await self._ack.call("PUBLISH", self.heartbeat_channel, repr(time.monotonic()))
            except (RedisError, OSError) as exc:
                if not failing:  # once per streak, not ten times a second
                    log.warning("heartbeats not sent: %s", type(exc).__name__)
                failing = True
            else:
                failing = False
            await asyncio.sleep(HEARTBEAT_INTERVAL)

    def _on_message(self, channel: bytes, data: bytes) -> None:
        if channel == self.heartbeat_channel:
            # Every invalidation published before this heartbeat reached Redis came
            # before it on this connection, and is applied: fresh for FRESHNESS more.
            with contextlib.suppress(ValueError):
                self.local.fresh_until = float(data) + FRESHNESS
                self.subscribed.set()
            return
        try:
            body = orjson.loads(data)
            nonce = str(body["n"])
            self.local.apply(body)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            # Not ours: whoever can publish on the channel could evict anything anyway.
            log.warning("ignored a malformed invalidation message")
            return
        METRICS.invalidations_received.inc()
        task = asyncio.get_running_loop().create_task(self._acknowledge(nonce))
        self._acks.add(task)
        task.add_done_callback(self._acks.discard)

    async def _acknowledge(self, nonce: str) -> None:
        key = acks.list_key(nonce)
        if key is None:  # not made by a Collector: pushed nowhere
            log.warning("ignored an invalidation with a malformed nonce")
            return
        try:
            _checked(await self._ack.execute(("RPUSH", key, nonce), ("EXPIRE", key, acks.LIST_TTL)))
        except (RedisError, OSError) as exc:
            log.warning("could not acknowledge an invalidation: %s", type(exc).__name__)
