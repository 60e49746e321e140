"""Coalescing concurrent single-key calls into batched ones: one round trip for many requests."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")
# A batch's values by key, or the error that failed it.
Outcome = dict[K, V] | BaseException
# Starts a batch at once and hands its outcome to the callback when it comes in, or says it
# cannot without waiting (False: nothing started, the callback never called).
Starter = Callable[[list[K], Callable[[Outcome[K, V]], None]], bool]


class Coalescer(Generic[K, V]):
    """Coalesces concurrent single-key calls into batched calls, at most `flights` at a time.

    Concurrent requests each ask for one key. The first ask of a batch
    starts it, unless `flights` batches are out: then asks wait and go
    together in the next batch, started as soon as one lands. The batch takes
    every key asked for until it runs, in the next event-loop iteration, so
    the asks of one iteration go together. The busier the worker, the larger
    the batches and the fewer the round trips: one MGET, one query, one COPY
    of new rows for many requests. Asks for the same key share the answer.

    Each hop through the event loop's queue waits for everything queued
    before it, and under load that is most of a miss's latency, so a batch
    takes one hop before it is sent, no more. Without `start_many` the batch
    is a task, created at the first ask, that takes the keys at its first
    step (not a callback that would then create the task). With
    `start_many`, a callback at the end of the iteration starts the batch at
    once, its outcome handed back by another callback (the Redis lookups'
    MGET, written in the flush itself and answered from the reading of its
    reply): no task, no coroutine, and none of the loop iterations they
    take, on every Redis hit. When it cannot (no connection open),
    `fetch_many` runs in a task as usual.
    """

    def __init__(
        self,
        fetch_many: Callable[[list[K]], Awaitable[dict[K, V]]],
        flights: int = 1,
        start_many: Starter[K, V] | None = None,
    ) -> None:
        self._fetch_many = fetch_many
        self._start_many = start_many
        self._flights = flights
        self._out = 0
        self._scheduled = False
        self._pending: dict[K, list[asyncio.Future[V | None]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def get(self, key: K) -> asyncio.Future[V | None]:
        """The value for `key` (awaited), or None when `fetch_many` found none.

        A plain function returning the asker's own future, not a coroutine: a
        coroutine per ask costs every Redis hit an object and a frame resumed on
        the way back, for nothing. The key is asked for at the call.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[V | None] = loop.create_future()
        waiting = self._pending.get(key)
        if waiting is None:
            self._pending[key] = [future]
        else:
            waiting.append(future)
        if not self._scheduled and self._out < self._flights:
            self._schedule()
        return future

    def _schedule(self) -> None:
        """Start the next batch: it takes what was asked for by the time it first runs."""
        self._scheduled = True
        self._out += 1
        if self._start_many is None:
            self._spawn(None)
        else:
            asyncio.get_running_loop().call_soon(self._flush, self._start_many)

    def _take(self) -> dict[K, list[asyncio.Future[V | None]]]:
        self._scheduled = False
        batch, self._pending = self._pending, {}
        return batch

    def _flush(self, start_many: Starter[K, V]) -> None:
        batch = self._take()
        try:
            if start_many(list(batch), functools.partial(self._settle, batch)):
                return
        except Exception as exc:  # refused before sending: every asker gets the failure
            self._settle(batch, exc)
            return
        self._spawn(batch)

    def _spawn(self, batch: dict[K, list[asyncio.Future[V | None]]] | None) -> None:
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: dict[K, list[asyncio.Future[V | None]]] | None) -> None:
        if batch is None:
            batch = self._take()
        try:
            found: Outcome[K, V] = await self._fetch_many(list(batch))
        except Exception as exc:
            found = exc
        except BaseException:  # cancelled (shutdown): its askers are left, the next may go
            self._landed()
            raise
        self._settle(batch, found)

    def _settle(self, batch: dict[K, list[asyncio.Future[V | None]]], found: Outcome[K, V]) -> None:
        """Answer every asker of `batch`; the next batch may go."""
        try:
            if isinstance(found, BaseException):
                # Every asker gets the failure, raised in its own request.
                for futures in batch.values():
                    for future in futures:
                        if not future.done():
                            future.set_exception(found)
                            future.exception()  # retrieved, so an abandoned asker stays quiet
            else:
                for key, futures in batch.items():
                    value = found.get(key)
                    for future in futures:
                        if not future.done():
                            future.set_result(value)
        finally:
            self._landed()

    def _landed(self) -> None:
        """A batch is done: the next may go."""
        self._out -= 1
        if self._pending and not self._scheduled:
            self._schedule()
