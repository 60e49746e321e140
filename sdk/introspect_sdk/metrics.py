"""Counters of the SDK's cache and feed, for the application to read or export as it likes."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class Metrics:
    """Plain counters, updated in place by the guard and its feed (one event loop, no locks)."""

    hits: int = 0  # answers served from the cache
    misses: int = 0  # lookups that asked introspect (coalesced callers included)
    coalesced: int = 0  # misses that waited on another caller's request for the same credential
    stored: int = 0  # answers put in the cache
    evictions: int = 0  # entries removed by feed events
    capacity_evictions: int = 0  # entries removed to stay within max_entries
    drops: int = 0  # times the whole cache was dropped (gap, feed lost or silent)
    unavailable: int = 0  # lookups refused with 503: introspect could not be asked
    events: int = 0  # feed events applied
    feed_polls: int = 0  # feed polls answered
    feed_errors: int = 0  # feed polls that failed (connection, status, signature)
    feed_lag: float = 0.0  # seconds from the newest applied event's `iat` to its application
    feed_lag_max: float = 0.0  # the largest such lag seen

    def snapshot(self) -> dict[str, float]:
        """The counters as a plain dict."""
        return asdict(self)
