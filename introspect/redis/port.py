"""The Redis port: every operation the product needs from Redis, named once.

The cache, its history (introspect/history.py), the acknowledgements of
invalidations (introspect/acks.py) and the readiness probe ask Redis for
nothing else: a new way to reach Redis is a new implementation of `Redis`
(introspect/redis/lean.py: one server; introspect/redis/cluster.py: a Valkey
Cluster), and no caller changes. What every implementation keeps:

* Identity. An operation that names an `identity` (`resp.Server.identity`:
  a server process and its replication history) runs only on a connection
  to that very server, else raises `ServerChanged` and sends nothing. On a
  cluster, the identity and the marker name each vouched primary
  (`cluster.compose`), and an operation on a primary they do not name is
  not sent (a lookup answers its keys absent).
* The history marker. A lookup and a reader's fill check the marker (the
  value under `MARKER`) in the same command that reads or writes the
  entries, and raise `HistoryUnknown` when it is not the one named: a lost
  history is seen by the very command that would have used it.
* Versioned writes. Every `Write` goes through the rule of the cache's
  package doc: written only over an absent key, a smaller version, or a
  tombstone of the same version.
* One hash slot per script. A window counter's key carries the hash tag of
  the credential or client it counts (`{api_key:<id>}`), and every script
  touches one key, so a cluster implementation routes it by that key alone.
* Errors are redis-py's classes (`RedisError` and its `ConnectionError`,
  `TimeoutError`, `ResponseError`) or `OSError`: callers catch those two.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

from redis.exceptions import ConnectionError

from introspect.redis.resp import Server, ServerChanged

__all__ = [
    "LOCK",
    "MARKER",
    "EvictingRedis",
    "HistoryPort",
    "HistoryUnknown",
    "Redis",
    "Server",
    "ServerChanged",
    "Subscription",
    "Unwritten",
    "Write",
]

# The history marker (introspect/history.py) and the lock of the replay that writes it.
MARKER = b"introspect:history"
LOCK = b"introspect:replaying"
# Called with a lookup's values in order (None: absent), or the error that failed it.
Looked = Callable[[list[bytes | None] | BaseException], None]


class HistoryUnknown(ServerChanged):
    """The Redis server reached holds a history this worker cannot vouch for."""


class EvictingRedis(HistoryUnknown):
    """Redis may drop keys by itself under memory pressure: it can never be vouched for."""


class Unwritten(ConnectionError):
    """`publish` sent its message to `receivers` listeners, but some of its writes failed
    (a cluster node down): the caller waits for those listeners, then keeps the change
    pending (its outbox row is replayed)."""

    def __init__(self, cause: BaseException, receivers: int) -> None:
        super().__init__(f"invalidation published, writes failed: {type(cause).__name__}")
        self.receivers = receivers


class Write(NamedTuple):
    """A versioned write of a cache entry (see the cache's package doc)."""

    key: bytes
    version: int
    # `<version>|<payload>`: the entry's Redis value.
    value: bytes
    ttl_ms: int
    # A reader's fill names the history marker it read under, and is refused under any
    # other (HistoryUnknown); a writer's tombstone names none.
    marker: bytes | None = None


class Subscription(Protocol):
    """A connection that receives the messages of some channels, until it drops."""

    @property
    def server(self) -> Server | None:
        """Who answers on the subscribed connection."""

    async def open(
        self, channels: Sequence[str], on_message: Callable[[bytes, bytes], None]
    ) -> asyncio.Future[None]:
        """Subscribe; returns once every channel is confirmed, with a future set when it drops."""

    def close(self) -> None:
        """Drop the subscription."""


class HistoryPort(Protocol):
    """What vouching for one server's history needs (introspect/history.py): on one server,
    the `LeanRedis` itself; on a cluster, each primary (`ClusterRedis.node`)."""

    async def server(self) -> Server:
        """Who answers now (connecting if needed)."""

    async def watch(self) -> tuple[Server, bytes | None]:
        """Who answers on the connection in use, and the marker it holds, in one round trip."""

    async def history_state(self, identity: bytes) -> tuple[bytes | None, bool]:
        """The marker `identity` holds, and whether a replay holds the lock."""

    async def lock(self, owner: str, ttl_ms: int, identity: bytes) -> bool:
        """Take the replay lock for `owner`, for `ttl_ms`, unless another holds it."""

    async def seal(self, owner: str, marker: bytes, identity: bytes) -> bool:
        """Write the marker and release the lock, only if `owner` still holds it."""

    async def unlock(self, owner: str, identity: bytes) -> None:
        """Release the lock if `owner` holds it."""


class Redis(Protocol):
    """The operations the product needs from Redis."""

    # The deadline of every operation (s): past it, Redis is treated as down.
    timeout: float

    # --- identity and ping -----------------------------------------------------------------

    async def server(self) -> Server:
        """Who answers now (connecting if needed); on a cluster, the cluster as one."""

    async def ping(self) -> None:
        """Raise unless Redis answers."""

    # --- the cache --------------------------------------------------------------------------

    async def lookup(
        self, keys: Sequence[bytes], marker: bytes, identity: bytes
    ) -> list[bytes | None]:
        """The values of `keys` in order (None: absent), under `marker` (else HistoryUnknown;
        on a cluster, per primary: see ClusterRedis.lookup)."""

    def lookup_then(
        self, keys: Sequence[bytes], marker: bytes, identity: bytes, found: Looked
    ) -> bool:
        """`lookup`, sent at once when it can be without waiting (a connection to `identity`
        open): its values, or its error, go to `found` when they come in. False, with nothing
        sent and `found` never called, when it cannot (then `lookup`); raises as `lookup`
        would before sending (ServerChanged)."""

    async def write(self, writes: Sequence[Write], identity: bytes | None = None) -> None:
        """Run versioned writes; HistoryUnknown if one was refused for its marker."""

    # --- invalidations and their acknowledgements (introspect/acks.py) --------------------

    async def publish(
        self, channel: str | bytes, message: bytes, writes: Sequence[Write] = ()
    ) -> int:
        """Run `writes`, then publish `message`; how many received it. Where the writes go
        to several servers, a failed write does not stop the message: `Unwritten`."""

    def subscription(self) -> Subscription:
        """A new subscription, on a connection of its own that never reconnects silently."""

    async def acknowledge(self, inbox: str, nonce: str, ttl: int) -> None:
        """Push `nonce` onto the list `inbox`, which expires `ttl` s after the last push."""

    async def acknowledgements(self, inbox: str, wait: float, count: int) -> list[bytes]:
        """Up to `count` nonces popped from `inbox`, waiting up to `wait` s for the first,
        on a connection of their own (a process holds one however many changes wait)."""

    # --- rate-limit windows (introspect/limits/) ---------------------------------------------

    async def take_window(
        self, key: bytes, limit: int, want: int, divisor: int, ttl_ms: int
    ) -> tuple[int, int]:
        """Take uses from a window's counter `key` (expiring after `ttl_ms`) that allows
        `limit`: a block of at least `want` and about 1/`divisor` of what is free, none when
        fewer than `want` are free. Returns (uses granted, uses still free after)."""

    async def window_use(self, keys: Sequence[bytes]) -> list[int]:
        """The uses counted so far by each window counter of `keys` (all of one hash slot)."""

    # --- replay memory (RFC 7523 jti) -------------------------------------------------------

    async def remember_once(self, key: bytes, until: int, marker: bytes, identity: bytes) -> bool:
        """Remember `key` until `until` (epoch s) under `marker`; False if it was already."""

    def close(self) -> None:
        """Close every connection for good."""
