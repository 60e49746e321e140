"""Clients: register, list, read, change, delete (revoking all they hold), rotate secrets."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from operator import attrgetter
from typing import Any

import asyncpg

from introspect import credentials, feed, revocation, rfc6749, rfc7523, rfc8417, store
from introspect.admin import audit, cursors, limits, validation
from introspect.cache import Invalidation
from introspect.credentials import Kind
from introspect.errors import Conflict, Invalid, NotFound
from introspect.revocation import Revoked
from introspect.service import Authority
from introspect.store import Client, Selection

# Rotated-out secrets still in their grace period, besides the current one.
KEEP_IN_GRACE = 2


_CLIENT_FIELDS: dict[str, Callable[[object, str], Any]] = {
    "name": validation.text,
    "scopes": validation.scopes,
    "audiences": validation.audiences,
    "can_introspect": validation.flag,
    "token_ttl": validation.token_ttl,
    "token_format": validation.token_format,
    "jwks": validation.jwk_set,
    "token_endpoint_auth_method": validation.auth_method,
    "disabled": validation.flag,
}
_CLIENT_CREATE = tuple(f for f in _CLIENT_FIELDS if f != "disabled")


def _client_fields(body: object, allowed: Iterable[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The registered fields `body` sets, validated, and the limits it sets (admin/limits.py)."""
    fields = validation.fields(body, (*allowed, *limits.FIELDS))
    registered = {f: _CLIENT_FIELDS[f](v, f) for f, v in fields.items() if f in _CLIENT_FIELDS}
    return registered, limits.parse(fields)


async def create_client(authority: Authority, actor: str, body: object) -> dict[str, Any]:
    """Register a client: its public record and `client_secret` (shown once), which a
    private_key_jwt client does not get."""
    fields, limited = _client_fields(body, _CLIENT_CREATE)
    name = validation.required(fields, "name")
    audiences = fields.get("audiences", [])
    token_format = fields.get("token_format", "opaque")
    validation.check_format(token_format, audiences)
    method = fields.get("token_endpoint_auth_method", rfc6749.CLIENT_SECRET_BASIC)
    validation.check_auth_method(method, fields.get("jwks"))
    client, secret = await authority.create_client(
        actor=actor,
        name=name,
        scopes=fields.get("scopes", []),
        audiences=audiences,
        can_introspect=fields.get("can_introspect", False),
        token_ttl=fields.get("token_ttl", 3600),
        token_format=token_format,
        jwks=fields.get("jwks"),
        token_endpoint_auth_method=method,
    )
    if limited:
        # Its limits, in a change of their own: the client exists, and none of its
        # credentials yet, so no answer can have been given without them.
        client = await _set_limits(authority, actor, client.client_id, limited)
    shown = {**client.public(), **await limits.state(authority, client.limits)}
    return shown if secret is None else {**shown, "client_secret": secret}


async def _set_limits(
    authority: Authority, actor: str, client_id: str, limited: dict[str, Any]
) -> Client:
    async def apply(conn: asyncpg.Connection) -> tuple[Client, Invalidation]:
        current = await locked_client(conn, client_id)
        changed = await limits.write(conn, f"client:{client_id}", current.limits, limited)
        stored = None if changed is None else changed.stored()
        return await changed_client(conn, actor, client_id, {"limits": stored}, {"limits": stored})

    client, _ = await authority.change(apply)
    return client


async def list_clients(authority: Authority, query: Mapping[str, str]) -> dict[str, Any]:
    """A page of clients in registration order."""
    position = attrgetter("created_at", "client_id")
    return await cursors.in_creation_order(
        query, authority.pool, store.list_clients, Client.public, position
    )


async def read_client(authority: Authority, client_id: str) -> dict[str, Any]:
    """A client's public record."""
    client = await store.get_client(
        authority.pool, validation.known_id(client_id, "client", "client")
    )
    if client is None:
        raise NotFound("client")
    return {**client.public(), **await limits.state(authority, client.limits)}


async def locked_client(conn: asyncpg.Connection, client_id: str) -> Client:
    """The client `client_id`, locked until the transaction ends; `NotFound` if none."""
    client = await store.lock_client(conn, validation.known_id(client_id, "client", "client"))
    if client is None:
        raise NotFound("client")
    return client


async def changed_client(
    conn: asyncpg.Connection,
    actor: str,
    client_id: str,
    changes: dict[str, Any],
    details: dict[str, Any],
) -> tuple[Client, Invalidation]:
    """Apply `changes` to a locked client, audited as `client.update`; its cached record
    (and every authentication remembered against it) must go from every worker."""
    client = await store.update_client(conn, client_id, changes)
    await audit.record(conn, actor, "client.update", client_id, details)
    return client, Invalidation(records=[(client_id, client.version)])


async def update_client(
    authority: Authority, actor: str, client_id: str, body: object
) -> dict[str, Any]:
    """Change a client's registered fields; its cached record is dropped everywhere.

    Becoming a private_key_jwt client forgets its secrets: going back to
    client_secret_basic leaves it without one until a rotation makes one.
    """
    changes, limited = _client_fields(body, _CLIENT_FIELDS)
    if not changes and not limited:
        raise Invalid("the body names no field to change")

    async def apply(conn: asyncpg.Connection) -> tuple[Client, Invalidation]:
        current = await locked_client(conn, client_id)
        if limited:
            changed = await limits.write(conn, f"client:{client_id}", current.limits, limited)
            changes["limits"] = None if changed is None else changed.stored()
        validation.check_format(
            changes.get("token_format", current.token_format),
            changes.get("audiences", current.audiences),
        )
        method = changes.get("token_endpoint_auth_method", current.token_endpoint_auth_method)
        if "token_endpoint_auth_method" in changes or "jwks" in changes:
            validation.check_auth_method(method, changes.get("jwks", current.jwks))
        if (
            method == rfc7523.PRIVATE_KEY_JWT
            and current.token_endpoint_auth_method == rfc6749.CLIENT_SECRET_BASIC
        ):
            await store.delete_client_secrets(conn, client_id)
        if changes.get("disabled", current.disabled) != current.disabled:
            # Its credentials' answers change: resource servers hear it (introspect/feed.py).
            kind = rfc8417.CLIENT_DISABLED if changes["disabled"] else rfc8417.CLIENT_ENABLED
            await feed.record_client_event(conn, kind, client_id)
        if set(changes.get("audiences", current.audiences)) != set(current.audiences):
            # What it sees by introspection changed: its feed receivers drop everything.
            await store.reset_receivers(conn, client_id)
        return await changed_client(conn, actor, client_id, changes, changes)

    client, _ = await authority.change(apply)
    return {**client.public(), **await limits.state(authority, client.limits)}


async def delete_client(authority: Authority, actor: str, client_id: str) -> Revoked:
    """Disable a client, forget its secrets and its jwks, and revoke every credential it holds.

    Re-enabling it (PATCH) revives no way to authenticate: it needs a new
    secret (rotation) or a new jwks or access key first. Its credentials are
    revoked by the one revocation engine in the same transaction, whose
    invalidation also tombstones the client record (introspect/revocation.py).
    """
    async with authority.pool.acquire() as conn, conn.transaction():
        current = await locked_client(conn, client_id)
        if not current.disabled:
            await feed.record_client_event(conn, rfc8417.CLIENT_DISABLED, client_id)
        deleted = await store.update_client(conn, client_id, {"disabled": True, "jwks": None})
        await store.delete_client_secrets(conn, client_id)
        recorded = await revocation.record(
            conn, actor, Selection(client_id=client_id), records=[(client_id, deleted.version)]
        )
        await audit.record(conn, actor, "client.delete", client_id, {"revoked": len(recorded.rows)})
    return await revocation.announce(authority.cache, recorded)


async def rotate_client_secret(
    authority: Authority, actor: str, client_id: str, body: object
) -> dict[str, Any]:
    """A new client secret; the current ones keep working for `grace_period` seconds.

    At most KEEP_IN_GRACE rotated-out secrets stay alive: rotating again
    retires the oldest at once.
    """
    grace = validation.grace(body)
    secret = credentials.generate(Kind.CLIENT_SECRET)

    async def apply(conn: asyncpg.Connection) -> tuple[None, Invalidation]:
        client = await locked_client(conn, client_id)
        if client.token_endpoint_auth_method != rfc6749.CLIENT_SECRET_BASIC:
            raise Conflict(
                "the client authenticates with private_key_jwt and has no secret; set its"
                " token_endpoint_auth_method to client_secret_basic first"
            )
        version = await store.rotate_client_secret(
            conn,
            client_id,
            secret_hash=credentials.keyed_hash(authority.server_secrets[0], secret),
            grace_until=store.now() + grace,
            keep=KEEP_IN_GRACE,
        )
        await audit.record(conn, actor, "client.secret_rotate", client_id, {"grace_period": grace})
        return None, Invalidation(records=[(client_id, version)])

    await authority.change(apply)
    return {"client_id": client_id, "client_secret": secret, "grace_period": grace}
