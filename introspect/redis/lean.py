"""The Redis port on one Redis (or Valkey) server, over the lean RESP client (resp.py).

Every command the product sends is here: the versioned fill script, the
MGET that reads the history marker with the entries, the replay lock and
the script that seals a replay with its marker, the replay memory of
assertions, the rate-limit window counters, PUBLISH, the acknowledgement lists and the subscription.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.exceptions import ResponseError

from introspect.redis import resp
from introspect.redis.port import LOCK, MARKER, HistoryUnknown, Looked, Write

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


# KEYS[1] the lock, KEYS[2] the marker; ARGV[1] the lock's owner, ARGV[2] the marker.
_SEAL = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[1])
return 1
"""


# KEYS[1] the lock; ARGV[1] its owner.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""

# KEYS[1] a window's counter; ARGV[1] the limit, ARGV[2] the uses wanted, ARGV[3] the divisor
# of what is free that makes a block, ARGV[4] the counter's TTL in ms. {granted, free after}.
_TAKE_WINDOW = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local free = tonumber(ARGV[1]) - used
local want = tonumber(ARGV[2])
if free < want or free <= 0 then return {0, math.max(free, 0)} end
local block = math.max(want, math.floor(free / tonumber(ARGV[3])))
if block > free then block = free end
redis.call('SET', KEYS[1], used + block, 'PX', ARGV[4])
return {block, free - block}
"""

_IDENTIFY: list[resp.Command] = [("INFO", "server"), ("INFO", "replication"), ("INFO", "memory")]


def fill_command(write: Write) -> resp.Command:
    """One `_FILL` (EVAL of the text: no NOSCRIPT after a restart; the server caches it)."""
    key, version, value, ttl_ms, marker = write
    if marker is None:
        return ("EVAL", _FILL, 1, key, version, value, ttl_ms)
    return ("EVAL", _FILL, 2, key, MARKER, version, value, ttl_ms, marker)


def checked(replies: list[Any]) -> list[Any]:
    """The replies of a batch, or the first error reply raised."""
    for reply in replies:
        if isinstance(reply, ResponseError):
            raise reply
    return replies


def _values(replies: list[Any], marker: bytes) -> list[bytes | None]:
    """The values of a lookup's `MGET <marker key> <keys>`, if the marker is `marker`."""
    (values,) = checked(replies)
    if values[0] != marker:
        raise HistoryUnknown("redis lost its history marker")
    found: list[bytes | None] = values[1:]  # MGET: a value or nil for each key
    return found


class HistoryOps:
    """The history operations (`port.HistoryPort`) on one server, over `self.client`, with
    the marker and the replay lock under `keys()`."""

    client: resp.Client

    def keys(self) -> tuple[bytes, bytes]:
        """The marker's key and the replay lock's."""
        return MARKER, LOCK

    async def server(self) -> resp.Server:
        return await self.client.server()

    async def watch(self) -> tuple[resp.Server, bytes | None]:
        marker, _lock = self.keys()
        replies = checked(await self.client.execute(*_IDENTIFY, ("GET", marker)))
        return resp.Server.from_info(*replies[:3]), replies[3]

    async def history_state(self, identity: bytes) -> tuple[bytes | None, bool]:
        marker, lock = checked(
            await self.client.execute(*(("GET", key) for key in self.keys()), identity=identity)
        )
        return marker, lock is not None

    async def lock(self, owner: str, ttl_ms: int, identity: bytes) -> bool:
        _marker, lock = self.keys()
        (locked,) = checked(
            await self.client.execute(("SET", lock, owner, "NX", "PX", ttl_ms), identity=identity)
        )
        return locked is not None

    async def seal(self, owner: str, marker: bytes, identity: bytes) -> bool:
        key, lock = self.keys()
        seal: resp.Command = ("EVAL", _SEAL, 2, lock, key, owner, marker)
        (sealed,) = checked(await self.client.execute(seal, identity=identity))
        return bool(sealed == 1)

    async def unlock(self, owner: str, identity: bytes) -> None:
        _marker, lock = self.keys()
        checked(await self.client.execute(("EVAL", _RELEASE, 1, lock, owner), identity=identity))


class LeanRedis(HistoryOps):
    """`introspect.redis.port.Redis` on one server: one pipelined connection per worker,
    which identifies the server of every connection it opens."""

    def __init__(self, url: str, timeout: float = 2.0) -> None:
        self.url = url
        self.timeout = timeout
        self.client = resp.Client(url, timeout, identify=True)
        # Blocking pops of acknowledgements, on a connection of their own (opened when used).
        self._blocking: resp.Client | None = None

    async def ping(self) -> None:
        await self.client.call("PING")

    async def lookup(
        self, keys: Sequence[bytes], marker: bytes, identity: bytes
    ) -> list[bytes | None]:
        return _values(
            await self.client.execute(("MGET", MARKER, *keys), identity=identity), marker
        )

    def lookup_then(
        self, keys: Sequence[bytes], marker: bytes, identity: bytes, found: Looked
    ) -> bool:
        def replied(replies: list[Any] | BaseException) -> None:
            if isinstance(replies, BaseException):
                found(replies)
                return
            try:
                values = _values(replies, marker)
            except Exception as exc:  # to the askers, never into the connection's reading
                found(exc)
            else:
                found(values)

        return self.client.send_then([("MGET", MARKER, *keys)], replied, identity)

    async def write(self, writes: Sequence[Write], identity: bytes | None = None) -> None:
        results = checked(await self.client.execute(*map(fill_command, writes), identity=identity))
        if -1 in results:
            raise HistoryUnknown("redis lost its history marker")

    async def publish(
        self, channel: str | bytes, message: bytes, writes: Sequence[Write] = ()
    ) -> int:
        results = checked(
            await self.client.execute(*map(fill_command, writes), ("PUBLISH", channel, message))
        )
        return int(results[-1])

    def subscription(self) -> resp.Subscription:
        return resp.Subscription(self.url, self.timeout, identify=True)

    async def acknowledge(self, inbox: str, nonce: str, ttl: int) -> None:
        checked(await self.client.execute(("RPUSH", inbox, nonce), ("EXPIRE", inbox, ttl)))

    async def acknowledgements(self, inbox: str, wait: float, count: int) -> list[bytes]:
        if self._blocking is None:
            self._blocking = resp.Client(self.url, timeout=wait + self.timeout)
        got = await self._blocking.call("BLMPOP", f"{wait:.3f}", 1, inbox, "LEFT", "COUNT", count)
        return [] if got is None else list(got[1])

    async def remember_once(self, key: bytes, until: int, marker: bytes, identity: bytes) -> bool:
        (first,) = checked(
            await self.client.execute(
                ("EVAL", _ONCE, 2, key, MARKER, marker, until), identity=identity
            )
        )
        if first == -1:
            raise HistoryUnknown("redis lost its history marker")
        return bool(first == 1)

    async def take_window(
        self, key: bytes, limit: int, want: int, divisor: int, ttl_ms: int
    ) -> tuple[int, int]:
        (reply,) = checked(
            await self.client.execute(("EVAL", _TAKE_WINDOW, 1, key, limit, want, divisor, ttl_ms))
        )
        return int(reply[0]), int(reply[1])

    async def window_use(self, keys: Sequence[bytes]) -> list[int]:
        if not keys:
            return []
        (values,) = checked(await self.client.execute(("MGET", *keys)))
        return [0 if v is None else int(v) for v in values]

    def close(self) -> None:
        self.client.close()
        if self._blocking is not None:
            self._blocking.close()
