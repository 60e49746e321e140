"""Readiness: each store's state and the supervisor's, checked at most once a second per worker.

A readiness probe pings Postgres and Redis; a flood of `/readyz` must not
become a flood of pings, so each worker checks at most once per READY_TTL
and every call meanwhile (or while a check runs) gets that answer.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import asyncpg
from redis.exceptions import RedisError

from introspect import store
from introspect.redis import ClusterRedis
from introspect.service import Authority
from introspect.supervisor import Board

READY_TTL = 1.0


class Readiness:
    """One worker's readiness answer, computed at most once per READY_TTL (one check at a time)."""

    def __init__(self) -> None:
        self._answer: tuple[dict[str, Any], int] = ({}, 503)
        self._at = -math.inf
        self._checking: asyncio.Task[tuple[dict[str, Any], int]] | None = None

    async def answer(self, authority: Authority, board: Board | None) -> tuple[dict[str, Any], int]:
        """The readiness body and HTTP status: 503 without Postgres, else 200 (ok or degraded)."""
        if time.monotonic() - self._at < READY_TTL:
            return self._answer
        if self._checking is None:
            self._checking = asyncio.get_running_loop().create_task(self._check(authority, board))
        checking = self._checking
        try:
            return await asyncio.shield(checking)
        finally:
            if checking.done() and self._checking is checking:
                self._checking = None

    async def _check(self, authority: Authority, board: Board | None) -> tuple[dict[str, Any], int]:
        postgres, redis, nodes = await asyncio.gather(
            _postgres(authority), _redis(authority), _redis_nodes(authority)
        )
        body: dict[str, Any] = {"postgres": postgres, "redis": redis}
        if nodes is not None:
            body["redis_nodes"] = nodes
        degraded = redis != "ok"
        if board is not None:
            alive = board.alive()
            body["workers"] = {
                "alive": alive,
                "expected": board.expected,
                "restarts": board.restarts,
            }
            degraded = degraded or alive < board.expected
        if postgres != "ok":
            status, code = "unavailable", 503
        elif degraded:
            status, code = "degraded", 200
        else:
            status, code = "ok", 200
        self._answer = {"status": status, **body}, code
        self._at = time.monotonic()
        return self._answer


async def _postgres(authority: Authority) -> str:
    try:
        await store.ping(authority.pool)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
        return "unreachable"
    return "ok"


async def _redis_nodes(authority: Authority) -> dict[str, str] | None:
    """On a cluster: each primary (`host:port`), `reachable` or `unreachable`; else None."""
    redis = authority.cache.redis
    if not isinstance(redis, ClusterRedis):
        return None
    try:
        found = await redis.reachable()
    except (RedisError, OSError, TimeoutError):
        return {}  # no node told which primaries there are
    return {node: "reachable" if up else "unreachable" for node, up in found.items()}


async def _redis(authority: Authority) -> str:
    """`ok`, `unreachable`, or `replay pending`: reachable, but its history is not vouched
    for yet, and answers come from Postgres until the change log is written to it again
    (introspect/history.py)."""
    try:
        return await authority.cache.redis_state()
    except TimeoutError:
        return "unreachable"
