"""Coalescing concurrent single-key calls into batched ones: one round trip for many requests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Coalescer(Generic[K, V]):
    """Coalesces concurrent single-key calls into batched calls, at most `flights` at a time.

    Concurrent requests each ask for one key. An ask starts a batch task,
    unless one is already due to start or `flights` batches are out: the
    task's first step runs in the next event-loop iteration and takes every
    key asked for until then, so the asks of one iteration go together; when
    `flights` batches are out, asks wait and go together in the next batch,
    started as soon as one lands. The busier the worker, the larger the
    batches and the fewer the round trips: one MGET, one query, one COPY of
    new rows for many requests. Asks for the same key share the answer.

    The batch is taken by the task itself, not by a callback that then
    starts it: each hop through the event loop's queue waits for everything
    queued before it, and under load that is most of a miss's latency (a
    read through Redis already takes one hop to send, one to resume the
    batch, one to resume each asker).
    """

    def __init__(
        self, fetch_many: Callable[[list[K]], Awaitable[dict[K, V]]], flights: int = 1
    ) -> None:
        self._fetch_many = fetch_many
        self._flights = flights
        self._out = 0
        self._scheduled = False
        self._pending: dict[K, list[asyncio.Future[V | None]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def get(self, key: K) -> V | None:
        """The value for `key`, or None when `fetch_many` found none."""
        future: asyncio.Future[V | None] = asyncio.get_running_loop().create_future()
        waiting = self._pending.get(key)
        if waiting is None:
            self._pending[key] = [future]
        else:
            waiting.append(future)
        if not self._scheduled and self._out < self._flights:
            self._start()
        return await future

    def _start(self) -> None:
        """Start a batch task; it takes what was asked for by the time it first runs."""
        self._scheduled = True
        self._out += 1
        task = asyncio.get_running_loop().create_task(self._run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, {}
        try:
            found = await self._fetch_many(list(batch))
        except Exception as exc:  # every asker gets the failure, raised in its own request
            for futures in batch.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
                        future.exception()  # retrieved, so an abandoned asker stays quiet
            return
        else:
            for key, futures in batch.items():
                value = found.get(key)
                for future in futures:
                    if not future.done():
                        future.set_result(value)
        finally:
            self._out -= 1
            if self._pending and not self._scheduled:
                self._start()
