"""RFC 7662: OAuth 2.0 token introspection (§2.1 request, §2.2 response).

Pure protocol logic, the hot path of the product: the view parses the
request and authenticates the caller; `introspect` decides the answer from
a cache `Entry` and the caller, and returns the exact bytes to send. Every
inactive case answers exactly `{"active": false}` (§2.2: no hint of why).
`token_type_hint` is accepted and never changes the answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from introspect.cache import Entry, answered
from introspect.errors import InvalidRequest, UnauthorizedClient
from introspect.store import Client, Credential, now

INACTIVE = b'{"active":false}'
HINTS = frozenset({"access_token", "api_key", "refresh_token"})


def active_answer(credential: Credential, issuer: str) -> dict[str, Any]:
    """The §2.2 answer for a live credential, with SPEC's `kind` and `metadata`."""
    answer: dict[str, Any] = {
        "active": True,
        "scope": " ".join(credential.scopes),
        "sub": credential.sub,
        "iss": issuer,
        "iat": credential.iat,
        "nbf": credential.nbf,
        "jti": credential.id,
        "token_type": "Bearer",
        "kind": credential.kind,
    }
    if credential.client_id is not None:
        answer["client_id"] = credential.client_id
    if credential.audiences:
        aud = credential.audiences
        answer["aud"] = aud[0] if len(aud) == 1 else list(aud)
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
        return Entry(answer=None)
    if credential.revoked_at is not None or (
        credential.exp is not None and credential.exp <= now()
    ):
        # Revocation and expiry are final (only a live key's expiry may change, and any
        # change writes a newer version): cached as inactive, so presenting a dead
        # credential again costs no Postgres query.
        return Entry(answer=None, version=credential.version)
    body = active_answer(credential, issuer)
    # A copy of exact size: orjson leaves its 4 KiB output buffer attached to the bytes.
    return answered(memoryview(orjson.dumps(body)).tobytes(), body, credential.version)


def require_introspection(client: Client) -> None:
    """SPEC: only clients registered with `can_introspect` may call /introspect."""
    if not client.can_introspect:
        raise UnauthorizedClient("this client may not introspect")


def token_parameter(params: dict[str, str]) -> str:
    """The `token` parameter (§2.1), which is required."""
    token = params.get("token")
    if token is None:
        raise InvalidRequest("token is missing")
    return token


def verdict(
    caller: Client, entry: Entry, owner_disabled: Callable[[str], bool | None]
) -> bytes | None:
    """The answer bytes for `entry` as `caller` may see it; None when that hangs on an owner
    whose state `owner_disabled` does not know at once (then `decide` reads it)."""
    answer = entry.answer
    if answer is None:
        return INACTIVE
    t = now()
    if (entry.exp is not None and entry.exp <= t) or entry.nbf > t:
        return INACTIVE
    if caller.audiences and not entry.aud.intersection(caller.audiences):
        return INACTIVE
    if entry.client_id is not None:
        disabled = owner_disabled(entry.client_id)
        if disabled is None:
            return None
        if disabled:
            return INACTIVE
    return answer


async def decide(
    caller: Client,
    entry: Entry,
    owner_disabled: Callable[[str], bool | None],
    read_owner_disabled: Callable[[str], Awaitable[bool]],
) -> bytes:
    """The answer bytes for `entry` as `caller` may see it, reading the owner's state if needed."""
    body = verdict(caller, entry, owner_disabled)
    if body is None and entry.client_id is not None and entry.answer is not None:
        body = INACTIVE if await read_owner_disabled(entry.client_id) else entry.answer
    return body if body is not None else INACTIVE
