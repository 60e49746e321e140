"""The SDK's cache and the revocation feed, against a real server: answers are reused only
while the feed is followed, a revocation reaches a busy app at once, and a lost feed (server
restarted) drops the cache so no stale 200 follows."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time

import pytest

from introspect import admin
from introspect.config import Settings
from introspect.service import Authority
from introspect_sdk import ClientAuth, Guard
from tests.helpers import Registered, eventually, free_port
from tests.sdk.conftest import (
    FRAMEWORKS,
    Example,
    Issuer,
    access_token,
    example_app,
    issuer_of,
    revoke,
)

IN_FLIGHT = 200
# Generous: the bench measures the distribution (target p99 < 250 ms).
REVOKED_WITHIN = 5.0


async def cached(example: Example, token: str) -> None:
    """Wait (bounded) until the app answers `token` from its cache."""
    await example.following()

    async def hit() -> bool:
        before = example.guard.metrics.hits
        assert await example.status("/items", token) == 200
        return example.guard.metrics.hits > before

    await eventually(hit, within=10)


async def test_answers_are_reused_while_following_the_feed(
    example: Example, issuer: Issuer, reader: Registered
) -> None:
    """Once the feed is followed, a token's answer and an unknown token's are served from
    the cache: one introspection each for many requests."""
    token = await access_token(issuer.running, reader)
    await cached(example, token)
    misses = example.guard.metrics.misses
    for _ in range(5):
        assert await example.status("/items", token) == 200
        assert await example.status("/items", "itok_unknown") == 401
    assert example.guard.metrics.misses <= misses + 1  # the unknown token's first answer


async def test_without_the_feed_nothing_is_cached(
    issuer: Issuer, rs: Registered, reader: Registered
) -> None:
    """A guard that does not follow the feed asks introspect for every request."""
    auth = ClientAuth.with_secret(rs.client_id, rs.secret)
    async with Guard(issuer.url, auth, follow_feed=False) as guard:
        token = await access_token(issuer.running, reader)
        for _ in range(3):
            assert (await guard.introspect(token)).answer.active
        assert (guard.metrics.hits, guard.metrics.misses, len(guard.cache)) == (0, 3, 0)


async def test_concurrent_misses_make_one_request(
    issuer: Issuer, rs: Registered, reader: Registered
) -> None:
    """Fifty concurrent lookups of an uncached token share one introspection."""
    auth = ClientAuth.with_secret(rs.client_id, rs.secret)
    async with Guard(issuer.url, auth) as guard:
        token = await access_token(issuer.running, reader)
        outcomes = await asyncio.gather(*(guard.introspect(token) for _ in range(50)))
        assert all(o.answer.active for o in outcomes)
        assert guard.metrics.coalesced == 49


async def test_revocation_reaches_a_busy_app_at_once(
    example: Example, issuer: Issuer, reader: Registered
) -> None:
    """With IN_FLIGHT requests in flight on a cached token, the app answers 401 within
    REVOKED_WITHIN seconds of /revoke returning, and never 200 again after its first 401."""
    token = await access_token(issuer.running, reader)
    await cached(example, token)
    seen: list[tuple[float, float, int]] = []  # (sent, answered, status)
    stop = asyncio.Event()

    async def hammer() -> None:
        while not stop.is_set():
            sent = time.monotonic()
            status = await example.status("/items", token)
            seen.append((sent, time.monotonic(), status))
            # In-process ASGI calls answered from the cache never suspend: let others run.
            await asyncio.sleep(0)

    tasks = [asyncio.create_task(hammer()) for _ in range(IN_FLIGHT)]
    try:

        async def busy() -> bool:
            return len(seen) >= IN_FLIGHT

        await eventually(busy, within=30)
        await revoke(issuer.running, reader, token)
        returned = time.monotonic()

        async def refused() -> bool:
            return any(sent > returned and status == 401 for sent, _, status in seen)

        await eventually(refused, within=REVOKED_WITHIN)
        count = len(seen)

        async def more() -> bool:
            return len(seen) >= count + IN_FLIGHT

        await eventually(more, within=30)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    first = min(answered for _, answered, status in seen if status == 401)
    assert {status for sent, _, status in seen if sent > first} == {401}
    assert {status for _, _, status in seen} <= {200, 401}


async def lost(guard: Guard) -> None:
    """Wait (bounded) until the guard has noticed that its feed is gone."""

    async def not_following() -> bool:
        return guard.feed is not None and not guard.feed.following

    await eventually(not_following, within=10)


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_feed_lost_drops_the_cache(
    framework: str, own_issuer: Issuer, authority: Authority, rs: Registered, reader: Registered
) -> None:
    """A cached token revoked while this server is down (by another node): the SDK dropped its
    cache when the feed went, so it answers 503 rather than a stale 200, and 401 once the
    server is back."""
    guard = Guard(own_issuer.url, ClientAuth.with_secret(rs.client_id, rs.secret))
    example = await example_app(framework, guard)
    try:
        token = await access_token(own_issuer.running, reader)
        await cached(example, token)
        await own_issuer.stop()
        await lost(guard)
        assert len(guard.cache) == 0
        assert guard.metrics.drops == 1
        await admin.revoke(authority, "test", {"token": token})
        assert await example.status("/items", token) == 503
        await own_issuer.start()
        assert await example.status("/items", token) == 401
    finally:
        for close in example.closers:
            await close()


class Relay:
    """A TCP relay on loopback in front of a server, whose connections can be cut."""

    def __init__(self, port: int, target: int) -> None:
        self.port = port
        self.target = target
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def open(self) -> None:
        """Accept and relay connections."""
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def cut(self) -> None:
        """Stop accepting, and reset every relayed connection."""
        assert self.server is not None
        self.server.close()
        for writer in list(self.writers):
            writer.transport.abort()
        await self.server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.writers -= {writer, up_writer}


async def test_connection_cut_drops_the_cache(
    settings: Settings, rs: Registered, reader: Registered
) -> None:
    """Connections to introspect cut (a relay resetting them and refusing new ones): the SDK
    drops its cache, answers 503 for a token revoked meanwhile, and 401 once it can ask."""
    relay_port = free_port()
    issuer = await issuer_of(settings, public_port=relay_port)
    relay = Relay(relay_port, issuer.port)
    await relay.open()
    guard = Guard(issuer.url, ClientAuth.with_secret(rs.client_id, rs.secret))
    example = await example_app("aiohttp", guard)
    try:
        token = await access_token(issuer.running, reader)
        await cached(example, token)
        await relay.cut()
        await lost(guard)
        assert len(guard.cache) == 0
        await revoke(issuer.running, reader, token)
        assert await example.status("/items", token) == 503
        await relay.open()
        assert await example.status("/items", token) == 401
    finally:
        for close in example.closers:
            await close()
        await relay.cut()
        await issuer.stop()


@pytest.mark.parametrize("selector", ["client_id", "sub", "id"])
async def test_events_by_client_subject_or_key_evict(
    example: Example, issuer: Issuer, reader: Registered, selector: str
) -> None:
    """A cached API key dies at the app when everything of its client or subject is revoked,
    or the key itself (the events name client_id, sub, jti)."""
    sub = "user-" + secrets.token_hex(4)
    body = {"client_id": reader.client_id, "sub": sub, "scopes": ["read"]}
    made = await admin.create_api_key(issuer.running.authority, "test", body)
    key = made["key"]
    await cached(example, key)
    value = {"client_id": reader.client_id, "sub": sub, "id": made["id"]}[selector]
    await admin.revoke(issuer.running.authority, "test", {selector: value})

    async def refused() -> bool:
        return await example.status("/items", key) == 401

    await eventually(refused, within=REVOKED_WITHIN)


async def test_a_changed_key_is_seen_at_once(
    example: Example, issuer: Issuer, reader: Registered
) -> None:
    """An API key whose scopes are changed (PATCH) is evicted: the app sees the new scopes."""
    body = {"client_id": reader.client_id, "scopes": ["read"]}
    made = await admin.create_api_key(issuer.running.authority, "test", body)
    await cached(example, made["key"])
    await admin.update_api_key(issuer.running.authority, "test", made["id"], {"scopes": []})

    async def refused() -> bool:
        return await example.status("/items", made["key"]) == 403

    await eventually(refused, within=REVOKED_WITHIN)


async def test_a_silent_feed_drops_the_cache(
    issuer: Issuer, rs: Registered, reader: Registered
) -> None:
    """A feed that answers nothing for two long-poll periods counts as lost (here the guard
    is told a period is 0.25 s, while the server parks an idle poll for up to 30 s): the
    cache is dropped though no poll failed."""
    auth = ClientAuth.with_secret(rs.client_id, rs.secret)
    async with Guard(issuer.url, auth, long_poll=0.25) as guard:
        token = await access_token(issuer.running, reader)

        async def stored() -> bool:
            await guard.introspect(token)
            return len(guard.cache) == 1

        await eventually(stored, within=10)

        async def silent() -> bool:
            return guard.feed is not None and not guard.feed.following

        await eventually(silent, within=5)
        assert len(guard.cache) == 0
        assert guard.metrics.feed_errors == 0
