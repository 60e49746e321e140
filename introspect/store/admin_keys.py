"""Keys for the admin API (`admin_keys`): stored and looked up by keyed hash only."""

from __future__ import annotations

import asyncpg

from introspect.store.records import AdminKey, NewAdminKey

ADMIN_KEY_COLUMNS = "id, name, role, created_at, expires_at, last_used_at, revoked_at"


def admin_key_from_record(record: asyncpg.Record) -> AdminKey:
    """An AdminKey from a row of ADMIN_KEY_COLUMNS."""
    return AdminKey(
        id=record["id"],
        name=record["name"],
        role=record["role"],
        created_at=record["created_at"],
        expires_at=record["expires_at"],
        last_used_at=record["last_used_at"],
        revoked_at=record["revoked_at"],
    )


async def insert_admin_key(conn: asyncpg.Connection, new: NewAdminKey) -> AdminKey:
    """Store a new admin key (its hash only)."""
    record = await conn.fetchrow(
        "INSERT INTO admin_keys (id, name, role, hash, created_at, expires_at)"
        f" VALUES ($1, $2, $3, $4, $5, $6) RETURNING {ADMIN_KEY_COLUMNS}",
        new.id,
        new.name,
        new.role,
        new.hash,
        new.created_at,
        new.expires_at,
    )
    return admin_key_from_record(record)


async def find_admin_key(
    conn: asyncpg.Pool | asyncpg.Connection, hashes: list[bytes]
) -> AdminKey | None:
    """The admin key stored under any of `hashes`, live or not, or None."""
    record = await conn.fetchrow(
        f"SELECT {ADMIN_KEY_COLUMNS} FROM admin_keys WHERE hash = ANY($1::bytea[])", hashes
    )
    return None if record is None else admin_key_from_record(record)


async def list_admin_keys(
    conn: asyncpg.Pool | asyncpg.Connection, *, limit: int, after: tuple[int, str] | None
) -> list[AdminKey]:
    """Admin keys in creation order, after the (created_at, id) of the previous page."""
    position = after or (-1, "")
    records = await conn.fetch(
        f"SELECT {ADMIN_KEY_COLUMNS} FROM admin_keys WHERE (created_at, id) > ($1, $2)"
        " ORDER BY created_at, id LIMIT $3",
        *position,
        limit,
    )
    return [admin_key_from_record(r) for r in records]


async def lock_live_admins(conn: asyncpg.Connection, at: int) -> list[str]:
    """The ids of the live `admin`-role keys, locked (in id order) for the transaction.

    Every revocation takes these locks first, so two revocations of the last
    two admin keys serialize: the second sees the first's and leaves one.
    """
    records = await conn.fetch(
        "SELECT id FROM admin_keys WHERE role = 'admin' AND revoked_at IS NULL"
        " AND (expires_at IS NULL OR expires_at > $1) ORDER BY id FOR UPDATE",
        at,
    )
    return [r["id"] for r in records]


async def lock_admin_key(conn: asyncpg.Connection, key_id: str) -> AdminKey | None:
    """An admin key, locked for the rest of the transaction."""
    record = await conn.fetchrow(
        f"SELECT {ADMIN_KEY_COLUMNS} FROM admin_keys WHERE id = $1 FOR UPDATE", key_id
    )
    return None if record is None else admin_key_from_record(record)


async def revoke_admin_key(conn: asyncpg.Connection, key_id: str, at: int) -> AdminKey:
    """Mark an admin key revoked at `at`."""
    record = await conn.fetchrow(
        f"UPDATE admin_keys SET revoked_at = $2 WHERE id = $1 RETURNING {ADMIN_KEY_COLUMNS}",
        key_id,
        at,
    )
    return admin_key_from_record(record)


async def touch_admin_keys(conn: asyncpg.Pool | asyncpg.Connection, used: dict[str, int]) -> None:
    """Record last uses {admin key id: epoch seconds} in one statement, never moving back.

    Locked rows (a revocation in progress, another worker's batch) are
    skipped, as in `touch_credentials`.
    """
    await conn.execute(
        "WITH u AS (SELECT * FROM unnest($1::text[], $2::bigint[]) AS u(id, at)),"
        " free AS (SELECT k.id FROM admin_keys k JOIN u USING (id)"
        "  ORDER BY k.id FOR UPDATE OF k SKIP LOCKED)"
        " UPDATE admin_keys k SET last_used_at = u.at FROM u, free"
        " WHERE k.id = u.id AND k.id = free.id"
        " AND (k.last_used_at IS NULL OR k.last_used_at < u.at)",
        list(used),
        list(used.values()),
    )
