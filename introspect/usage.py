"""The last use of API keys and admin keys: remembered in memory, written in batches.

Answering an API key active, or accepting an admin key, writes a dict entry;
every USAGE_FLUSH_INTERVAL seconds one statement per table records them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from introspect import store
from introspect.cache import KEY_ID, Entry
from introspect.metrics import METRICS

log = logging.getLogger(__name__)
# API keys' and admin keys' last_used_at is written at most this often (seconds), in one
# statement each.
USAGE_FLUSH_INTERVAL = 10


class UsageLog:
    """Last uses not yet written, and the task that writes them."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._used: dict[str, int] = {}
        self._admin_used: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    def note_use(self, entry: Entry) -> None:
        """Remember that an API key was just answered active (a dict write, no I/O)."""
        key_id = entry[KEY_ID]
        if key_id is not None:
            self._used[key_id] = store.now()

    def note_admin_use(self, key_id: str) -> None:
        """Remember that an admin key was just accepted (a dict write, no I/O)."""
        self._admin_used[key_id] = store.now()

    async def flush(self) -> int:
        """Write the remembered last uses, one statement per table; how many keys it touched."""
        used, self._used = self._used, {}
        admin_used, self._admin_used = self._admin_used, {}
        if used:
            METRICS.pg_queries.inc()
            await store.touch_credentials(self.pool, used)
        if admin_used:
            METRICS.pg_queries.inc()
            await store.touch_admin_keys(self.pool, admin_used)
        return len(used) + len(admin_used)

    def start(self) -> None:
        """Write the remembered uses every USAGE_FLUSH_INTERVAL seconds from now on."""
        self._task = asyncio.get_running_loop().create_task(self._flush_forever())

    async def stop(self) -> None:
        """Stop writing periodically, after one last write."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _flush_forever(self) -> None:
        try:
            while True:
                await asyncio.sleep(USAGE_FLUSH_INTERVAL)
                try:
                    await self.flush()
                except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                    log.warning("could not record key use: %s", type(exc).__name__)
        finally:
            with contextlib.suppress(Exception):
                await self.flush()
