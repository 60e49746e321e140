"""Coalescer: how many event-loop iterations a miss waits before its batch is fetched."""

from __future__ import annotations

import asyncio

from introspect.cache import Coalescer


async def test_a_batch_is_fetched_in_the_iteration_after_the_asks() -> None:
    """Asks of one iteration go in one batch, fetched in the next iteration: each hop through
    the loop's queue waits behind everything queued before it, which under load is most of a
    miss's latency. Once it lands, the asks that waited meanwhile go in the iteration after."""
    loop = asyncio.get_running_loop()
    iteration = 0

    def count() -> None:
        nonlocal iteration
        iteration += 1
        loop.call_soon(count)

    fetched: list[tuple[int, list[int]]] = []
    started, landed = asyncio.Event(), asyncio.Event()

    async def fetch_many(keys: list[int]) -> dict[int, int]:
        fetched.append((iteration, keys))
        started.set()
        if len(fetched) == 1:
            await landed.wait()
        return {k: -k for k in keys}

    coalescer: Coalescer[int, int] = Coalescer(fetch_many)
    loop.call_soon(count)
    await asyncio.sleep(0)
    asked = iteration
    first = [loop.create_task(coalescer.get(k)) for k in (1, 2, 1)]
    await started.wait()
    assert fetched == [(asked + 2, [1, 2])]  # the asks' iteration, then the batch's
    later = loop.create_task(coalescer.get(3))  # one batch out: waits for it
    await asyncio.sleep(0)
    assert len(fetched) == 1
    landed.set()
    assert await asyncio.gather(*first, later) == [-1, -2, -1, -3]
    assert [keys for _at, keys in fetched] == [[1, 2], [3]]
