"""Migrations: the plain SQL files in `introspect/sql/`, applied in name order.

Each missing file runs in its own transaction and is recorded in
`schema_migrations`; a session-level advisory lock makes several workers
(or instances) starting at once safe: the second waits, then finds nothing
left to do.
"""

from __future__ import annotations

import time
from pathlib import Path

import asyncpg

SQL_DIR = Path(__file__).resolve().parents[1] / "sql"
_LOCK_KEY = 7_662_7009  # any constant shared by every instance


def migration_files(sql_dir: Path = SQL_DIR) -> list[Path]:
    """The migration files in the order they apply."""
    return sorted(p for p in sql_dir.glob("*.sql") if p.name[:4].isdigit())


async def migrate(conn: asyncpg.Connection, sql_dir: Path = SQL_DIR) -> list[str]:
    """Apply the missing migrations; return the names applied (empty when up to date)."""
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations"
            " (name text PRIMARY KEY, applied_at bigint NOT NULL)"
        )
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        applied = []
        for path in migration_files(sql_dir):
            if path.name in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute(
                    "INSERT INTO schema_migrations (name, applied_at) VALUES ($1, $2)",
                    path.name,
                    int(time.time()),
                )
            applied.append(path.name)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
