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
from dataclasses import dataclass
from typing import NamedTuple

import asyncpg
from redis.exceptions import RedisError

from introspect.limits.policy import (
    MAX_SF_INTEGER,
    POLICY,
    RATELIMIT,
    Shown,
    fields,
    policy_item,
    ratelimit_item,
    reset_in,
    sf_integer,
    window_number,
)
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


class Metered(NamedTuple):
    """The answer of a limited credential: its body (the active answer, or exactly
    `{"active": false}` when a limit is exhausted) and the RateLimit fields. (A NamedTuple, as
    rfc7662.Answer: made on every request of a limited credential, and cheaper than a frozen
    dataclass.)"""

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


@dataclass(frozen=True, slots=True)
class _Slot:
    """One window of a limit set as deciding reads it: its lease's key, its name in the fields,
    its `RateLimit-Policy` item and the start of its `RateLimit` item (`"name";r=`), fixed
    while the limits are."""

    key: tuple[str, str, int, int]
    window: Window
    name: str
    policy: str
    item: str


@dataclass(frozen=True, slots=True)
class _Plan:
    """What deciding needs of one limit set, worked out once (not per request): its windows,
    the name of its credits in the fields, and its one window when that is all it has (no
    credits: see `Meter.decide`)."""

    limits: Limits
    slots: tuple[_Slot, ...]
    credits: str
    single: _Slot | None


def _plan(limits: Limits) -> _Plan:
    scope = "key" if limits.owner.startswith("api_key:") else "client"
    slots = tuple(
        _Slot(
            (limits.owner, w.name, w.window, w.limit),
            w,
            f"{scope}.{w.name}",
            policy_item(f"{scope}.{w.name}", w.limit, w.window),
            ratelimit_item(f"{scope}.{w.name}", 0, None)[:-1],
        )
        for w in limits.windows
    )
    single = slots[0] if len(slots) == 1 and not limits.credits else None
    return _Plan(limits, slots, f"{scope}-credits", single)


def _replan(plan: _Plan | None, limits: Limits) -> _Plan:
    """The plan of `limits`, for an owner whose plan was `plan`: the same plan when its limits
    are equal (an entry read again holds an equal copy: comparing them on every request from
    then on would cost more than this once), a new one otherwise."""
    if plan is not None and plan.limits == limits:
        return _Plan(limits, plan.slots, plan.credits, plan.single)
    return _plan(limits)


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
        # Each limit set's plan, by owner (dropped with the owner's last lease).
        self._plans: dict[str, _Plan] = {}
        self._takes: dict[object, asyncio.Future[None]] = {}
        # Uses waiting in `admit` for each credit balance: a lease taken for them covers them
        # all at once, rather than 1/CREDIT_DIVISOR of the balance at a time.
        self._demand: Counter[tuple[str, int]] = Counter()
        self._task: asyncio.Task[None] | None = None

    # --- deciding -----------------------------------------------------------------------------

    def decide(self, applied: Sequence[Limits], cost: int, answer: bytes) -> Metered | None:
        """The metered answer when every lease it needs is in memory (spending `cost` from
        each when all allow it); None when a lease must be taken first (`admit`)."""
        if len(applied) == 1:
            spent = self._spent_from_one(applied[0], cost, answer)
            if spent is not None:
                return spent
        decided = self._decide(applied, cost, answer)
        return decided if isinstance(decided, Metered) else None

    def _spent_from_one(self, limits: Limits, cost: int, answer: bytes) -> Metered | None:
        """The answer `_decide` gives when `limits` is one window and nothing else, and its
        lease of the current window holds the use (most uses of a limited credential), made
        without `_decide`'s general loop; None in every other case, which `_decide` decides.
        (Its answer and spending are `_decide`'s: tests/unit/test_meter.py checks it.)"""
        plan = self._plans.get(limits.owner)
        if plan is None or plan.limits is not limits or plan.single is None:
            return None
        slot = plan.single
        lease = self._windows.get(slot.key)
        second = int(time.time())
        window = slot.window.window
        number = second // window
        if lease is None or lease.number != number or lease.left < (cost or 1):
            return None
        lease.left -= cost
        METRICS.limit_uses.inc(cost)
        # `ratelimit_item`, inline (a call less on every limited use): t is 1 to the window's
        # length, within an sf-integer (admin validation), and r is clamped as it clamps.
        r = lease.left + lease.free
        if not 0 <= r <= MAX_SF_INTEGER:
            r = sf_integer(r)
        remaining = f"{slot.item}{r};t={(number + 1) * window - second}"
        return Metered(answer, {POLICY: slot.policy, RATELIMIT: remaining}, True)

    async def admit(self, applied: Sequence[Limits], cost: int, answer: bytes) -> Metered:
        """The metered answer, taking the leases it needs."""
        balances = [(x.owner, x.generation) for x in applied if x.credits]
        self._demand.update({b: cost for b in balances})
        try:
            while True:
                decided = self._decide(applied, cost, answer)
                if isinstance(decided, Metered):
                    return decided
                if len(decided) == 1:
                    # The usual case (one lease to take): awaited here, without the task
                    # and the extra turn of the loop that gathering it would cost.
                    await self._take(decided[0])
                else:
                    await asyncio.gather(*(self._take(need) for need in decided))
        finally:
            for balance in balances:
                self._demand[balance] -= cost
                if self._demand[balance] <= 0:
                    del self._demand[balance]

    def _decide(self, applied: Sequence[Limits], cost: int, answer: bytes) -> Metered | list[_Need]:
        t = time.time()
        # Whole seconds: with integer window ends, `end - int(t)` is policy.reset_in(t, window).
        second = int(t)
        need = max(cost, 1)
        shown: list[Shown] = []
        refused: list[Shown] = []
        needs: list[_Need] = []
        # The window leases to spend from, once every limit allows the use.
        spending: list[_WindowLease] = []
        final = False
        for limits in applied:
            plan = self._plans.get(limits.owner)
            if plan is None or plan.limits is not limits:
                plan = self._plans[limits.owner] = _replan(plan, limits)
            for slot in plan.slots:
                window = slot.window
                number = second // window.window
                lease = self._windows.get(slot.key)
                if lease is None or lease.number != number:
                    needs.append(_Need(limits, window, number, need))
                    continue
                left = lease.left
                item = (
                    slot.name,
                    slot.policy,
                    left + lease.free,
                    (number + 1) * window.window - second,
                )
                if left >= need:
                    shown.append(item)
                    spending.append(lease)
                elif left + lease.free < need:
                    refused.append(item)
                else:
                    needs.append(_Need(limits, window, number, need - left))
            if limits.credits:
                final = (
                    self._credit_state(limits, plan.credits, need, t, shown, refused, needs)
                    or final
                )
        if refused:
            # A window whose lease must be taken first (a new window began) is taken before
            # refusing, so the refusal shows it too (one Redis call; a credit take is not
            # worth a store call for an answer already refused).
            windows = [n for n in needs if n.window is not None]
            return windows or _refusal(refused, shown, final)
        if needs:
            return needs
        for lease in spending:
            lease.left -= cost
        for limits in applied:
            if limits.credits:
                credit = self._credits[(limits.owner, limits.generation)]
                credit.left -= cost
                credit.used = time.monotonic()
        METRICS.limit_uses.inc(cost)
        if not shown:
            return Metered(answer, {}, True)
        # The fields after this use: what each limit has left once `cost` is spent.
        return Metered(answer, fields(shown, cost), True)

    def _credit_state(
        self,
        limits: Limits,
        name: str,
        need: int,
        t: float,
        shown: list[Shown],
        refused: list[Shown],
        needs: list[_Need],
    ) -> bool:
        """Add the credits to `shown` or `refused`, or what must be taken to `needs`; whether
        they refuse for good (no refill: waiting will not restore them)."""
        mono = time.monotonic()
        refill = limits.refill
        period = 0 if refill is None else int(t // refill.interval)
        lease = self._credits.get((limits.owner, limits.generation))
        if lease is None or lease.period != period or (lease.lease_id and mono >= lease.until):
            needs.append(_Need(limits, want=need))
            return False
        left = lease.left + lease.remaining
        item: Shown
        if refill is None:
            item = (name, policy_item(name, left, None), left, None)
        else:
            policy = policy_item(name, refill.amount, refill.interval)
            item = (name, policy, left, reset_in(t, refill.interval))
        if lease.left >= need:
            shown.append(item)
        elif lease.remaining < need - lease.left and mono < lease.retry:
            refused.append(item)
            return refill is None
        else:
            needs.append(_Need(limits, want=need))
        return False

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
        METRICS.redis_calls.inc()
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
        held = {key[0] for key in self._windows} | {key[0] for key in self._credits}
        for owner in [owner for owner in self._plans if owner not in held]:
            del self._plans[owner]
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


def _refusal(refused: Sequence[Shown], shown: Sequence[Shown], final: bool) -> Metered:
    """Exactly `{"active": false}` (an exhausted limit), with the fields of every limit (the
    refused first), and `Retry-After` when waiting restores every refused one."""
    for name, *_ in refused:
        if name.endswith("-credits"):
            METRICS.limit_refused_credits.inc()
        else:
            METRICS.limit_refused_window.inc()
    headers = fields([*refused, *shown])
    waits = [x[3] for x in refused]
    if not final and all(w is not None for w in waits):
        headers["Retry-After"] = str(max(w for w in waits if w is not None))
    return Metered(INACTIVE, headers, False)
