"""Revocations of credentials, with their audit entries and their invalidation."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

from introspect.store.records import now


async def revoke_credentials(
    conn: asyncpg.Connection, where: str, *args: Any
) -> list[tuple[str, bytes, int]]:
    """Revoke the live credentials matching `where` (SQL over $2...); return (id, hash, version).

    Only credentials neither revoked nor expired before are touched and counted.
    """
    rows = await conn.fetch(
        "UPDATE credentials SET revoked_at = $1, version = nextval('change_version')"
        f" WHERE revoked_at IS NULL AND (exp IS NULL OR exp > $1) AND ({where})"
        " RETURNING id, hash, version",
        now(),
        *args,
    )
    return [(r["id"], bytes(r["hash"]), r["version"]) for r in rows]


async def revoke_recorded(
    conn: asyncpg.Pool | asyncpg.Connection,
    actor: str,
    where: str,
    args: tuple[Any, ...],
    *,
    evict_keys: bool,
    clients: list[str],
    subs: list[str],
) -> tuple[int | None, list[tuple[str, bytes, int]]]:
    """Revoke, audit and record the invalidation in one statement (one round trip, one commit).

    The same effect as `revoke_credentials` + `audit_revoked` + `add_outbox` of
    `Invalidation` for the rows, whose JSON form (see `Invalidation.dumps`) is
    built here by Postgres. Returns the outbox id and the (id, hash, version) rows;
    when nothing matched, nothing is written and the outbox id is None.
    """
    n = len(args) + 2
    rows = await conn.fetch(
        "WITH r AS ("
        "  UPDATE credentials SET revoked_at = $1, version = nextval('change_version')"
        f"  WHERE revoked_at IS NULL AND (exp IS NULL OR exp > $1) AND ({where})"
        "  RETURNING id, kind, hash, version),"
        " a AS (INSERT INTO audit_log (at, actor, action, target_kind, target_id)"
        f"  SELECT $1, ${n}, 'credential.revoke',"
        "   CASE WHEN kind = 'api_key' THEN 'api_key' ELSE 'access_token' END, id"
        "  FROM r ORDER BY id),"
        " o AS (INSERT INTO invalidation_outbox (message, created_at)"
        "  SELECT convert_to(json_build_object("
        "   't', coalesce((SELECT json_agg(json_build_array(encode(hash, 'hex'), version))"
        "    FROM r), '[]'::json),"
        f"   'k', CASE WHEN ${n + 1} THEN coalesce((SELECT json_agg(encode(hash, 'hex'))"
        "    FROM r), '[]'::json) ELSE '[]'::json END,"
        f"   'r', '[]'::json, 'c', ${n + 2}::text::json, 's', ${n + 3}::text::json,"
        "   'all', false, 'x', true)::text, 'UTF8'), $1"
        "  WHERE EXISTS (SELECT FROM r)"
        "  RETURNING id)"
        " SELECT o.id AS outbox_id, r.id, r.hash, r.version FROM r, o",
        now(),
        *args,
        actor,
        evict_keys,
        orjson.dumps(clients).decode(),
        orjson.dumps(subs).decode(),
    )
    revoked = [(r["id"], bytes(r["hash"]), r["version"]) for r in rows]
    return (rows[0]["outbox_id"] if rows else None), revoked


async def audit_revoked(
    conn: asyncpg.Connection, actor: str, revoked: list[tuple[str, bytes, int]]
) -> None:
    """One `credential.revoke` entry per revoked (id, hash, version), in one statement."""
    if not revoked:
        return
    ids = [credential_id for credential_id, _hash, _version in revoked]
    await conn.execute(
        "INSERT INTO audit_log (at, actor, action, target_kind, target_id)"
        " SELECT $1, $2, 'credential.revoke',"
        "  CASE WHEN c.kind = 'api_key' THEN 'api_key' ELSE 'access_token' END, c.id"
        " FROM credentials c WHERE c.id = ANY($3::text[]) ORDER BY c.id",
        now(),
        actor,
        ids,
    )
