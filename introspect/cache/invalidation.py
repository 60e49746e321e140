"""Invalidation messages: what one change tombstones in Redis and evicts in every worker."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from introspect.cache.entry import (
    INACTIVE_PAYLOAD,
    KEY_PREFIX,
    REVOKED_TTL,
    TOMBSTONE,
    TOMBSTONE_TTL,
    client_key,
)
from introspect.redis.port import Write

CHANNEL = "introspect:invalidate"


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

    def writes(self) -> list[Write]:
        """The versioned Redis writes of this change: tombstones, or inactive answers, and
        the tombstones of the client records it changed."""
        payload, ttl_ms = (
            (INACTIVE_PAYLOAD, REVOKED_TTL * 1000)
            if self.revoked
            else (TOMBSTONE, TOMBSTONE_TTL * 1000)
        )
        return [
            *(
                Write(KEY_PREFIX + key, version, b"%d|%s" % (version, payload), ttl_ms)
                for key, version in self.tombstones
            ),
            *(
                Write(
                    KEY_PREFIX + client_key(client_id),
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
