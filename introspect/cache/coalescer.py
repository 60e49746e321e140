"""Coalescing concurrent single-key calls into batched ones: one round trip for many requests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Coalescer(Generic[K, V]):
    """Coalesces concurrent single-key calls into batched calls, at most `flights` at a time.

    Concurrent requests each ask for one key. An ask schedules a flush for
    the end of the current event-loop iteration, unless `flights` batches
    are already out: then asks wait and go together in the next batch, as
    soon as one lands. The busier the worker, the larger the batches and the
    fewer the round trips: one MGET, one query, one COPY of new rows for
    many requests. Asks for the same key share the answer.
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
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._scheduled = False
        if not self._pending or self._out >= self._flights:
            return
        batch, self._pending = self._pending, {}
        self._out += 1
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: dict[K, list[asyncio.Future[V | None]]]) -> None:
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
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)
