"""Prometheus metrics, correct across worker processes, nearly free on the hot path.

`introspect serve` points `PROMETHEUS_MULTIPROC_DIR` at a fresh folder
before its workers start, so every worker writes its own files and a scrape
of any worker sums them all. Without it (tests, a single process) the
default registry is used.

Writing a multiprocess value costs a lock and an mmap write, and a labelled
child a dict lookup: a few microseconds per request, several percent of a
cache hit. So the hot path only adds to plain integers here, and each
worker flushes them into the Prometheus values every `FLUSH_INTERVAL`
seconds and before it answers a scrape: a scrape may lag other workers by
at most that interval.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import gc
import os
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess

FLUSH_INTERVAL = 1.0
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5)
# Pauses of the cyclic GC and lags of the event loop: from a tenth of a millisecond up.
_PAUSE_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
# A change's propagation to every listener: a millisecond or two, finely, up to ACK_TIMEOUT.
_PROPAGATION_BUCKETS = (
    *(0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.025),
    *(0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
# The event loop's lag is probed this often (seconds): a timer that should fire now.
LAG_INTERVAL = 0.1


class LocalCounter:
    """A counter that adds to an integer and hands the sum to Prometheus on flush."""

    __slots__ = ("_flushed", "_pending", "_target")

    def __init__(self, target: Counter) -> None:
        self._target = target
        self._pending = 0
        self._flushed = 0

    def inc(self, amount: int = 1) -> None:
        """Count `amount` more."""
        self._pending += amount

    def value(self) -> int:
        """Everything this process counted, flushed or not."""
        return self._flushed + self._pending

    def flush(self) -> None:
        """Hand the pending count to Prometheus."""
        if self._pending:
            self._target.inc(self._pending)
            self._flushed += self._pending
            self._pending = 0


class _Tally:
    """Observations since the last flush: a count per bucket of `bounds` (the last one is
    +Inf), and their sum."""

    __slots__ = ("bounds", "buckets", "seconds")

    def __init__(self, bounds: tuple[float, ...] = _LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self.buckets = [0] * (len(bounds) + 1)
        self.seconds = 0.0

    def observe(self, seconds: float) -> None:
        """Count one observation of `seconds`."""
        self.buckets[bisect.bisect_left(self.bounds, seconds)] += 1
        self.seconds += seconds

    def flush_into(self, child: Histogram) -> None:
        """Add the observations to a Histogram (as its `observe` would) and start over."""
        # Histogram stores per-bucket counts and a sum; the last index is its +Inf bucket.
        child._sum.inc(self.seconds)
        for index, count in enumerate(self.buckets):
            if count:
                child._buckets[index].inc(count)
                self.buckets[index] = 0
        self.seconds = 0.0


class _RouteTally(_Tally):
    """One route's requests since the last flush: by status, by latency bucket, total time."""

    __slots__ = ("statuses",)

    def __init__(self) -> None:
        super().__init__()
        self.statuses: dict[int, int] = {}


class Metrics:
    """Every metric of the server, counted locally and flushed to Prometheus."""

    def __init__(self) -> None:
        self._requests = Counter(
            "introspect_requests_total", "HTTP requests by route and status", ["route", "status"]
        )
        self._latency = Histogram(
            "introspect_request_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=_LATENCY_BUCKETS,
        )
        hits = Counter("introspect_cache_hits_total", "Cache hits by layer", ["layer"])
        misses = Counter("introspect_cache_misses_total", "Cache misses by layer", ["layer"])
        self.local_hits = LocalCounter(hits.labels("local"))
        self.local_misses = LocalCounter(misses.labels("local"))
        self.redis_hits = LocalCounter(hits.labels("redis"))
        self.redis_misses = LocalCounter(misses.labels("redis"))
        self.redis_calls = LocalCounter(
            Counter("introspect_redis_calls_total", "Redis commands sent")
        )
        self.pg_queries = LocalCounter(
            Counter("introspect_pg_queries_total", "Postgres queries run")
        )
        self.invalidations_sent = LocalCounter(
            Counter("introspect_invalidations_sent_total", "Invalidation messages published")
        )
        self.invalidations_received = LocalCounter(
            Counter("introspect_invalidations_received_total", "Invalidation messages applied")
        )
        self.tokens_issued = LocalCounter(
            Counter("introspect_tokens_issued_total", "Access tokens issued")
        )
        self.history_losses = LocalCounter(
            Counter(
                "introspect_redis_history_losses_total",
                "Redis histories this worker stopped vouching for (restart, failover, flush)",
            )
        )
        self.history_replays = LocalCounter(
            Counter(
                "introspect_redis_history_replays_total",
                "Replays of the change log into a Redis whose history was not vouched for",
            )
        )
        self.limit_uses = LocalCounter(
            Counter(
                "introspect_limit_uses_total",
                "Uses counted against rate limits and credits (the sum of admitted costs)",
            )
        )
        refused = Counter(
            "introspect_limit_refusals_total",
            "Introspection answers made inactive by an exhausted limit, by reason",
            ["reason"],
        )
        self.limit_refused_window = LocalCounter(refused.labels("window"))
        self.limit_refused_credits = LocalCounter(refused.labels("credits"))
        self.limit_unreconciled = LocalCounter(
            Counter(
                "introspect_limit_unreconciled_uses_total",
                "Window uses a worker granted itself while Redis was unreachable: the"
                " over-admission these may add is at most this",
            )
        )
        self.events_published = LocalCounter(
            Counter(
                "introspect_feed_events_published_total",
                "Revocation feed events recorded (each becomes one SET per receiver that sees it)",
            )
        )
        self.events_delivered = LocalCounter(
            Counter("introspect_feed_sets_delivered_total", "SETs delivered by /events polls")
        )
        # Not on the hot path: observed directly.
        self.event_lag = Histogram(
            "introspect_feed_delivery_lag_seconds",
            "From an event's write to a poll answer carrying it (each delivery)",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
        )
        # Revocation's propagation, once per change: from its publication (right after the
        # commit) until every listener of every instance acknowledged it, Redis's tombstones
        # included (or ACK_TIMEOUT, for a listener that did not).
        self.invalidation_acked = Histogram(
            "introspect_invalidation_seconds",
            "From a committed change's publication until every listener acknowledged it",
            buckets=_PROPAGATION_BUCKETS,
        )
        self._polls_waiting = Gauge(
            "introspect_feed_polls_waiting",
            "Long polls of /events parked, waiting for an event, summed over live workers",
            multiprocess_mode="livesum",
        )
        # A callable giving this worker's parked polls, read at each flush.
        self.polls_waiting: Callable[[], int] = lambda: 0
        self._pools = Gauge(
            "introspect_pool_connections",
            "Connections of each store pool by state, summed over live workers",
            ["pool", "state"],
            multiprocess_mode="livesum",
        )
        # name -> a callable giving (in use, idle) connections, read at each flush.
        self.pool_probes: dict[str, Callable[[], tuple[int, int]]] = {}
        self._counters = [
            self.local_hits,
            self.local_misses,
            self.redis_hits,
            self.redis_misses,
            self.redis_calls,
            self.pg_queries,
            self.invalidations_sent,
            self.history_losses,
            self.history_replays,
            self.invalidations_received,
            self.tokens_issued,
            self.limit_uses,
            self.limit_refused_window,
            self.limit_refused_credits,
            self.limit_unreconciled,
            self.events_published,
            self.events_delivered,
        ]
        # Counted since the last flush, per route.
        self._routes: dict[str, _RouteTally] = {}
        self._admin_refusals = Counter(
            "introspect_admin_auth_failures_total",
            "Admin API requests refused, by reason (missing, malformed, unknown, revoked,"
            " expired, insufficient_scope)",
            ["reason"],
        )
        # Counted since the last flush, per reason.
        self._refused: dict[str, int] = {}
        # Where a request's tail comes from when it is not the request: the loop was busy.
        self._gc_pause = Histogram(
            "introspect_gc_pause_seconds",
            "Collections of CPython's cyclic GC by generation, and how long each stopped the"
            " worker",
            ["generation"],
            buckets=_PAUSE_BUCKETS,
        )
        self._loop_lag = Histogram(
            "introspect_event_loop_lag_seconds",
            f"How late a timer due every {LAG_INTERVAL} s ran: what any request waiting on the"
            " event loop waited then",
            buckets=_PAUSE_BUCKETS,
        )
        self._gc_pauses = [_Tally(_PAUSE_BUCKETS) for _generation in range(3)]
        self._loop_lags = _Tally(_PAUSE_BUCKETS)
        self._gc_started = 0.0

    def request(self, route: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        tally = self._routes.get(route)
        if tally is None:
            tally = self._routes[route] = _RouteTally()
        statuses = tally.statuses
        statuses[status] = statuses.get(status, 0) + 1
        tally.buckets[bisect.bisect_left(_LATENCY_BUCKETS, seconds)] += 1
        tally.seconds += seconds

    def admin_refused(self, reason: str) -> None:
        """Count one admin API request refused for `reason` (one of a fixed few)."""
        self._refused[reason] = self._refused.get(reason, 0) + 1

    def gc_phase(self, phase: str, info: dict[str, int]) -> None:
        """A `gc.callbacks` hook: time each collection, by generation."""
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self._gc_pauses[info["generation"]].observe(time.perf_counter() - self._gc_started)

    async def probe_loop_lag(self) -> None:
        """Every LAG_INTERVAL, how much later than due a timer ran, until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + LAG_INTERVAL
            await asyncio.sleep(LAG_INTERVAL)
            self._loop_lags.observe(max(0.0, loop.time() - due))

    def flush(self) -> None:
        """Hand everything counted since the last flush to Prometheus."""
        for counter in self._counters:
            counter.flush()
        refused, self._refused = self._refused, {}
        for reason, count in refused.items():
            self._admin_refusals.labels(reason).inc(count)
        self._polls_waiting.set(self.polls_waiting())
        for pool, probe in self.pool_probes.items():
            in_use, idle = probe()
            self._pools.labels(pool, "in_use").set(in_use)
            self._pools.labels(pool, "idle").set(idle)
        routes, self._routes = self._routes, {}
        for route, tally in routes.items():
            for status, count in tally.statuses.items():
                self._requests.labels(route, str(status)).inc(count)
            tally.flush_into(self._latency.labels(route))
        for generation, pauses in enumerate(self._gc_pauses):
            pauses.flush_into(self._gc_pause.labels(str(generation)))
        self._loop_lags.flush_into(self._loop_lag)

    async def flush_forever(self) -> None:
        """Flush every FLUSH_INTERVAL seconds until cancelled, and once more then."""
        try:
            while True:
                await asyncio.sleep(FLUSH_INTERVAL)
                self.flush()
        finally:
            self.flush()


METRICS = Metrics()


# Renders run here, one at a time: reading every worker's files takes milliseconds that
# the event loop would otherwise spend not answering, and a flood of scrapes queues here.
_RENDERER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metrics-render")


async def render() -> tuple[bytes, str]:
    """The exposition text of every worker (multiprocess mode) or of this process.

    This process's counts are flushed on the event loop (they are plain
    integers the loop adds to); reading and formatting the values runs on a
    thread of its own.
    """
    METRICS.flush()
    body = await asyncio.get_running_loop().run_in_executor(_RENDERER, _exposition)
    return body, CONTENT_TYPE_LATEST


def _exposition() -> bytes:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


async def flushing(_app: object) -> AsyncIterator[None]:
    """An aiohttp cleanup context: the periodic flush, the GC's timing and the event loop's lag
    probe, for the life of the app."""
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(METRICS.flush_forever()), loop.create_task(METRICS.probe_loop_lag())]
    # One hook per process, whichever of its apps added it.
    hooked = METRICS.gc_phase not in gc.callbacks
    if hooked:
        gc.callbacks.append(METRICS.gc_phase)
    try:
        yield
    finally:
        if hooked:
            gc.callbacks.remove(METRICS.gc_phase)
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
