"""The meter: counts each use of a limited credential against every limit that applies.

Both kinds of limit are spent from leases this worker holds, so the hot path
decides in memory (`decide`, synchronous) and only a worker whose lease is
empty awaits (`admit`):

- Windows: a block of the window's uses taken from its Redis counter by one
  script (`Redis.take_window`), about 1/WINDOW_DIVISOR of what is free, never
  more than is free. Without Redis, a worker grants itself 1/`workers` of
  the limit once per window (counted in `introspect_limit_unreconciled_uses_total`).
- Credits: a block taken from the Postgres balance (`store.credits.renew_lease`),
  about 1/CREDIT_DIVISOR of what remains, or as many as the requests waiting
  for it in this worker when more, returned when unspent; see the package
  docstring for why Postgres and not Redis.

Concurrent requests that find the same lease empty wait for one take, then
decide again in turn; a take that grants nothing refuses them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import asyncpg
from redis.exceptions import RedisError

from introspect.limits.policy import Quota, policy_field, ratelimit_field, reset_in, window_number
from introspect.metrics import METRICS
from introspect.redis.port import Redis
from introspect.store import credits as store_credits
from introspect.store.records import Limits, Window

log = logging.getLogger(__name__)

# RFC 7662 §2.2: the whole answer for a credential that is not active (rfc7662 answers it too).
INACTIVE = b'{"active":false}'

# A window lease is about 1/WINDOW_DIVISOR of the uses still free in Redis.
WINDOW_DIVISOR = 8
# A credit lease is about 1/CREDIT_DIVISOR of the balance, at most MAX_CREDIT_BLOCK.
CREDIT_DIVISOR = 16
MAX_CREDIT_BLOCK = 1000
# A credit lease is spent for at most LEASE_USE seconds; its row says LEASE_TTL (a margin for
# a slow return), after which, plus store.credits.LOST_AFTER, an unreturned one is lost.
LEASE_TTL = 15
LEASE_USE = 12.0
# An unused lease is returned after this many seconds; a worker that found the balance
# empty asks again after EMPTY_RETRY seconds (another worker may return credits).
IDLE_RETURN = 3.0
EMPTY_RETRY = 1.0
SWEEP_INTERVAL = 2.0


@dataclass(frozen=True, slots=True)
class Metered:
    """The answer of a limited credential: its body (the active answer, or exactly
    `{"active": false}` when a limit is exhausted) and the RateLimit fields."""

    body: bytes
    headers: dict[str, str]
    active: bool


@dataclass(slots=True)
class _WindowLease:
    number: int
    left: int = 0
    # Uses still free in Redis after the last take.
    free: int = 0
    fallback: bool = False


@dataclass(slots=True)
class _CreditLease:
    lease_id: int = 0
    left: int = 0
    period: int = 0
    # time.monotonic() until which it may be spent; when it was last used.
    until: float = 0.0
    used: float = 0.0
    # The balance after the take (for the fields); while empty, asked again after retry.
    remaining: int = 0
    retry: float = 0.0


@dataclass(slots=True)
class _Need:
    """A lease to take before deciding: a window's (`window` set) or the credits'."""

    limits: Limits
    window: Window | None = None
    number: int = 0
    want: int = 1


@dataclass(slots=True)
class _Tally:
    quotas: list[Quota] = field(default_factory=list)
    refused: list[Quota] = field(default_factory=list)
    # A refused limit that waiting will not restore (credits without a refill).
    final: bool = False


def _scope(limits: Limits) -> str:
    return "key" if limits.owner.startswith("api_key:") else "client"


def window_key(owner: str, window: Window, number: int) -> bytes:
    """The Redis counter of one window: hash-tagged by its owner (one slot per owner)."""
    return f"rl:{{{owner}}}:{window.name}:{window.window}:{number}".encode()


class Meter:
    """This worker's leases of window uses and credits."""

    def __init__(
        self, redis: Redis, pool: asyncpg.Pool, *, workers: int = 1, holder: str | None = None
    ) -> None:
        self.redis = redis
        self.pool = pool
        self.workers = max(1, workers)
        self.holder = holder or f"pid:{os.getpid()}"
        self._windows: dict[tuple[str, str, int, int], _WindowLease] = {}
        self._credits: dict[tuple[str, int], _CreditLease] = {}
        self._takes: dict[object, asyncio.Future[None]] = {}
        # Uses waiting in `admit` for each credit balance: a lease taken for them covers them
        # all at once, rather than 1/CREDIT_DIVISOR of the balance at a time.
        self._demand: Counter[tuple[str, int]] = Counter()
        self._task: asyncio.Task[None] | None = None

    # --- deciding -----------------------------------------------------------------------------

    def decide(self, applied: Sequence[Limits], cost: int, answer: bytes) -> Metered | None:
        """The metered answer when every lease it needs is in memory (spending `cost` from
        each when all allow it); None when a lease must be taken first (`admit`)."""
        decided = self._decide(applied, cost, answer)
        return decided if isinstance(decided, Metered) else None

    async def admit(self, applied: Sequence[Limits], cost: int, answer: bytes) -> Metered:
        """The metered answer, taking the leases it needs."""
        balances = [(x.owner, x.generation) for x in applied if x.credits]
        self._demand.update({b: cost for b in balances})
        try:
            while True:
                decided = self._decide(applied, cost, answer)
                if isinstance(decided, Metered):
                    return decided
                await asyncio.gather(*(self._take(need) for need in decided))
        finally:
            for balance in balances:
                self._demand[balance] -= cost
                if self._demand[balance] <= 0:
                    del self._demand[balance]

    def _decide(self, applied: Sequence[Limits], cost: int, answer: bytes) -> Metered | list[_Need]:
        t, mono = time.time(), time.monotonic()
        need = max(cost, 1)
        tally, needs = _Tally(), []
        for limits in applied:
            scope = _scope(limits)
            for window in limits.windows:
                number = window_number(t, window.window)
                lease = self._windows.get((limits.owner, window.name, window.window, window.limit))
                if lease is None or lease.number != number:
                    needs.append(_Need(limits, window, number, need))
                    continue
                quota = Quota(
                    f"{scope}.{window.name}",
                    window.limit,
                    window.window,
                    lease.left + lease.free,
                    reset_in(t, window.window),
                )
                if lease.left >= need:
                    tally.quotas.append(quota)
                elif lease.left + lease.free < need:
                    tally.refused.append(quota)
                else:
                    needs.append(_Need(limits, window, number, need - lease.left))
            if limits.credits:
                self._credit_state(limits, scope, need, t, mono, tally, needs)
        if tally.refused:
            return self._refusal(tally)
        if needs:
            return needs
        for limits in applied:
            for window in limits.windows:
                self._windows[(limits.owner, window.name, window.window, window.limit)].left -= cost
            if limits.credits:
                credit = self._credits[(limits.owner, limits.generation)]
                credit.left -= cost
                credit.used = mono
        METRICS.limit_uses.inc(cost)
        spent = [Quota(q.name, q.q, q.w, q.r - cost, q.t) for q in tally.quotas]
        return Metered(answer, _fields(spent), True)

    def _credit_state(
        self,
        limits: Limits,
        scope: str,
        need: int,
        t: float,
        mono: float,
        tally: _Tally,
        needs: list[_Need],
    ) -> None:
        """Add the credits' quota to `tally`, or what must be taken to `needs`."""
        refill = limits.refill
        period = 0 if refill is None else int(t // refill.interval)
        lease = self._credits.get((limits.owner, limits.generation))
        if lease is None or lease.period != period or (lease.lease_id and mono >= lease.until):
            needs.append(_Need(limits, want=need))
            return
        left = lease.left + lease.remaining
        quota = Quota(
            f"{scope}-credits",
            left if refill is None else refill.amount,
            None if refill is None else refill.interval,
            left,
            None if refill is None else reset_in(t, refill.interval),
        )
        if lease.left >= need:
            tally.quotas.append(quota)
        elif lease.remaining < need - lease.left and mono < lease.retry:
            tally.refused.append(quota)
            tally.final = tally.final or refill is None
        else:
            needs.append(_Need(limits, want=need))

    def _refusal(self, tally: _Tally) -> Metered:
        """Exactly `{"active": false}` (an exhausted limit), with the fields of every limit."""
        for quota in tally.refused:
            if quota.name.endswith("-credits"):
                METRICS.limit_refused_credits.inc()
            else:
                METRICS.limit_refused_window.inc()
        quotas = [*tally.refused, *tally.quotas]
        headers = _fields(quotas)
        waits = [q.t for q in tally.refused]
        if not tally.final and all(w is not None for w in waits):
            headers["Retry-After"] = str(max(w for w in waits if w is not None))
        return Metered(INACTIVE, headers, False)

    # --- taking leases ------------------------------------------------------------------------

    async def _take(self, need: _Need) -> None:
        """Take the lease `need` names, or wait for the take of it already under way."""
        limits, window = need.limits, need.window
        if window is None:
            key: object = (limits.owner, limits.generation)
            await self._once(key, lambda: self._take_credits(limits, need.want))
        else:
            key = (limits.owner, window.name, window.window, window.limit)
            await self._once(key, lambda: self._take_window(limits.owner, window, need))

    async def _once(self, key: object, take: Callable[[], Awaitable[None]]) -> None:
        running = self._takes.get(key)
        if running is not None:
            # Another request is taking this lease: decide again once it is done.
            with contextlib.suppress(Exception):
                await asyncio.shield(running)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._takes[key] = future
        try:
            await take()
        finally:
            del self._takes[key]
            future.set_result(None)

    async def _take_window(self, owner: str, window: Window, need: _Need) -> None:
        state_key = (owner, window.name, window.window, window.limit)
        t = time.time()
        ttl_ms = math.ceil(((need.number + 1) * window.window - t) * 1000) + 1000
        try:
            granted, free = await self.redis.take_window(
                window_key(owner, window, need.number),
                window.limit,
                need.want,
                WINDOW_DIVISOR,
                ttl_ms,
            )
            fallback = False
        except (RedisError, OSError) as exc:
            log.warning("rate-limit window without redis: %s", type(exc).__name__)
            granted, free, fallback = 0, 0, True
        lease = self._windows.get(state_key)
        if lease is None or lease.number != need.number:
            lease = self._windows[state_key] = _WindowLease(need.number)
        if fallback and not lease.fallback:
            # Redis is down: this worker's share of the window, once, unreconciled.
            granted = max(need.want, math.ceil(window.limit / self.workers))
            lease.fallback = True
            METRICS.limit_unreconciled.inc(granted)
        lease.left += granted
        lease.free = free

    async def _take_credits(self, limits: Limits, want: int) -> None:
        state_key = (limits.owner, limits.generation)
        held = self._credits.get(state_key)
        returned = None
        if held is not None and held.lease_id:
            # What it holds now goes back with the renewal, so from here on nobody may
            # spend from it (a request that saw it empty a moment ago may renew a lease
            # just refilled by another): each credit is either spent or returned, never both.
            returned = (held.lease_id, held.left)
            held.lease_id = held.left = 0
        METRICS.pg_queries.inc()
        lease = await store_credits.renew_lease(
            self.pool,
            limits.owner,
            returned=returned,
            want=want,
            demand=self._demand[state_key],
            divisor=CREDIT_DIVISOR,
            max_block=MAX_CREDIT_BLOCK,
            holder=self.holder,
            ttl=LEASE_TTL,
        )
        mono = time.monotonic()
        if lease is None or lease.generation != limits.generation:
            # Credits removed or set again meanwhile (the change's invalidation is coming):
            # nothing to spend under these settings.
            self._credits[state_key] = _CreditLease(retry=mono + EMPTY_RETRY)
            if lease is not None and lease.id:
                await store_credits.return_lease(self.pool, lease.id, lease.amount)
            return
        self._credits[state_key] = _CreditLease(
            lease_id=lease.id,
            left=lease.amount,
            period=lease.period,
            until=mono + LEASE_USE,
            used=mono,
            remaining=lease.remaining,
            retry=mono + EMPTY_RETRY,
        )

    # --- returning leases ---------------------------------------------------------------------

    async def sweep(self, *, everything: bool = False) -> int:
        """Return credit leases unused for IDLE_RETURN seconds (all, with `everything`) and
        forget ended windows; how many leases it returned."""
        mono, t = time.monotonic(), time.time()
        returned = 0
        for state_key, lease in list(self._credits.items()):
            idle = mono - lease.used >= IDLE_RETURN or mono >= lease.until
            # (Still the lease held: an await below may have let a renewal replace it.)
            current = self._credits.get(state_key) is lease
            if current and (everything or idle) and state_key not in self._takes:
                del self._credits[state_key]
                if lease.lease_id:
                    METRICS.pg_queries.inc()
                    await store_credits.return_lease(self.pool, lease.lease_id, lease.left)
                    returned += 1
        for window_state_key, window_lease in list(self._windows.items()):
            if window_lease.number < window_number(t, window_state_key[2]):
                del self._windows[window_state_key]
        return returned

    def start(self) -> None:
        """Return idle leases every SWEEP_INTERVAL seconds from now on."""
        self._task = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def stop(self) -> None:
        """Stop sweeping, and return every lease held."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            await self.sweep(everything=True)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            try:
                await self.sweep()
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                log.warning("could not return credit leases: %s", type(exc).__name__)


def _fields(quotas: Sequence[Quota]) -> dict[str, str]:
    """The RateLimit fields of `quotas` (none when there are none)."""
    if not quotas:
        return {}
    return {"RateLimit-Policy": policy_field(quotas), "RateLimit": ratelimit_field(quotas)}
