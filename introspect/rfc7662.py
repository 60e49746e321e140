"""RFC 7662: OAuth 2.0 token introspection (§2.1 request, §2.2 response).

The whole decision of `/introspect`, in two steps over the hooks of
`Memory` and `Stores` (the Authority), with no aiohttp and no SQL; the view
only parses the request and writes the answer bytes it gets:

- `from_memory`, synchronous and the hot path of the product: a caller
  remembered by its Authorization header (`rfc6749.remembered`), a
  credential whose keyed hash and entry this process holds, and its owner's
  record. It answers, or says what it found (`Pending`, or None when it
  does not know the caller), and never awaits.
- `complete`, the async tail: authenticates the caller memory did not know
  (RFC 6749 §2.3), looks the credential up (Redis, then Postgres, see
  lookup.py) and reads its owner's record, from where `from_memory` stopped.

Both go through `_step`, the one place that checks the caller may introspect
(SPEC: a client registered with `can_introspect`, else 403), that `token` is
present (§2.1, else 400), decides what the caller may see (`_seen_by`) and
notes an API key's use when it is answered active. A credential with usage
limits (its own, or its client's) is answered through the meter
(introspect/limits/): a `Metered` answer carries the RateLimit fields, and
is exactly `{"active": false}` when a limit is exhausted; `cost` (SPEC's
extension parameter) is how many uses the answer counts. Every inactive case
answers exactly `{"active": false}` (§2.2: no hint of why). `token_type_hint`
is accepted and never changes the answer.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import orjson

from introspect import limits, rfc6749
from introspect.cache import (
    ANSWER,
    AUD,
    CLIENT_ID,
    EXP,
    HEAD,
    LIMITS,
    NBF,
    Entry,
    answer_of,
    answered,
    inactive,
)
from introspect.errors import InvalidRequest, UnauthorizedClient
from introspect.limits import Metered
from introspect.limits.meter import INACTIVE
from introspect.store import Client, Credential, now
from introspect.store.records import Limits

HINTS = frozenset({"access_token", "api_key", "refresh_token"})


class Answer(NamedTuple):
    """An introspection answer: its bytes, and the entry it answers active (None: inactive)."""

    body: bytes
    entry: Entry | None


INACTIVE_ANSWER = Answer(INACTIVE, None)


def max_age(answer: Answer, rs_ttl: int, negative_ttl: int, t: int) -> int:
    """How long a resource server that follows the revocation feed may reuse `answer` (SPEC
    "Revocation feed"), in seconds: for an active answer the resource-server lifetime, never
    past the credential's `exp`; for an inactive one, no longer than this server keeps its
    own negative answers either."""
    entry = answer.entry
    if entry is None:
        return min(rs_ttl, negative_ttl)
    exp = entry[EXP]
    if exp is None or exp - t >= rs_ttl:
        return rs_ttl
    return max(0, exp - t)


def active_answer(credential: Credential, issuer: str) -> dict[str, Any]:
    """The §2.2 answer for a live credential, with SPEC's `kind` and `metadata`.

    The members many credentials share come first, all strings, then `sub`
    and the credential's own: an in-process entry keeps the first part once
    for all (cache.answered)."""
    answer: dict[str, Any] = {
        "active": True,
        "scope": " ".join(credential.scopes),
        "iss": issuer,
        "token_type": "Bearer",
        "kind": credential.kind,
    }
    if credential.client_id is not None:
        answer["client_id"] = credential.client_id
    if credential.audiences:
        aud = credential.audiences
        answer["aud"] = aud[0] if len(aud) == 1 else list(aud)
    answer["sub"] = credential.sub
    answer["iat"] = credential.iat
    answer["nbf"] = credential.nbf
    answer["jti"] = credential.id
    if credential.exp is not None:
        answer["exp"] = credential.exp
    if credential.username is not None:
        answer["username"] = credential.username
    if credential.metadata is not None:
        answer["metadata"] = credential.metadata
    return answer


def entry_for(credential: Credential | None, issuer: str) -> Entry:
    """The cache entry for what Postgres holds under a hash (None: unknown)."""
    if credential is None:
        return inactive()
    if credential.revoked_at is not None or (
        credential.exp is not None and credential.exp <= now()
    ):
        # Revocation and expiry are final (only a live key's expiry may change, and any
        # change writes a newer version): cached as inactive, so presenting a dead
        # credential again costs no Postgres query.
        return inactive(credential.version)
    body = active_answer(credential, issuer)
    # A copy of exact size: orjson leaves its 4 KiB output buffer attached to the bytes.
    answer = memoryview(orjson.dumps(body)).tobytes()
    return answered(answer, body, credential.version, credential.limits)


class Owners(Protocol):
    """Client records, as deciding on their credentials reads them."""

    def get_client(self, client_id: str, mono: float) -> tuple[bool, Client | None]:
        """(found, client) for a client record held at `mono`; a held None means unknown."""


class InProcess(rfc6749.AuthMemo, Owners, Protocol):
    """This process's memory of callers and client records (cache.LocalCache)."""


class Entries(Protocol):
    """This process's cache entries (cache.CredentialCache)."""

    def cached(self, key: bytes, mono: float) -> Entry | None:
        """The in-process entry for `key` at `mono` (time.monotonic()), if any."""


class Usage(Protocol):
    """Where an API key's last use is noted (usage.UsageLog)."""

    def note_use(self, entry: Entry) -> None:
        """Remember that `entry` was just answered active (a dict write, no I/O)."""


class Memory(Protocol):
    """What the synchronous step reads: this process's memory, never any I/O."""

    @property
    def local(self) -> InProcess:
        """Remembered Authorization headers and client records."""

    @property
    def hashed(self) -> Mapping[str, bytes]:
        """Presented credential -> its keyed hash, for those recently seen well-formed (an
        opaque credential) or verified (a JWT)."""

    def key_of(self, token: str) -> bytes | None:
        """The keyed hash of a presented credential that `hashed` lacks, if memory can tell
        it with no I/O (see lookup.CredentialLookup.key_of), else None."""

    @property
    def cache(self) -> Entries:
        """The in-process cache entries, by keyed hash."""

    @property
    def usage(self) -> Usage:
        """Where API keys' uses are noted."""

    @property
    def meter(self) -> limits.Meter:
        """Where uses of limited credentials are counted."""


class Stores(Memory, Protocol):
    """What the async tail adds: authentication, and reads through Redis and Postgres."""

    async def authenticate(self, authorization: str | None, params: dict[str, str]) -> Client:
        """The client that authenticated the request (RFC 6749 §2.3), or its error."""

    async def lookup(self, token: str, key: bytes | None) -> Entry:
        """The entry of a presented credential; `key` is its keyed hash, if memoized."""

    async def get_client(self, client_id: str) -> Client | None:
        """A client record, read if need be; None when there is none."""


class Pending(NamedTuple):
    """Where the synchronous step stopped: a caller that may introspect and its `token`, with
    the keyed hash memory held for it and, when only its owner's record was missing, its
    in-process entry (a NamedTuple: made on every request memory cannot answer, each Redis
    hit's; a frozen dataclass sets each field through object.__setattr__)."""

    caller: Client
    token: str
    key: bytes | None
    entry: Entry | None


def token_parameter(params: dict[str, str]) -> str:
    """The `token` parameter (§2.1), which is required."""
    token = params.get("token")
    if token is None:
        raise InvalidRequest("token is missing")
    return token


def from_memory(
    memory: Memory, authorization: str | None, params: dict[str, str]
) -> Answer | Metered | Pending | None:
    """The answer when all it needs is in this process's memory; else where it stopped
    (`Pending`), or None when memory does not know the caller. Raises the error the full
    path would for a remembered caller that may not introspect, or a missing `token`."""
    mono = time.monotonic()
    caller = rfc6749.remembered(authorization, params, memory.local, mono)
    if caller is None:
        return None
    return _step(memory, caller, params, mono)


async def complete(
    stores: Stores,
    authorization: str | None,
    params: dict[str, str],
    pending: Pending | None = None,
) -> tuple[Client, Answer | Metered]:
    """The caller and the answer, going on from where `from_memory` stopped (`pending`; None
    when it did not know the caller, or was not asked)."""
    if pending is None:
        caller = await stores.authenticate(authorization, params)
        step = _step(stores, caller, params, time.monotonic())
        if not isinstance(step, Pending):
            return caller, step
        pending = step
    caller, entry = pending.caller, pending.entry
    if entry is None:
        entry = await stores.lookup(pending.token, pending.key)
    answer = _seen_by(caller, entry, stores.local, time.monotonic())
    owner_id = entry[CLIENT_ID]
    if answer is None and owner_id is not None:
        # Memory lacks the owner's record: read it, and decide with it.
        owner = _Read(await stores.get_client(owner_id))
        answer = _seen_by(caller, entry, owner, time.monotonic())
    # (With the owner's record read, `_seen_by` always answers.)
    if isinstance(answer, Limited):
        cost = limits.cost(params.get("cost"))
        return caller, _counted(
            stores, entry, await stores.meter.admit(answer.applied, cost, answer.answer)
        )
    return caller, _noted(stores, entry, answer or INACTIVE)


def _step(
    memory: Memory, caller: Client, params: dict[str, str], mono: float
) -> Answer | Metered | Pending:
    """The decision for an authenticated caller, as far as memory takes it."""
    if not caller.can_introspect:
        raise UnauthorizedClient("this client may not introspect")
    token = token_parameter(params)
    cost = 1 if "cost" not in params else limits.cost(params["cost"])  # (checked before lookup)
    key = memory.hashed.get(token) or memory.key_of(token)
    entry = None if key is None else memory.cache.cached(key, mono)
    if entry is None:
        return Pending(caller, token, key, None)
    answer = _seen_by(caller, entry, memory.local, mono)
    if answer is None:
        return Pending(caller, token, key, entry)
    if isinstance(answer, Limited):
        metered = memory.meter.decide(answer.applied, cost, answer.answer)
        if metered is None:
            # A lease must be taken first: the async tail decides again, and takes it.
            return Pending(caller, token, key, entry)
        return _counted(memory, entry, metered)
    return _noted(memory, entry, answer)


def _noted(memory: Memory, entry: Entry, answer: bytes) -> Answer:
    """`answer`, after noting the use of an API key answered active."""
    if answer is INACTIVE:
        return INACTIVE_ANSWER
    memory.usage.note_use(entry)
    return Answer(answer, entry)


def _counted(memory: Memory, entry: Entry, metered: Metered) -> Metered:
    """`metered`, after noting the use of an API key it answers active."""
    if metered.active:
        memory.usage.note_use(entry)
    return metered


class Limited(NamedTuple):
    """An active answer that the meter must count against `applied` (the key's own limits,
    its client's, or both) before it is given (a NamedTuple: made on every request of a
    limited credential)."""

    answer: bytes
    applied: tuple[Limits, ...]


def _seen_by(caller: Client, entry: Entry, owners: Owners, mono: float) -> bytes | Limited | None:
    """The answer bytes for `entry` as `caller` may see it (`Limited` when limits apply to
    it); None when that hangs on an owner whose record `owners` does not hold at `mono` (then
    `complete` reads it)."""
    tail = entry[ANSWER]
    if tail is None:
        return INACTIVE
    t = now()
    exp = entry[EXP]
    if (exp is not None and exp <= t) or entry[NBF] > t:
        return INACTIVE
    audiences = caller.audiences
    if audiences:
        for aud in entry[AUD]:
            if aud in audiences:
                break
        else:
            return INACTIVE
    owner_id = entry[CLIENT_ID]
    if owner_id is not None:
        found, client = owners.get_client(owner_id, mono)
        if not found:
            return None
        if client is None or client.disabled:
            # SPEC: a disabled client's credentials introspect inactive (a deleted one's too).
            return INACTIVE
        if client.limits is not None:
            # The client's limits count every credential it holds; a key's own apply too.
            own = entry[LIMITS]
            return Limited(
                answer_of(entry), (client.limits,) if own is None else (own, client.limits)
            )
    own = entry[LIMITS]
    if own is not None:
        return Limited(entry[HEAD] + tail, (own,))
    return entry[HEAD] + tail  # answer_of, inline on the hot path


@dataclass(frozen=True, slots=True)
class _Read:
    """An owner's record as the async tail read it (None: there is none), held as memory
    holds one."""

    client: Client | None

    def get_client(self, _client_id: str, _mono: float) -> tuple[bool, Client | None]:
        """(True, the record read)."""
        return True, self.client
