"""Access tokens and API keys (`credentials`): stored and looked up by keyed hash only."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

from introspect.store.query import assignments, json_value, where_clause
from introspect.store.records import Credential, CredentialFilter, Limits, NewCredential, now

CREDENTIAL_COLUMNS = (
    "id, kind, format, hash, client_id, sub, username, scopes, audiences,"
    " iat, nbf, exp, revoked_at, metadata, version, last_used_at, name, prefix, limits"
)
# A credential neither revoked nor expired at the time bound to `{}`.
LIVE = "(revoked_at IS NULL AND (exp IS NULL OR exp > {}))"
# The columns an admin change may set; values are always bound parameters.
CREDENTIAL_MUTABLE = frozenset({"scopes", "audiences", "exp", "metadata", "name", "limits"})


def credential_from_record(record: asyncpg.Record) -> Credential:
    """A Credential from a row of CREDENTIAL_COLUMNS."""
    return Credential(
        id=record["id"],
        kind=record["kind"],
        format=record["format"],
        hash=bytes(record["hash"]),
        client_id=record["client_id"],
        sub=record["sub"],
        username=record["username"],
        scopes=tuple(record["scopes"]),
        audiences=tuple(record["audiences"]),
        iat=record["iat"],
        nbf=record["nbf"],
        exp=record["exp"],
        revoked_at=record["revoked_at"],
        metadata=json_value(record["metadata"]),
        version=record["version"],
        last_used_at=record["last_used_at"],
        name=record["name"],
        prefix=record["prefix"],
        limits=Limits.from_stored(f"api_key:{record['id']}", json_value(record["limits"])),
    )


async def find_credentials(
    conn: asyncpg.Pool | asyncpg.Connection, hashes: list[bytes]
) -> list[Credential]:
    """The credentials stored under any of `hashes`, in one query."""
    records = await conn.fetch(
        f"SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE hash = ANY($1::bytea[])", hashes
    )
    return [credential_from_record(record) for record in records]


async def rehash(
    conn: asyncpg.Pool | asyncpg.Connection, credential_id: str, old: bytes, new: bytes
) -> None:
    """Move a credential stored under an older server secret to the current one."""
    await conn.execute(
        "UPDATE credentials SET hash = $3 WHERE id = $1 AND hash = $2", credential_id, old, new
    )


async def insert_credential(conn: asyncpg.Pool | asyncpg.Connection, new: NewCredential) -> None:
    """Store a new credential (its hash only; an API key's display prefix and name)."""
    await conn.execute(
        "INSERT INTO credentials (id, kind, format, hash, client_id, sub, username, scopes,"
        " audiences, iat, nbf, exp, metadata, name, prefix, limits)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11, $12, $13, $14, $15)",
        new.id,
        new.kind,
        new.format,
        new.hash,
        new.client_id,
        new.sub,
        new.username,
        new.scopes,
        new.audiences,
        new.iat,
        new.exp,
        None if new.metadata is None else orjson.dumps(new.metadata).decode(),
        new.name,
        new.prefix,
        None if new.limits is None else orjson.dumps(new.limits.stored()).decode(),
    )


ACCESS_TOKEN_COLUMNS = (
    "id",
    "kind",
    "format",
    "hash",
    "client_id",
    "sub",
    "scopes",
    "audiences",
    "iat",
    "nbf",
    "exp",
)


async def copy_access_tokens(
    conn: asyncpg.Pool | asyncpg.Connection, rows: list[tuple[Any, ...]]
) -> None:
    """Store many new access tokens (rows of ACCESS_TOKEN_COLUMNS) with one COPY."""
    await conn.copy_records_to_table("credentials", records=rows, columns=ACCESS_TOKEN_COLUMNS)


async def touch_credentials(conn: asyncpg.Pool | asyncpg.Connection, used: dict[str, int]) -> None:
    """Record last uses {credential id: epoch seconds} in one statement, never moving back.

    Rows another transaction holds (another worker's batch, a revocation) are
    skipped rather than waited for: workers locking overlapping batches in
    different orders would otherwise deadlock, and a skipped time is only a
    little older than the one written by the holder.
    """
    await conn.execute(
        "WITH u AS (SELECT * FROM unnest($1::text[], $2::bigint[]) AS u(id, at)),"
        " free AS (SELECT c.id FROM credentials c JOIN u USING (id)"
        "  ORDER BY c.id FOR UPDATE OF c SKIP LOCKED)"
        " UPDATE credentials c SET last_used_at = u.at FROM u, free"
        " WHERE c.id = u.id AND c.id = free.id"
        " AND (c.last_used_at IS NULL OR c.last_used_at < u.at)",
        list(used),
        list(used.values()),
    )


async def get_credential(
    conn: asyncpg.Pool | asyncpg.Connection, credential_id: str, *, lock: bool = False
) -> Credential | None:
    """A credential by id, optionally locked for the rest of the transaction."""
    record = await conn.fetchrow(
        f"SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE id = $1"
        + (" FOR UPDATE" if lock else ""),
        credential_id,
    )
    return None if record is None else credential_from_record(record)


async def update_credential(
    conn: asyncpg.Connection, credential_id: str, changes: dict[str, Any]
) -> tuple[str, bytes, int]:
    """Apply `changes` to a credential under a fresh version; returns (id, hash, version)."""
    sets, values = assignments(changes, CREDENTIAL_MUTABLE, first=2)
    record = await conn.fetchrow(
        f"UPDATE credentials SET {sets}, version = nextval('change_version') WHERE id = $1"
        " RETURNING id, hash, version",
        credential_id,
        *values,
    )
    return record["id"], bytes(record["hash"]), record["version"]


async def list_credentials(
    conn: asyncpg.Pool | asyncpg.Connection,
    matching: CredentialFilter,
    *,
    limit: int,
    after: str | None,
) -> list[Credential]:
    """Credentials in id order after `after`, filtered by each criterion of `matching` given."""
    filters: list[tuple[str, Any]] = [
        (condition, value)
        for condition, value in (
            ("client_id = {}", matching.client_id),
            ("sub = {}", matching.sub),
            ("kind = {}", matching.kind),
            ("id > {}", after),
        )
        if value is not None
    ]
    if matching.active is not None:
        filters.append((LIVE if matching.active else f"NOT {LIVE}", now()))
    where, values = where_clause(filters)
    records = await conn.fetch(
        f"SELECT {CREDENTIAL_COLUMNS} FROM credentials{where} ORDER BY id LIMIT ${len(values) + 1}",
        *values,
        limit,
    )
    return [credential_from_record(r) for r in records]
