"""Acknowledgements of invalidations: every change of a process waits on one connection.

A change publishes its invalidation with a nonce and waits until every
listener that received it acknowledged (or ACK_TIMEOUT passed). A nonce is
`<process>:<change>`: the listeners push it onto the list of the publishing
process (`introspect:acks:<process>`), and one task of that process pops
them all on one connection (`Redis.acknowledgements`) and hands each to the change that
waits for it. However many changes run at once (a flood of revocations
included), a process holds one blocking connection for them, not one each.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from dataclasses import dataclass, field

from introspect.redis.port import Redis

# How long one pop of acknowledgements blocks while changes wait (s): a new one ends it sooner.
POLL = 0.5
# Acknowledgements popped per round trip at most.
BATCH = 1000
# A list of acknowledgements nobody pops any more (its process is gone) expires after this.
LIST_TTL = 10
_NONCE = re.compile(r"[0-9a-f]{16}:[0-9a-f]{24}")


def list_key(nonce: str) -> str | None:
    """The list a listener pushes `nonce` onto; None for anything not made by `Collector`."""
    if not _NONCE.fullmatch(nonce):
        return None
    return f"introspect:acks:{nonce.partition(':')[0]}"


@dataclass(slots=True)
class _Waiter:
    expected: int | None = None
    count: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def check(self) -> None:
        if self.expected is not None and self.count >= self.expected:
            self.done.set()


class Collector:
    """Hands the acknowledgements of this process's changes to the changes waiting for them."""

    def __init__(self, redis: Redis) -> None:
        self.process = os.urandom(8).hex()
        self.key = f"introspect:acks:{self.process}"
        self._redis = redis
        self._waiters: dict[str, _Waiter] = {}
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None

    def nonce(self) -> str:
        """A fresh nonce; acknowledgements of it are counted from now on (see `wait`)."""
        nonce = f"{self.process}:{os.urandom(12).hex()}"
        self._waiters[nonce] = _Waiter()
        if self._task is None or self._task.done():
            self._error = None
            self._task = asyncio.get_running_loop().create_task(self._route())
        return nonce

    async def wait(self, nonce: str, expected: int, deadline: float) -> int:
        """Wait until `expected` listeners acknowledged `nonce`, or `deadline`; how many did.

        Raises the Redis error that stopped the collection, if one did.
        """
        waiter = self._waiters[nonce]
        try:
            waiter.expected = expected
            waiter.check()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await waiter.done.wait()
            if self._error is not None and waiter.count < expected:
                raise self._error
            return min(waiter.count, expected)
        finally:
            del self._waiters[nonce]

    def forget(self, nonce: str) -> None:
        """Stop counting for a nonce whose change will not wait (its publication failed)."""
        self._waiters.pop(nonce, None)

    async def _route(self) -> None:
        try:
            while self._waiters:
                for raw in await self._redis.acknowledgements(self.key, POLL, BATCH):
                    waiter = self._waiters.get(raw.decode(errors="replace"))
                    if waiter is not None:  # else late: its change stopped waiting
                        waiter.count += 1
                        waiter.check()
        except Exception as exc:  # every waiting change learns it, in its own call
            self._error = exc
            for waiter in self._waiters.values():
                waiter.done.set()

    async def close(self) -> None:
        """Stop collecting (the connection is the port's, closed with it)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
