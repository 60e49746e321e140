"""API keys: issue, change and rotate, each visible at once everywhere."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from introspect import credentials, feed, rfc8417, store
from introspect.admin import audit, limits, validation
from introspect.cache import Invalidation
from introspect.credentials import Kind
from introspect.errors import AdminError, Conflict, Invalid, NotFound
from introspect.service import Authority, new_id
from introspect.store import Credential, NewCredential

MAX_EPOCH = 253_402_300_799  # 9999-12-31T23:59:59Z


async def create_api_key(authority: Authority, actor: str, body: object) -> dict[str, Any]:
    """Issue an API key for a client and/or subject: its public record and `key` (shown once)."""
    fields = validation.fields(
        body,
        (
            "client_id",
            "sub",
            "scopes",
            "audiences",
            "expires_in",
            "metadata",
            "name",
            *limits.FIELDS,
        ),
    )
    client_id = fields.get("client_id")
    sub = fields.get("sub")
    if client_id is None and sub is None:
        raise Invalid("client_id, sub: at least one is required")
    client_id = None if client_id is None else validation.text(client_id, "client_id")
    subject = (
        validation.text(sub, "sub") if sub is not None else validation.text(client_id, "client_id")
    )
    scopes = validation.scopes(validation.required(fields, "scopes"), "scopes")
    audiences = validation.audiences(fields.get("audiences", []), "audiences")
    lifetime = validation.lifetime(fields.get("expires_in"), "expires_in")
    metadata = validation.metadata(fields.get("metadata"), "metadata")
    name = validation.key_name(fields.get("name"), "name")
    limited = limits.parse(fields)
    key = credentials.generate(Kind.API_KEY)
    key_id = new_id("key")

    async def apply(conn: asyncpg.Connection) -> tuple[Credential, Invalidation]:
        if client_id is not None:
            await check_bound_client(conn, client_id, scopes)
        iat = store.now()
        key_limits = await limits.write(conn, f"api_key:{key_id}", None, limited)
        new = NewCredential(
            id=key_id,
            kind=Kind.API_KEY.value,
            hash=credentials.keyed_hash(authority.server_secrets[0], key),
            client_id=client_id,
            sub=subject,
            scopes=tuple(scopes),
            audiences=tuple(audiences),
            iat=iat,
            exp=None if lifetime is None else iat + lifetime,
            metadata=metadata,
            name=name,
            prefix=credentials.display_prefix(key),
            limits=key_limits,
        )
        await store.insert_credential(conn, new)
        issued = await _credential(conn, key_id)
        details = {k: v for k, v in issued.public().items() if k in _AUDITED_KEY_FIELDS}
        await audit.record(conn, actor, "api_key.create", key_id, details)
        return issued, Invalidation()

    issued, _ = await authority.change(apply)
    return {**issued.public(), "key": key}


async def check_bound_client(
    conn: asyncpg.Connection, client_id: str, scopes: Sequence[str]
) -> None:
    """Keys bound to `client_id` may hold `scopes`: it exists (404), is enabled (409) and
    allows them (400)."""
    client = await store.get_client(conn, client_id)
    if client is None:
        raise AdminError(404, "not_found", "client_id: no such client")
    if client.disabled:
        raise Conflict("client_id: the client is disabled")
    validation.within(scopes, client)


_AUDITED_KEY_FIELDS = frozenset(
    {"client_id", "sub", "scopes", "audiences", "exp", "name", *limits.FIELDS}
)


async def read_api_key(authority: Authority, key_id: str) -> dict[str, Any]:
    """An API key's public record, with its limits' state now (uses left, credits)."""
    key = await store.get_credential(authority.pool, validation.known_id(key_id, "key", "API key"))
    if key is None or key.kind != Kind.API_KEY.value:
        raise NotFound("API key")
    return {**key.public(), **await limits.state(authority, key.limits)}


async def _credential(conn: asyncpg.Connection, credential_id: str) -> Credential:
    """A credential this transaction has just written."""
    found = await store.get_credential(conn, credential_id)
    if found is None:
        raise LookupError(f"credential {credential_id} vanished inside its own transaction")
    return found


async def _live_key(conn: asyncpg.Connection, key_id: str) -> Credential:
    """The API key `key_id`, locked; 404 when unknown, 409 when revoked or expired."""
    key = await store.get_credential(conn, validation.known_id(key_id, "key", "API key"), lock=True)
    if key is None or key.kind != Kind.API_KEY.value:
        raise NotFound("API key")
    if key.revoked_at is not None:
        raise Conflict("the API key is revoked")
    if key.exp is not None and key.exp <= store.now():
        raise Conflict("the API key has expired")
    return key


def _expiry(fields: Mapping[str, Any], now: int) -> int | None:
    """The new `exp` from `expires_in` or `expires_at` (null: never)."""
    if "expires_in" in fields:
        seconds = validation.lifetime(fields["expires_in"], "expires_in")
        return None if seconds is None else now + seconds
    value = fields["expires_at"]
    return None if value is None else validation.integer(value, "expires_at", now + 1, MAX_EPOCH)


async def update_api_key(
    authority: Authority, actor: str, key_id: str, body: object
) -> dict[str, Any]:
    """Change a live key's scopes, audiences, expiry, metadata or name: visible at once
    everywhere."""
    fields = validation.fields(
        body,
        ("scopes", "audiences", "expires_in", "expires_at", "metadata", "name", *limits.FIELDS),
    )
    if not fields:
        raise Invalid("the body names no field to change")
    if "expires_in" in fields and "expires_at" in fields:
        raise Invalid("expires_in, expires_at: send one, not both")
    changes: dict[str, Any] = {}
    if "scopes" in fields:
        changes["scopes"] = validation.scopes(fields["scopes"], "scopes")
    if "audiences" in fields:
        changes["audiences"] = validation.audiences(fields["audiences"], "audiences")
    if "expires_in" in fields or "expires_at" in fields:
        changes["exp"] = _expiry(fields, store.now())
    if "metadata" in fields:
        changes["metadata"] = validation.metadata(fields["metadata"], "metadata")
    if "name" in fields:
        changes["name"] = validation.key_name(fields["name"], "name")
    limited = limits.parse(fields)

    async def apply(conn: asyncpg.Connection) -> tuple[Credential, Invalidation]:
        key = await _live_key(conn, key_id)
        if limited:
            changed_limits = await limits.write(conn, f"api_key:{key_id}", key.limits, limited)
            changes["limits"] = None if changed_limits is None else changed_limits.stored()
        if "scopes" in changes and key.client_id is not None:
            # The foreign key guarantees the client; its scopes bound the key's.
            client = await store.get_client(conn, key.client_id)
            if client is not None:
                validation.within(changes["scopes"], client)
        changed = await store.update_credential(conn, key_id, changes)
        await audit.record(conn, actor, "api_key.update", key_id, changes)
        # Seen by the callers that saw it before the change and those that see it after.
        seen_by = sorted({*key.audiences, *changes.get("audiences", ())})
        await feed.record_credential_event(conn, rfc8417.CREDENTIAL_CHANGED, key_id, seen_by)
        return await _credential(conn, key_id), Invalidation.for_credentials([changed])

    updated, _ = await authority.change(apply)
    return {**updated.public(), **await limits.state(authority, updated.limits)}


async def rotate_api_key(
    authority: Authority, actor: str, key_id: str, body: object
) -> dict[str, Any]:
    """A new key with the same attributes; the old one expires after the grace period.

    The grace period never extends the old key's own expiry, and the new key
    expires when the old one would have.
    """
    grace = validation.grace(body)
    key = credentials.generate(Kind.API_KEY)
    new_key_id = new_id("key")

    async def apply(conn: asyncpg.Connection) -> tuple[tuple[Credential, int], Invalidation]:
        old = await _live_key(conn, key_id)
        t = store.now()
        ends = t + grace if old.exp is None else min(old.exp, t + grace)
        new = NewCredential(
            id=new_key_id,
            kind=Kind.API_KEY.value,
            hash=credentials.keyed_hash(authority.server_secrets[0], key),
            client_id=old.client_id,
            sub=old.sub,
            scopes=old.scopes,
            audiences=old.audiences,
            iat=t,
            exp=old.exp,
            username=old.username,
            metadata=old.metadata,
            name=old.name,
            prefix=credentials.display_prefix(key),
            # The same limits, counting on the same windows and balance as the old key.
            limits=old.limits,
        )
        await store.insert_credential(conn, new)
        changed = await store.update_credential(conn, key_id, {"exp": ends})
        await feed.record_credential_event(conn, rfc8417.CREDENTIAL_CHANGED, key_id, old.audiences)
        details = {"new_id": new_key_id, "grace_period": grace, "exp": ends}
        await audit.record(conn, actor, "api_key.rotate", key_id, details)
        await audit.record(conn, actor, "api_key.create", new_key_id, {"rotated_from": key_id})
        issued = await _credential(conn, new_key_id)
        return (issued, ends), Invalidation.for_credentials([changed])

    (issued, ends), _ = await authority.change(apply)
    return {**issued.public(), "key": key, "replaced": {"id": key_id, "exp": ends}}
