"""The Postgres connection pool: a deadline on every acquire, statement and release."""

from __future__ import annotations

from typing import Any

import asyncpg

# Deadlines of every Postgres operation (seconds): a request waits at most about this long
# for a free connection, then as long for its statement, then answers (503 if it failed).
# Point lookups and small writes take milliseconds; a second leaves room for a busy server
# and a slow network, yet a hung server costs a caller about a second, not a stall.
ACQUIRE_TIMEOUT = 1.0
COMMAND_TIMEOUT = 1.0
# New connections (a worker's start, a pool refilling after a failure).
CONNECT_TIMEOUT = 5.0
# A connection released while asyncpg still cancels its timed-out statement (the server
# hung) is closed after this, not waited for: its caller has failed already.
RELEASE_TIMEOUT = 0.1


class DeadlinePool(asyncpg.Pool):  # type: ignore[misc]  # asyncpg ships no type information
    """A pool whose every acquire, its shortcut methods' (`fetchrow`, ...) included, has a
    deadline (ACQUIRE_TIMEOUT), and whose releases do not wait on a hung server."""

    def acquire(self, *, timeout: float | None = None) -> Any:
        """Acquire a connection within `timeout` (default ACQUIRE_TIMEOUT) seconds."""
        return super().acquire(timeout=ACQUIRE_TIMEOUT if timeout is None else timeout)

    async def release(
        self,
        connection: asyncpg.Connection,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (asyncpg's signature, overridden)
    ) -> None:
        """Give a connection back; one still cancelling a statement is closed after a moment."""
        await super().release(connection, timeout=RELEASE_TIMEOUT if timeout is None else timeout)


async def create_pool(
    dsn: str, *, min_size: int = 2, max_size: int = 10, synchronous_commit: bool = True
) -> asyncpg.Pool:
    """A connection pool with deadlines; short statements only, so releases skip the reset query.

    `synchronous_commit=False` makes its commits return before the WAL is on
    disk: for writes whose loss in a crash fails closed (see Authority).
    """

    async def _no_reset(_conn: asyncpg.Connection) -> None:
        return None

    # The arguments asyncpg.create_pool passes, with this module's pool class.
    pool = DeadlinePool(
        dsn,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
        min_size=min_size,
        max_size=max_size,
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        loop=None,
        reset=_no_reset,
        timeout=CONNECT_TIMEOUT,
        command_timeout=COMMAND_TIMEOUT,
        server_settings={
            "application_name": "introspect",
            "synchronous_commit": "on" if synchronous_commit else "off",
        },
    )
    await pool
    return pool


async def ping(pool: asyncpg.Pool) -> None:
    """Return once Postgres answered a trivial statement (readiness); raise if it did not
    within the deadlines."""
    await pool.fetchval("SELECT 1", timeout=COMMAND_TIMEOUT)
