"""The invalidation listener: every worker applies every change's message, and says so."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable

import orjson
from redis.exceptions import RedisError

from introspect import acks
from introspect.cache.announce import ACK_TIMEOUT
from introspect.cache.invalidation import CHANNEL
from introspect.cache.local import LocalCache
from introspect.metrics import METRICS
from introspect.redis.port import Redis, Subscription

log = logging.getLogger(__name__)

# How long a heartbeat vouches for the in-process cache: under ACK_TIMEOUT (see Listener).
FRESHNESS = 0.9 * ACK_TIMEOUT
HEARTBEAT_INTERVAL = 0.1


class Listener:
    """Subscribes to invalidations, applies them to the in-process cache, acknowledges them.

    It also vouches for the cache's freshness with heartbeats: every
    HEARTBEAT_INTERVAL it publishes its monotonic time on a channel only it
    subscribes to, on the connection that carries the invalidations. Redis
    delivers a connection's messages in the order it received them, so a
    heartbeat sent at t and read back proves every invalidation that reached
    Redis before t has been applied; the cache is then read until t +
    FRESHNESS. A change call returns at the latest ACK_TIMEOUT after its
    message reached Redis, and FRESHNESS < ACK_TIMEOUT: so a worker that
    neither applied nor acknowledged it (its loop stalled, its connection
    silently dead) has no heartbeat recent enough, and answers from Redis
    and Postgres, which the writer updated before publishing.
    """

    def __init__(
        self, redis: Redis, local: LocalCache, on_change: Callable[[], None] | None = None
    ) -> None:
        # Subscribed on a connection of its own, which never reconnects silently: a drop must
        # be seen (promise 4).
        self._redis = redis
        self.local = local
        # Called after each invalidation applied, and when the subscription is lost (the
        # revocation feed's wake-up).
        self.on_change = on_change
        # Only this listener subscribes to it: its heartbeats come back on its connection.
        self.heartbeat_channel = f"introspect:heartbeat:{os.urandom(8).hex()}".encode()
        # Set once subscribed and a first heartbeat came back: the cache is usable.
        self.subscribed = asyncio.Event()
        # How many times the subscription was (re)established, and the current one.
        self.subscriptions = 0
        self.subscription: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._acks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Run the subscription loop in the background."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop listening and close the connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._acks:
            await asyncio.gather(*self._acks, return_exceptions=True)

    async def _run(self) -> None:
        delay = 0.05
        while True:
            subscription = self.subscription = self._redis.subscription()
            beating: asyncio.Task[None] | None = None
            try:
                lost = await subscription.open(
                    [CHANNEL, self.heartbeat_channel.decode()], self._on_message
                )
                # Messages may have been missed before this (re)subscription: start empty.
                # The cache is usable only if this is the server whose history is vouched for.
                self.local.set_state(subscribed=False)
                server = subscription.server
                self.local.set_state(
                    subscribed=True, source=None if server is None else server.identity
                )
                self.subscriptions += 1
                beating = asyncio.get_running_loop().create_task(self._beat())
                delay = 0.05
                await lost
                log.warning("invalidation subscription lost")
            except (RedisError, OSError) as exc:
                log.warning("invalidation subscription failed: %s", type(exc).__name__)
            finally:
                if beating is not None:
                    beating.cancel()
                self._lost()
                subscription.close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _lost(self) -> None:
        self.local.set_state(subscribed=False)
        self.local.fresh_until = 0.0
        self.subscribed.clear()
        if self.on_change is not None:
            self.on_change()

    async def _beat(self) -> None:
        """Publish this process's monotonic time to the heartbeat channel, every interval."""
        failing = False
        while True:
            try:
                await self._redis.publish(self.heartbeat_channel, repr(time.monotonic()).encode())
            except (RedisError, OSError) as exc:
                if not failing:  # once per streak, not ten times a second
                    log.warning("heartbeats not sent: %s", type(exc).__name__)
                failing = True
            else:
                failing = False
            await asyncio.sleep(HEARTBEAT_INTERVAL)

    def _on_message(self, channel: bytes, data: bytes) -> None:
        if channel == self.heartbeat_channel:
            # Every invalidation published before this heartbeat reached Redis came
            # before it on this connection, and is applied: fresh for FRESHNESS more.
            with contextlib.suppress(ValueError):
                self.local.fresh_until = float(data) + FRESHNESS
                self.subscribed.set()
            return
        try:
            body = orjson.loads(data)
            nonce = str(body["n"])
            self.local.apply(body)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            # Not ours: whoever can publish on the channel could evict anything anyway.
            log.warning("ignored a malformed invalidation message")
            return
        METRICS.invalidations_received.inc()
        if self.on_change is not None:
            self.on_change()
        task = asyncio.get_running_loop().create_task(self._acknowledge(nonce))
        self._acks.add(task)
        task.add_done_callback(self._acks.discard)

    async def _acknowledge(self, nonce: str) -> None:
        key = acks.list_key(nonce)
        if key is None:  # not made by a Collector: pushed nowhere
            log.warning("ignored an invalidation with a malformed nonce")
            return
        try:
            await self._redis.acknowledge(key, nonce, acks.LIST_TTL)
        except (RedisError, OSError) as exc:
            log.warning("could not acknowledge an invalidation: %s", type(exc).__name__)
