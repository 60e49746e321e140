"""Cache entries and their Redis values: the codec between answers, client records and Redis."""

from __future__ import annotations

import logging
import math
from dataclasses import fields
from typing import Any, Final, TypeVar

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


# An entry is what a lookup yields: a pre-serialized active answer and what serving it depends
# on, with the in-process cache's bookkeeping. It is a tuple of atomic values only (bytes, int,
# float, str, None, and a tuple of str): CPython's cyclic GC stops tracking such a tuple at the
# first collection it survives, so a full in-process cache adds nothing to the collector's
# work, where instances of a class (slotted or not) would each be walked by every full
# collection: 55 ms per 100,000 entries here, a pause of every request (`python -m
# bench.gc_pause`). (Freezing them, gc.freeze(), would not do: entries come and go as long as
# the worker runs.) Its fields, by index; a field added to what serving depends on goes before
# CACHEABLE, shifting the indices after it, and `answered` and `inactive` fill it:
ANSWER: Final = 0  # the answer's own part (see `answered`); None for an inactive credential
HEAD: Final = 1  # the rest of the answer, before ANSWER: one object for many entries
VERSION: Final = 2  # the credential's change version (0: unknown)
AUD: Final = 3  # its audiences
EXP: Final = 4  # its `exp`; None for a credential that never expires
NBF: Final = 5
CLIENT_ID: Final = 6
SUB: Final = 7
KEY_ID: Final = 8  # an API key's id, whose `last_used_at` is kept (see usage.UsageLog.note_use)
# An API key's own rate limits and credits: None for most, which the hot path checks alone (a
# limited key's entry stays tracked by the GC: they are few).
LIMITS: Final = 9
CACHEABLE: Final = 10  # False: serve it for this request only
# In-process bookkeeping, set by LocalCache.put: when the entry ages out and comes due for a
# refresh (time.monotonic()), and the generations of its client and subject it was filled at.
LOCAL_EXPIRES: Final = 11
REFRESH_AT: Final = 12
CLIENT_GEN: Final = 13
SUB_GEN: Final = 14
Entry = tuple[
    bytes | None, bytes, int, tuple[str, ...], int | None, int, str | None, str | None, str | None,
    Limits | None, bool, float, float, int, int,
]  # fmt: skip


def inactive(version: int = 0, *, cacheable: bool = True) -> Entry:
    """The entry of an inactive credential: unknown (`version` 0), revoked or expired."""
    return (None, b"", version, (), None, 0, None, None, None, None, cacheable, 0.0, math.inf, 0, 0)


def lifetime(entry: Entry, now: int, cap: int) -> int:
    """Seconds `entry` may live in a cache: capped, and never past its `exp`."""
    exp = entry[EXP]
    if exp is None:
        return cap
    return max(0, min(cap, exp - now))


def placed(entry: Entry, local_expires: float, refresh_at: float, gens: tuple[int, int]) -> Entry:
    """`entry` with its in-process bookkeeping (`gens`: its client's and subject's)."""
    return (*entry[:LOCAL_EXPIRES], local_expires, refresh_at, *gens)


def uncacheable(entry: Entry) -> Entry:
    """`entry`, to be served for this request only."""
    return (*entry[:CACHEABLE], False, *entry[LOCAL_EXPIRES:])


def answer_of(entry: Entry) -> bytes:
    """The answer's JSON of an active entry."""
    return entry[HEAD] + entry[ANSWER]  # type: ignore[operator]


def encode(entry: Entry) -> bytes:
    """The Redis value of an entry: `<version>|<answer JSON>` or `<version>|0`; an API key
    with limits `<version>|L<limits JSON>\n<answer JSON>`."""
    if entry[ANSWER] is None:
        return b"%d|%s" % (entry[VERSION], INACTIVE_PAYLOAD)
    answer, limits = answer_of(entry), entry[LIMITS]
    if limits is not None:
        return b"%d|%s%s\n%s" % (entry[VERSION], LIMITED, orjson.dumps(limits.stored()), answer)
    return b"%d|%s" % (entry[VERSION], answer)


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


# Where an answer's own part starts: the `sub` member, which every active answer has and
# `rfc7662.active_answer` places after the members that entries share (see `answered`).
OWN_PART = b',"sub":'


def answered(
    answer: bytes, body: dict[str, Any], version: int, limits: Limits | None = None
) -> Entry:
    """The entry of an active answer: `answer`, the JSON of `body`, is served as it is.

    The one mapping from an answer to what serving it depends on, whether the
    answer was just made from Postgres (rfc7662.entry_for) or read from Redis
    (`decode`): its audiences, lifetime, owner and subject, and for an API key
    its id (`kind` `api_key`: its `last_used_at` is kept).

    The answer is kept in two parts, which `answer_of` joins: what precedes
    its first `,"sub":` (its scope, issuer, kind, client and audiences, the
    same for many credentials), held once for all the entries that share it,
    and the rest, the credential's own. Only string members precede `sub` in
    the answers we make, so that sequence is the top-level member: a JSON
    string holds no unescaped quote. An answer of another order (a Redis value
    of an earlier version) is split elsewhere, or not, and served the same.
    Sharing the first part saves about half of each in-process entry's answer.
    """
    cut = max(answer.find(OWN_PART), 0)
    aud = body.get("aud")
    client_id, sub = body.get("client_id"), body.get("sub")
    return (
        answer[cut:],
        shared(answer[:cut]),
        version,
        shared((aud,) if isinstance(aud, str) else tuple(aud or ())),
        body.get("exp"),
        body.get("nbf", 0),
        None if client_id is None else shared(client_id),
        None if sub is None else shared(sub),
        body.get("jti") if body.get("kind") == "api_key" else None,
        limits,
        True,
        0.0,
        math.inf,
        0,
        0,
    )


def decode(raw: bytes) -> Entry | None:
    """An entry from its Redis value; None for a tombstone."""
    version, _, payload = raw.partition(b"|")
    if payload == TOMBSTONE:
        return None
    if payload == INACTIVE_PAYLOAD:
        return inactive(int(version))
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
