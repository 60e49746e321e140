"""Admin keys: authenticating the admin API's callers, minting, listing, revoking keys."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from operator import attrgetter
from typing import Any

import asyncpg

from introspect import credentials, store
from introspect.admin import audit, cursors, validation
from introspect.cache import Invalidation
from introspect.credentials import Kind
from introspect.errors import Conflict, Invalid, NotFound
from introspect.metrics import METRICS
from introspect.service import Authority, new_id
from introspect.store import AdminKey, NewAdminKey

# `admin` may call every admin route, `auditor` only the ones that read (GET).
ROLES = ("admin", "auditor")


class Refusal(StrEnum):
    """Why an admin API request was refused: a metric label and a log word, never the key."""

    MISSING = "missing"
    MALFORMED = "malformed"
    UNKNOWN = "unknown"
    REVOKED = "revoked"
    EXPIRED = "expired"
    INSUFFICIENT_SCOPE = "insufficient_scope"


async def authenticate(authority: Authority, presented: str) -> AdminKey | Refusal:
    """The live admin key presented, or why not; a malformed one costs no I/O.

    Every call reads Postgres (no worker remembers a verdict), so a revoked
    or expired key is refused at once by every worker of every instance. Its
    use is remembered and written in batches with the API keys' (`flush_usage`).
    """
    if credentials.parse(presented) is not Kind.ADMIN_KEY:
        return Refusal.MALFORMED
    hashes = [credentials.keyed_hash(key, presented) for key in authority.server_secrets]
    METRICS.pg_queries.inc()
    key = await store.find_admin_key(authority.pool, hashes)
    if key is None:
        return Refusal.UNKNOWN
    if key.revoked_at is not None:
        return Refusal.REVOKED
    if not key.live(store.now()):
        return Refusal.EXPIRED
    authority.note_admin_use(key.id)
    return key


def permits(key: AdminKey, *, writes: bool) -> bool:
    """Whether `key`'s role allows a request that may change something (else only reads)."""
    return key.role == "admin" or not writes


def _role(value: object, field: str) -> str:
    if value not in ROLES:
        raise Invalid(f"{field}: must be one of {', '.join(ROLES)}")
    return str(value)


async def create_admin_key(authority: Authority, actor: str, body: object) -> dict[str, Any]:
    """Mint an admin key: its record and `key` (shown once)."""
    fields = validation.fields(body, ("name", "role", "expires_in"))
    name = validation.text(validation.required(fields, "name"), "name")
    role = _role(fields.get("role", "admin"), "role")
    lifetime = validation.lifetime(fields.get("expires_in"), "expires_in")
    key = credentials.generate(Kind.ADMIN_KEY)
    key_id = new_id("adm")

    async def apply(conn: asyncpg.Connection) -> tuple[AdminKey, Invalidation]:
        t = store.now()
        minted = await store.insert_admin_key(
            conn,
            NewAdminKey(
                id=key_id,
                name=name,
                role=role,
                hash=credentials.keyed_hash(authority.server_secrets[0], key),
                created_at=t,
                expires_at=None if lifetime is None else t + lifetime,
            ),
        )
        details = {"name": name, "role": role, "expires_at": minted.expires_at}
        await audit.record(conn, actor, "admin_key.create", key_id, details)
        return minted, Invalidation()

    minted, _ = await authority.change(apply)
    return {**minted.public(), "key": key}


async def list_admin_keys(authority: Authority, query: Mapping[str, str]) -> dict[str, Any]:
    """A page of admin keys in creation order (never a key or its hash)."""
    position = attrgetter("created_at", "id")
    return await cursors.in_creation_order(
        query, authority.pool, store.list_admin_keys, AdminKey.public, position
    )


async def revoke_admin_key(authority: Authority, actor: str, key_id: str) -> dict[str, Any]:
    """Revoke an admin key: refused at once by every worker (each request reads Postgres).

    Revoking the last live `admin`-role key is `Conflict`: nobody could mint
    another through the API. The live admin keys are locked first, in one
    order, so concurrent revocations cannot together revoke them all.
    Revoking a revoked key changes nothing.
    """
    validation.known_id(key_id, "adm", "admin key")

    async def apply(conn: asyncpg.Connection) -> tuple[AdminKey, Invalidation]:
        t = store.now()
        live_admins = await store.lock_live_admins(conn, t)
        key = await store.lock_admin_key(conn, key_id)
        if key is None:
            raise NotFound("admin key")
        if key.revoked_at is not None:
            return key, Invalidation()
        if live_admins == [key_id]:
            raise Conflict("this is the last live admin-role key: create another one first")
        revoked = await store.revoke_admin_key(conn, key_id, t)
        details = {"name": key.name, "role": key.role}
        await audit.record(conn, actor, "admin_key.revoke", key_id, details)
        return revoked, Invalidation()

    revoked, _ = await authority.change(apply)
    return revoked.public()
