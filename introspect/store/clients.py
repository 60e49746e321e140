"""Clients and their secrets (`clients`, `client_secrets`)."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

from introspect.store.query import assignments, json_value
from introspect.store.records import Client, Limits, NewClient, now

CLIENT_COLUMNS = (
    "client_id, name, scopes, audiences, can_introspect, token_ttl, token_format,"
    " jwks, token_endpoint_auth_method, disabled, created_at, updated_at, version, limits"
)
# The columns an admin change may set; values are always bound parameters.
CLIENT_MUTABLE = frozenset(CLIENT_COLUMNS.split(", ")) - {
    "client_id",
    "created_at",
    "updated_at",
    "version",
}


def client_from_record(
    record: asyncpg.Record, secrets: tuple[tuple[bytes, int | None], ...]
) -> Client:
    """A Client from a row of CLIENT_COLUMNS and its live secrets."""
    return Client(
        client_id=record["client_id"],
        name=record["name"],
        scopes=tuple(record["scopes"]),
        audiences=tuple(record["audiences"]),
        can_introspect=record["can_introspect"],
        token_ttl=record["token_ttl"],
        token_format=record["token_format"],
        jwks=json_value(record["jwks"]),
        token_endpoint_auth_method=record["token_endpoint_auth_method"],
        disabled=record["disabled"],
        created_at=record["created_at"],
        updated_at=record["updated_at"],
        secrets=secrets,
        version=record["version"],
        limits=Limits.from_stored(f"client:{record['client_id']}", json_value(record["limits"])),
    )


async def get_client(conn: asyncpg.Pool | asyncpg.Connection, client_id: str) -> Client | None:
    """A client and its live secrets (current, or rotated out and still in grace)."""
    found = await get_clients(conn, [client_id])
    return found[0] if found else None


async def get_clients(
    conn: asyncpg.Pool | asyncpg.Connection, client_ids: list[str]
) -> list[Client]:
    """The clients of `client_ids` that exist, each with its live secrets, in one query."""
    records = await conn.fetch(
        f"SELECT {CLIENT_COLUMNS},"
        " ARRAY(SELECT secret_hash FROM client_secrets s WHERE s.client_id = clients.client_id"
        "  AND (s.expires_at IS NULL OR s.expires_at > $2) ORDER BY s.id DESC) AS hashes,"
        " ARRAY(SELECT coalesce(expires_at, 0) FROM client_secrets s"
        "  WHERE s.client_id = clients.client_id"
        "  AND (s.expires_at IS NULL OR s.expires_at > $2) ORDER BY s.id DESC) AS expiries"
        " FROM clients WHERE client_id = ANY($1::text[])",
        client_ids,
        now(),
    )
    return [
        client_from_record(
            record,
            tuple(
                (bytes(h), e or None)
                for h, e in zip(record["hashes"], record["expiries"], strict=True)
            ),
        )
        for record in records
    ]


async def insert_client(conn: asyncpg.Connection, new: NewClient) -> Client:
    """Register a client with its first secret (none for a private_key_jwt client)."""
    t = now()
    record = await conn.fetchrow(
        "INSERT INTO clients (client_id, name, scopes, audiences, can_introspect, token_ttl,"
        " token_format, jwks, token_endpoint_auth_method, created_at, updated_at)"
        f" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) RETURNING {CLIENT_COLUMNS}",
        new.client_id,
        new.name,
        new.scopes,
        new.audiences,
        new.can_introspect,
        new.token_ttl,
        new.token_format,
        None if new.jwks is None else orjson.dumps(new.jwks).decode(),
        new.token_endpoint_auth_method,
        t,
    )
    if new.secret_hash is None:
        return client_from_record(record, ())
    await conn.execute(
        "INSERT INTO client_secrets (client_id, secret_hash, created_at) VALUES ($1, $2, $3)",
        new.client_id,
        new.secret_hash,
        t,
    )
    return client_from_record(record, ((new.secret_hash, None),))


async def scopes_in_use(conn: asyncpg.Pool | asyncpg.Connection) -> list[str]:
    """Every scope an enabled client may request, sorted (RFC 8414 `scopes_supported`)."""
    scopes: list[str] = await conn.fetchval(
        "SELECT coalesce(array_agg(DISTINCT s ORDER BY s), '{}')"
        " FROM clients, unnest(scopes) AS s WHERE NOT disabled"
    )
    return scopes


async def list_clients(
    conn: asyncpg.Pool | asyncpg.Connection, *, limit: int, after: tuple[int, str] | None
) -> list[Client]:
    """Clients in creation order, after the (created_at, client_id) of the previous page."""
    position = after or (-1, "")
    records = await conn.fetch(
        f"SELECT {CLIENT_COLUMNS} FROM clients WHERE (created_at, client_id) > ($1, $2)"
        " ORDER BY created_at, client_id LIMIT $3",
        *position,
        limit,
    )
    return [client_from_record(r, ()) for r in records]


async def lock_client(conn: asyncpg.Connection, client_id: str) -> Client | None:
    """A client's row, locked for the rest of the transaction (its secrets are not read)."""
    record = await conn.fetchrow(
        f"SELECT {CLIENT_COLUMNS} FROM clients WHERE client_id = $1 FOR UPDATE", client_id
    )
    return None if record is None else client_from_record(record, ())


async def update_client(
    conn: asyncpg.Connection, client_id: str, changes: dict[str, Any]
) -> Client:
    """Apply `changes` (column: value) to a client, with a new version; returns it without
    its secrets."""
    sets, values = assignments(changes, CLIENT_MUTABLE, first=3)
    record = await conn.fetchrow(
        f"UPDATE clients SET {sets}, updated_at = $2, version = nextval('change_version')"
        " WHERE client_id = $1"
        f" RETURNING {CLIENT_COLUMNS}",
        client_id,
        now(),
        *values,
    )
    return client_from_record(record, ())


async def new_client_version(conn: asyncpg.Connection, client_id: str) -> int:
    """Give a client a new version (its secrets changed); returns it."""
    version: int = await conn.fetchval(
        "UPDATE clients SET version = nextval('change_version') WHERE client_id = $1"
        " RETURNING version",
        client_id,
    )
    return version


async def rotate_client_secret(
    conn: asyncpg.Connection, client_id: str, *, secret_hash: bytes, grace_until: int, keep: int
) -> int:
    """Add a new current secret; the current ones live on until `grace_until`. Returns the
    client's new version.

    At most `keep` secrets stay in grace (the newest); dead ones are deleted.
    """
    t = now()
    await conn.execute(
        "UPDATE client_secrets SET expires_at = $2 WHERE client_id = $1 AND expires_at IS NULL",
        client_id,
        grace_until,
    )
    await conn.execute(
        "INSERT INTO client_secrets (client_id, secret_hash, created_at) VALUES ($1, $2, $3)",
        client_id,
        secret_hash,
        t,
    )
    await conn.execute(
        "DELETE FROM client_secrets WHERE client_id = $1 AND expires_at IS NOT NULL"
        " AND (expires_at <= $2 OR id NOT IN (SELECT id FROM client_secrets"
        "  WHERE client_id = $1 AND expires_at > $2 ORDER BY id DESC LIMIT $3))",
        client_id,
        t,
        keep,
    )
    return await new_client_version(conn, client_id)


async def delete_client_secrets(conn: asyncpg.Connection, client_id: str) -> None:
    """Forget every secret of a client (it is being deleted, or now has no secret); the
    caller's transaction gives the client a new version (`update_client`)."""
    await conn.execute("DELETE FROM client_secrets WHERE client_id = $1", client_id)
