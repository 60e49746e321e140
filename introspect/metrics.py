"""Prometheus metrics, correct across worker processes.

`introspect serve` points `PROMETHEUS_MULTIPROC_DIR` at a fresh folder
before its workers start, so every worker writes its own files and a scrape
of any worker sums them all. Without it (tests, a single process) the
default registry is used. Label children are bound once here, so the hot
path pays one increment, never a label lookup.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5)


class Metrics:
    """Every metric of the server, with its label children bound up front."""

    def __init__(self) -> None:
        self.requests = Counter(
            "introspect_requests_total", "HTTP requests by route and status", ["route", "status"]
        )
        self.latency = Histogram(
            "introspect_request_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=_LATENCY_BUCKETS,
        )
        hits = Counter("introspect_cache_hits_total", "Cache hits by layer", ["layer"])
        misses = Counter("introspect_cache_misses_total", "Cache misses by layer", ["layer"])
        self._hits = {layer: hits.labels(layer) for layer in ("local", "redis")}
        self._misses = {layer: misses.labels(layer) for layer in ("local", "redis")}
        self.redis_calls = Counter("introspect_redis_calls_total", "Redis commands sent")
        self.pg_queries = Counter("introspect_pg_queries_total", "Postgres queries run")
        self.invalidations_sent = Counter(
            "introspect_invalidations_sent_total", "Invalidation messages published"
        )
        self.invalidations_received = Counter(
            "introspect_invalidations_received_total", "Invalidation messages applied"
        )
        self.tokens_issued = Counter("introspect_tokens_issued_total", "Access tokens issued")

    def cache_hit(self, layer: str) -> None:
        """Count a hit in `layer` (local or redis)."""
        self._hits[layer].inc()

    def cache_miss(self, layer: str) -> None:
        """Count a miss in `layer` (local or redis)."""
        self._misses[layer].inc()


METRICS = Metrics()


def render() -> tuple[bytes, str]:
    """The exposition text of every worker (multiprocess mode) or of this process."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
