"""The RFC 8414 metadata document as served: built from Postgres, shared by concurrent GETs."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import cast

import asyncpg
import orjson

from introspect import rfc8414, store
from introspect.cache import Coalescer, LocalCache
from introspect.metrics import METRICS

# Seconds the discovery document is reused at most; an invalidation (every change to a
# client publishes one) ends it sooner.
METADATA_TTL = 5.0


@dataclass(frozen=True, slots=True)
class Built:
    """A discovery document, and when it stops being served: at `until`, or at a new epoch."""

    epoch: int
    until: float
    body: bytes


class Discovery:
    """The metadata document of `issuer`, rebuilt at most once per METADATA_TTL and epoch."""

    def __init__(self, pool: asyncpg.Pool, local: LocalCache, issuer: str) -> None:
        self.pool = pool
        self.local = local
        self.issuer = issuer
        self._built: Built | None = None
        # Concurrent GETs of discovery share one build.
        self._builds: Coalescer[None, bytes] = Coalescer(self._build)

    async def metadata(self) -> bytes:
        """The RFC 8414 document (its `scopes_supported` aggregates over every client), built
        at most once per METADATA_TTL and per invalidation received, whatever the GETs."""
        built = self._built
        if built is not None and built.epoch == self.local.epoch and time.monotonic() < built.until:
            return built.body
        # The build always answers (see _build): never None.
        return cast(bytes, await self._builds.get(None))

    async def _build(self, _wanted: list[None]) -> dict[None, bytes]:
        epoch, until = self.local.epoch, time.monotonic() + METADATA_TTL
        METRICS.pg_queries.inc()
        scopes = await store.scopes_in_use(self.pool)
        body = orjson.dumps(rfc8414.metadata(self.issuer, scopes))
        self._built = Built(epoch, until, body)
        return {None: body}
