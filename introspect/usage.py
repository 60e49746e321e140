"""The last use of API keys and admin keys: remembered in memory, written in batches.

Answering an API key active, or accepting an admin key, writes a dict entry;
every USAGE_FLUSH_INTERVAL seconds they are all written, in statements of at
most USAGE_CHUNK keys a little apart, from each worker at a moment of its own.

Written at once, a worker's batch was one burst of Postgres work, and every
worker's came within milliseconds of the others' (they start together): in
the bench's mix at 5,600 requests a second, some 1,700 keys a worker, 50 ms
or more of a Postgres backend's CPU each (100 keys: 4-5 ms), so every 10 s
the backends took the cores of a two-core machine from the workers at once,
and the requests in flight waited (`python -m bench`, mix-open p99). Spread
out, the same work comes a few milliseconds at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import random

import asyncpg

from introspect import store
from introspect.cache import KEY_ID, Entry
from introspect.metrics import METRICS

log = logging.getLogger(__name__)
# API keys' and admin keys' last_used_at is written this often (seconds).
USAGE_FLUSH_INTERVAL = 10
# Keys per statement (a few milliseconds of Postgres CPU), and the pause between the
# statements of a periodic write: at most USAGE_PAUSE, and short enough for all of them to
# fit in half the interval.
USAGE_CHUNK = 100
USAGE_PAUSE = 0.1


class UsageLog:
    """Last uses not yet written, and the task that writes them."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        # The authority's lazy pool (no wait for the WAL flush): a crash forgets at most the
        # last uses, which it would forget anyway before a write.
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

    async def flush(self, pause: float = 0.0) -> int:
        """Write the last uses remembered now, USAGE_CHUNK keys per statement, `pause`
        seconds apart; how many keys it touched. What is not yet written stays remembered
        (a stop during a pause writes it)."""
        written = 0
        for used, touch in (
            (self._used, store.touch_credentials),
            (self._admin_used, store.touch_admin_keys),
        ):
            for _ in range(math.ceil(len(used) / USAGE_CHUNK)):
                if written and pause:
                    await asyncio.sleep(pause)
                chunk = dict(itertools.islice(used.items(), USAGE_CHUNK))
                for key_id in chunk:
                    del used[key_id]
                METRICS.pg_queries.inc()
                await touch(self.pool, chunk)
                written += len(chunk)
        return written

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
            # Each worker at a moment of its own: they all start together.
            await asyncio.sleep(random.uniform(0, USAGE_FLUSH_INTERVAL))  # noqa: S311 (jitter)
            while True:
                keys = len(self._used) + len(self._admin_used)
                spread = USAGE_FLUSH_INTERVAL / 2 / max(1, keys // USAGE_CHUNK)
                try:
                    await self.flush(min(USAGE_PAUSE, spread))
                except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                    log.warning("could not record key use: %s", type(exc).__name__)
                await asyncio.sleep(USAGE_FLUSH_INTERVAL)
        finally:
            with contextlib.suppress(Exception):
                await self.flush()
