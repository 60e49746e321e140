"""The audit log (`audit_log`): append-only, written in the caller's transaction."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

from introspect.store.query import where_clause
from introspect.store.records import AuditEntry, AuditFilter, now


async def audit(conn: asyncpg.Connection, entry: AuditEntry) -> None:
    """Append one audit entry, at the current time (in the caller's transaction)."""
    await conn.execute(
        "INSERT INTO audit_log (at, actor, action, target_kind, target_id, details)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        now(),
        entry.actor,
        entry.action,
        entry.target_kind,
        entry.target_id,
        orjson.dumps(entry.details or {}).decode(),
    )


AUDIT_COLUMNS = "id, at, actor, action, target_kind, target_id, details"


async def list_audit(
    conn: asyncpg.Pool | asyncpg.Connection,
    matching: AuditFilter,
    *,
    limit: int,
    before: int | None,
) -> list[dict[str, Any]]:
    """Audit entries, newest first, older than the id `before`, filtered by each criterion of
    `matching` given."""
    where, values = where_clause(
        [
            (condition, value)
            for condition, value in (
                ("action = {}", matching.action),
                ("target_id = {}", matching.target_id),
                ("actor = {}", matching.actor),
                ("id < {}", before),
            )
            if value is not None
        ]
    )
    records = await conn.fetch(
        f"SELECT {AUDIT_COLUMNS} FROM audit_log{where} ORDER BY id DESC LIMIT ${len(values) + 1}",
        *values,
        limit,
    )
    return [{**dict(r), "details": orjson.loads(r["details"])} for r in records]
