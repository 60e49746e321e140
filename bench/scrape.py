"""The server's own counters, read from its /metrics before and after a scenario.

Work per request (Redis calls, Postgres queries, cache hits by layer) comes
from the difference of two scrapes divided by the requests the scenario
made, as counted by the server itself.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families

from bench.procs import get

Sample = tuple[str, frozenset[tuple[str, str]]]


# Histograms whose every series is kept: where a latency tail comes from (the handlers' own
# time, beside the generator's latency, tells work from waiting).
PAUSES = (
    "introspect_gc_pause_seconds",
    "introspect_event_loop_lag_seconds",
    "introspect_request_seconds",
    "introspect_invalidation_seconds",
)


async def scrape(host: str, port: int) -> dict[Sample, float]:
    """Every counter sample of the server (the `_total` series) and the series of PAUSES, by
    name and labels."""
    status, body = await get(host, port, "/metrics")
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}")
    out: dict[Sample, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name.endswith("_total") or family.name in PAUSES:
                out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


class Delta:
    """The change of the server's counters between two scrapes."""

    def __init__(self, before: Mapping[Sample, float], after: Mapping[Sample, float]) -> None:
        self.values = {key: value - before.get(key, 0.0) for key, value in after.items()}

    def total(self, name: str, **labels: str) -> float:
        """The sum over the series of `name` whose labels include `labels`."""
        wanted = set(labels.items())
        return sum(v for (n, lab), v in self.values.items() if n == name and wanted <= lab)

    def requests(self, route: str) -> float:
        """Requests the server answered on `route`, any status."""
        return self.total("introspect_requests_total", route=route)

    def per_request(self, route: str) -> dict[str, float | None]:
        """Work per request on `route`: Redis calls, Postgres queries, cache hits and misses."""
        count = self.requests(route)

        def per(value: float) -> float | None:
            return value / count if count else None

        local_hits = self.total("introspect_cache_hits_total", layer="local")
        redis_hits = self.total("introspect_cache_hits_total", layer="redis")
        return {
            "requests": count,
            "redis_calls": per(self.total("introspect_redis_calls_total")),
            "pg_queries": per(self.total("introspect_pg_queries_total")),
            "local_hits": per(local_hits),
            "redis_hits": per(redis_hits),
            "redis_misses": per(self.total("introspect_cache_misses_total", layer="redis")),
            "uncached": None if not count else max(0.0, 1 - (local_hits + redis_hits) / count),
        }

    def pauses(self, route: str) -> dict[str, float | None]:
        """Full collections of the GC (how many, their mean pause in ms), the event loop's lag
        p99 and the p99 of the handlers' own time on `route` (ms, each the upper bound of its
        bucket), over the workers."""
        full = self.total("introspect_gc_pause_seconds_count", generation="2")
        seconds = self.total("introspect_gc_pause_seconds_sum", generation="2")
        return {
            "gc_full": full,
            "gc_full_ms": seconds / full * 1000 if full else None,
            "lag_p99_ms": self.quantile("introspect_event_loop_lag_seconds", 0.99),
            "handler_p99_ms": self.quantile("introspect_request_seconds", 0.99, route=route),
        }

    def quantile(self, histogram: str, q: float, **labels: str) -> float | None:
        """The upper bound (ms) of the bucket holding quantile `q` of `histogram` (its series
        whose labels include `labels`)."""
        wanted = set(labels.items())
        buckets: dict[float, float] = {}
        for (name, labels_of), value in self.values.items():
            if name == histogram + "_bucket" and wanted <= labels_of:
                bound = float(dict(labels_of)["le"])
                buckets[bound] = buckets.get(bound, 0.0) + value
        total = buckets.get(float("inf"), 0.0)
        if not total:
            return None
        return next(b * 1000 for b in sorted(buckets) if buckets[b] >= q * total)
