"""Coalescer: asks of one loop iteration go as one batch, started at once when it can be."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from introspect.cache.coalescer import Coalescer, Outcome

WAIT = 5.0  # an upper bound for things that should happen at once, never a measured duration


class Fetcher:
    """Batches by the task path (`fetch`) and by the started path (`start`), recorded."""

    def __init__(self, *, can_start: bool = True, refuse: Exception | None = None) -> None:
        self.can_start = can_start
        self.refuse = refuse
        self.fetched: list[list[str]] = []
        self.started: list[list[str]] = []
        self.answers: list[Callable[[Outcome[str, str]], None]] = []

    async def fetch(self, keys: list[str]) -> dict[str, str]:
        self.fetched.append(keys)
        return {k: k.upper() for k in keys if k != "absent"}

    def start(self, keys: list[str], found: Callable[[Outcome[str, str]], None]) -> bool:
        if self.refuse is not None:
            raise self.refuse
        if not self.can_start:
            return False
        self.started.append(keys)
        self.answers.append(found)
        return True

    def land(self, i: int) -> None:
        """Hand batch `i` started at once its values, as a reply read would."""
        self.answers[i]({k: k.upper() for k in self.started[i] if k != "absent"})


async def test_a_started_batch_answers_every_asker_from_its_callback() -> None:
    """Asks of one iteration go in one started batch, shared keys once; no task fetches."""
    fetcher = Fetcher()
    coalescer = Coalescer(fetcher.fetch, start_many=fetcher.start)
    asks = [coalescer.get(k) for k in ("a", "b", "a", "absent")]
    await asyncio.sleep(0)  # the flush, at the end of the iteration
    assert fetcher.started == [["a", "b", "absent"]]
    assert not any(ask.done() for ask in asks)
    fetcher.land(0)
    assert await asyncio.wait_for(asyncio.gather(*asks), WAIT) == ["A", "B", "A", None]
    assert fetcher.fetched == []


async def test_a_batch_that_cannot_start_at_once_is_fetched_in_a_task() -> None:
    """When the starter says it cannot (no connection open), `fetch_many` runs as before."""
    fetcher = Fetcher(can_start=False)
    coalescer = Coalescer(fetcher.fetch, start_many=fetcher.start)
    asks = [coalescer.get(k) for k in ("a", "b")]
    assert await asyncio.wait_for(asyncio.gather(*asks), WAIT) == ["A", "B"]
    assert fetcher.fetched == [["a", "b"]]


async def test_a_batch_refused_before_sending_fails_each_asker_and_frees_its_flight() -> None:
    """A starter that raises (no vouched history) fails every asker with that error, and the
    next batch still goes."""
    fetcher = Fetcher(refuse=ConnectionError("no vouched redis history"))
    coalescer = Coalescer(fetcher.fetch, start_many=fetcher.start)
    asks = [coalescer.get(k) for k in ("a", "b")]
    for ask in asks:
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(ask, WAIT)
    fetcher.refuse = None
    later = coalescer.get("c")
    await asyncio.sleep(0)
    fetcher.land(0)
    assert await asyncio.wait_for(later, WAIT) == "C"


async def test_a_failed_started_batch_fails_its_askers_only() -> None:
    """An error handed to the callback (a lost connection) fails that batch's askers."""
    fetcher = Fetcher()
    coalescer = Coalescer(fetcher.fetch, start_many=fetcher.start)
    ask = coalescer.get("a")
    await asyncio.sleep(0)
    fetcher.answers[0](ConnectionError("redis connection lost"))
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(ask, WAIT)
    again = coalescer.get("a")
    await asyncio.sleep(0)
    fetcher.land(1)
    assert await asyncio.wait_for(again, WAIT) == "A"


async def test_asks_made_while_a_started_batch_is_out_go_together_when_it_lands() -> None:
    """One flight at a time: asks during a flight wait, and go as one batch once it lands."""
    fetcher = Fetcher()
    coalescer = Coalescer(fetcher.fetch, start_many=fetcher.start)
    first = coalescer.get("a")
    await asyncio.sleep(0)
    waiting = [coalescer.get("b")]
    await asyncio.sleep(0)
    waiting.append(coalescer.get("c"))
    await asyncio.sleep(0)
    assert fetcher.started == [["a"]]
    fetcher.land(0)
    assert await asyncio.wait_for(first, WAIT) == "A"
    await asyncio.sleep(0)  # the next flush
    assert fetcher.started == [["a"], ["b", "c"]]
    fetcher.land(1)
    assert await asyncio.wait_for(asyncio.gather(*waiting), WAIT) == ["B", "C"]


async def test_a_batch_is_fetched_in_the_iteration_after_the_asks() -> None:
    """Without a starter, asks of one iteration go in one batch task, fetching in the next
    iteration: each hop through the loop's queue waits behind everything queued before it,
    which under load is most of a miss's latency. Once it lands, the asks that waited
    meanwhile go together."""
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
    first = [coalescer.get(k) for k in (1, 2, 1)]
    await started.wait()
    assert fetched == [(asked + 1, [1, 2])]  # the asks' iteration, then the batch's
    later = coalescer.get(3)  # one batch out: waits for it
    await asyncio.sleep(0)
    assert len(fetched) == 1
    landed.set()
    assert await asyncio.wait_for(asyncio.gather(*first, later), WAIT) == [-1, -2, -1, -3]
    assert [keys for _at, keys in fetched] == [[1, 2], [3]]
