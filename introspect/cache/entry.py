"""Cache entries and their Redis values: the codec between answers, client records and Redis."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, fields
from typing import Any, TypeVar

import orjson

from introspect.store import Client
from introspect.store.records import Limits

log = logging.getLogger(__name__)
T = TypeVar("T")

KEY_PREFIX = b"ic:"
# A client record's key, after KEY_PREFIX: never the 32 bytes of a credential's keyed hash.
CLIENT_KEY = b"client:"
TOMBSTONE = b"T"
INACTIVE_PAYLOAD = b"0"
# An API key with limits: `L<limits JSON>\n<answer JSON>` (compact JSON holds no newline).
LIMITED = b"L"
TOMBSTONE_TTL = 600
# Revocation is final: an inactive answer for a revoked credential can be kept long.
REVOKED_TTL = 86_400


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
    # The id of an API key, whose `last_used_at` is kept (see usage.UsageLog.note_use).
    key_id: str | None = None
    # An API key's own rate limits and credits (None for most: the hot path checks only this).
    limits: Limits | None = None
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


def encode(entry: Entry) -> bytes:
    """The Redis value of an entry: `<version>|<answer JSON>` or `<version>|0`; an API key
    with limits `<version>|L<limits JSON>\n<answer JSON>`."""
    if entry.answer is not None and entry.limits is not None:
        limits = orjson.dumps(entry.limits.stored())
        return b"%d|%s%s\n%s" % (entry.version, LIMITED, limits, entry.answer)
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


def answered(
    answer: bytes, body: dict[str, Any], version: int, limits: Limits | None = None
) -> Entry:
    """The entry of an active answer: `answer`, the JSON of `body`, is served as it is.

    The one mapping from an answer to what serving it depends on, whether the
    answer was just made from Postgres (rfc7662.entry_for) or read from Redis
    (`decode`): its audiences, lifetime, owner and subject, and for an API key
    its id (`kind` `api_key`: its `last_used_at` is kept).
    """
    aud = body.get("aud")
    client_id, sub = body.get("client_id"), body.get("sub")
    return Entry(
        answer=answer,
        version=version,
        aud=shared(frozenset((aud,) if isinstance(aud, str) else (aud or ()))),
        exp=body.get("exp"),
        nbf=body.get("nbf", 0),
        client_id=None if client_id is None else shared(client_id),
        sub=None if sub is None else shared(sub),
        key_id=body.get("jti") if body.get("kind") == "api_key" else None,
        limits=limits,
    )


def decode(raw: bytes) -> Entry | None:
    """An entry from its Redis value; None for a tombstone."""
    version, _, payload = raw.partition(b"|")
    if payload == TOMBSTONE:
        return None
    if payload == INACTIVE_PAYLOAD:
        return Entry(answer=None, version=int(version))
    if payload[:1] == LIMITED:
        stored, _, payload = payload[1:].partition(b"\n")
        body = orjson.loads(payload)
        limits = Limits.from_stored(f"api_key:{body['jti']}", orjson.loads(stored))
        return answered(payload, body, int(version), limits)
    return answered(payload, orjson.loads(payload), int(version))


def client_key(client_id: str) -> bytes:
    """The Redis key of a client record (after KEY_PREFIX)."""
    return CLIENT_KEY + client_id.encode()


# The fields of a client record kept in Redis as they are; `secrets`, `version` and `limits`
# apart.
_CLIENT_FIELDS = tuple(
    f.name for f in fields(Client) if f.name not in ("secrets", "version", "limits")
)
_CLIENT_TUPLES = ("scopes", "audiences")


def encode_client(client: Client) -> bytes:
    """The Redis value of a client record: `<version>|<JSON>`, with what authenticating it
    needs (the keyed hashes of its live secrets and their grace expiries; never a secret)."""
    body = {name: getattr(client, name) for name in _CLIENT_FIELDS}
    body["secrets"] = [[h.hex(), exp] for h, exp in client.secrets]
    body["limits"] = None if client.limits is None else client.limits.stored()
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
        limits = Limits.from_stored(f"client:{body['client_id']}", body.get("limits"))
        return Client(**values, secrets=secrets, version=int(version), limits=limits)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        log.warning("ignored a malformed client record in redis")
        return None
