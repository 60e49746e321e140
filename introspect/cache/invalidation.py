"""Invalidation messages: what one change tombstones in Redis and evicts in every worker."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.exceptions import ResponseError

from introspect import resp
from introspect.cache.entry import (
    INACTIVE_PAYLOAD,
    KEY_PREFIX,
    REVOKED_TTL,
    TOMBSTONE,
    TOMBSTONE_TTL,
    client_key,
)
from introspect.history import MARKER

CHANNEL = "introspect:invalidate"

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


def fill_command(
    key: bytes, version: int, value: bytes, ttl_ms: int, marker: bytes | None = None
) -> resp.Command:
    """One `_FILL` (EVAL of the text: no NOSCRIPT after a restart; the server caches it).

    A reader's fill names the history marker it read under, and is refused
    (-1) in any other; a writer's tombstone passes none.
    """
    if marker is None:
        return ("EVAL", _FILL, 1, KEY_PREFIX + key, version, value, ttl_ms)
    return ("EVAL", _FILL, 2, KEY_PREFIX + key, MARKER, version, value, ttl_ms, marker)


def checked(replies: list[Any]) -> list[Any]:
    """The replies of a batch, or the first error reply raised."""
    for reply in replies:
        if isinstance(reply, ResponseError):
            raise reply
    return replies


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
                fill_command(key, version, b"%d|%s" % (version, payload), ttl_ms)
                for key, version in self.tombstones
            ),
            *(
                fill_command(
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
