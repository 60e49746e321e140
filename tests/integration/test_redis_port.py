"""The Redis port's contract, on both implementations: one real Valkey, and a real
3+3 Valkey Cluster.

What the cache relies on from any implementation: versioned writes, lookups
and fills under the history marker only, the replay memory, publishing with
receivers counted, acknowledgement lists (see introspect/redis/port.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import replace
from typing import cast

import asyncpg
import pytest
from redis.crc import key_slot

from introspect.history import ShardedHistory
from introspect.redis import LeanRedis, Redis, Write
from introspect.redis.cluster import ClusterRedis, Layout, compose
from introspect.redis.port import HistoryPort, HistoryUnknown, ServerChanged
from introspect.store import now
from tests.conftest import Stores

WAIT = 5.0  # an upper bound for things that should happen at once, never a measured duration


def unique(name: str) -> bytes:
    """A key no other test uses."""
    return f"test-port:{name}:{secrets.token_hex(8)}".encode()


@pytest.fixture(params=["lean", "cluster"])
def redis(request: pytest.FixtureRequest, migrated: Stores) -> Iterator[Redis]:
    """The port on the session's Valkey, or on the session's cluster (histories vouched for
    by conftest), closed at the end."""
    port: Redis
    if request.param == "lean":
        port = LeanRedis(migrated.redis_url)
    else:
        port = ClusterRedis(request.getfixturevalue("cluster_url"))
    with contextlib.closing(port):
        yield port


async def vouched(redis: Redis) -> tuple[bytes, bytes]:
    """The history marker and the identity the read path names: the session Valkey's, or
    every primary's of the session cluster (adopted from conftest's vouching)."""
    if isinstance(redis, LeanRedis):
        server, marker = await redis.watch()
        assert marker is not None
        return marker, server.identity
    assert isinstance(redis, ClusterRedis)
    history = ShardedHistory(redis, cast(asyncpg.Pool, None), _no_replay, window=0)
    await history.vouch()
    history.use(history.ready())
    assert history.value is not None
    assert history.identity is not None
    return history.value, history.identity


async def _no_replay(_since: int, _identity: bytes) -> int:
    raise AssertionError("conftest vouched for the session's histories: nothing to replay")


async def test_a_versioned_write_never_replaces_a_newer_version(redis: Redis) -> None:
    """An older version is refused, a newer one wins, and a tombstone gives way to a fill of
    its own version only."""
    marker, identity = await vouched(redis)
    key = unique("versions")
    await redis.write([Write(key, 5, b"5|T", 60_000)])
    await redis.write([Write(key, 4, b"4|old", 60_000, marker)], identity)
    assert await redis.lookup([key], marker, identity) == [b"5|T"]
    await redis.write([Write(key, 5, b"5|new", 60_000, marker)], identity)
    await redis.write([Write(key, 5, b"5|again", 60_000, marker)], identity)
    assert await redis.lookup([key], marker, identity) == [b"5|new"]
    await redis.write([Write(key, 6, b"6|0", 60_000)])
    assert await redis.lookup([key, unique("absent")], marker, identity) == [b"6|0", None]


async def test_reads_and_fills_under_another_history_are_refused(redis: Redis) -> None:
    """A lookup or a reader's fill naming a marker Redis does not hold raises HistoryUnknown
    and writes nothing; a batch naming another server is not sent at all."""
    marker, identity = await vouched(redis)
    key = unique("marker")
    with pytest.raises(HistoryUnknown):
        await redis.lookup([key], b"another history", identity)
    with pytest.raises(HistoryUnknown):
        await redis.write([Write(key, 1, b"1|x", 60_000, b"another history")], identity)
    with pytest.raises(ServerChanged):
        await redis.write([Write(key, 1, b"1|x", 60_000, marker)], b"another:server")
    assert await redis.lookup([key], marker, identity) == [None]


async def test_the_replay_memory_remembers_once_per_history(redis: Redis) -> None:
    """A key is remembered the first time only, and never under another marker."""
    marker, identity = await vouched(redis)
    key = unique("jti")
    assert await redis.remember_once(key, now() + 60, marker, identity)
    assert not await redis.remember_once(key, now() + 60, marker, identity)
    with pytest.raises(HistoryUnknown):
        await redis.remember_once(unique("jti"), now() + 60, b"another history", identity)


async def test_a_window_grants_blocks_of_what_is_free_and_never_more_than_its_limit(
    redis: Redis,
) -> None:
    """Blocks shrink with what is free, never pass the limit, and the use reads back."""
    tag = secrets.token_hex(8)
    key, other = (f"test-port:{{{tag}}}:{n}".encode() for n in ("w", "other"))
    granted = [await redis.take_window(key, 100, 1, 4, 60_000) for _ in range(30)]
    assert granted[0] == (25, 75)
    assert sum(block for block, _ in granted) == 100
    assert granted[-1] == (0, 0)
    assert await redis.take_window(other, 10, 11, 4, 60_000) == (0, 10)
    assert await redis.window_use([key, other]) == [100, 0]


async def test_a_publication_counts_its_receivers_and_acknowledgements_come_back(
    redis: Redis,
) -> None:
    """A subscriber receives what is published after the writes of the same round trip, and
    the nonce it acknowledges is popped from the publisher's list."""
    channel, inbox, key = unique("channel").decode(), unique("acks").decode(), unique("written")
    received: asyncio.Queue[bytes] = asyncio.Queue()
    subscription = redis.subscription()
    await subscription.open([channel], lambda _channel, data: received.put_nowait(data))
    try:
        assert subscription.server is not None
        assert subscription.server.identity == (await redis.server()).identity
        count = await redis.publish(channel, b"hello", [Write(key, 1, b"1|T", 60_000)])
        assert count == 1
        assert await asyncio.wait_for(received.get(), WAIT) == b"hello"
        marker, identity = await vouched(redis)
        assert await redis.lookup([key], marker, identity) == [b"1|T"]
    finally:
        subscription.close()
    await redis.acknowledge(inbox, "nonce-1", 10)
    assert await redis.acknowledgements(inbox, 0.5, 10) == [b"nonce-1"]


async def test_the_marker_is_the_one_the_history_keeps(redis: Redis) -> None:
    """`watch` reads the marker key the history protocol writes, with the server's identity
    (on a cluster, each primary's own)."""
    await vouched(redis)
    nodes: list[HistoryPort] = [redis] if isinstance(redis, LeanRedis) else []
    if isinstance(redis, ClusterRedis):
        nodes = [redis.node(address) for address in await redis.reachable()]
    for node in nodes:
        server, marker = await node.watch()
        held, locked = await node.history_state(server.identity)
        assert held == marker
        assert marker is not None
        assert marker.startswith(server.identity + b"|")
        assert not locked
    await redis.ping()


async def test_a_cluster_lookup_answers_the_keys_of_a_primary_not_vouched_for_as_absent(
    cluster_url: str,
) -> None:
    """Keys of a primary the marker and identity do not name are not read (Postgres answers
    them), nor written by a reader's fill; the named primaries answer theirs."""
    with contextlib.closing(ClusterRedis(cluster_url)) as redis:
        marker, identity = await vouched(redis)
        _, (first, one), (_, other) = await keys_of_two_primaries(redis, "per-primary")
        await redis.write([Write(one, 1, b"1|a", 60_000), Write(other, 1, b"1|b", 60_000)])
        only_first = (
            compose({first: vouched_as(marker, first)}),
            compose({first: vouched_as(identity, first)}),
        )
        assert only_first[0] is not None
        assert only_first[1] is not None
        assert await redis.lookup([one, other], *only_first) == [b"1|a", None]
        fills = [Write(k, 2, b"2|new", 60_000, only_first[0]) for k in (one, other)]
        await redis.write(fills, only_first[1])
        assert await redis.lookup([one, other], marker, identity) == [b"2|new", b"1|b"]


async def keys_of_two_primaries(
    redis: ClusterRedis, prefix: str
) -> tuple[Layout, tuple[str, bytes], tuple[str, bytes]]:
    """The cluster's layout, and a new key served by each of its first two primaries (with
    the primary's address)."""
    layout = await redis.refresh()
    first, second = (s.address for s in layout.shards[:2])
    keys: dict[str | None, bytes] = {}
    while first not in keys or second not in keys:
        key = unique(prefix)
        keys.setdefault(redis.address_of(key), key)
    return layout, (first, keys[first]), (second, keys[second])


def vouched_as(value: bytes, address: str) -> bytes:
    """One primary's part of what the read path names."""
    return dict(item.split(b"=", 1) for item in value.split(b","))[address.encode()]


async def test_a_cluster_lookup_sent_to_a_node_that_no_longer_serves_a_key_reads_it_absent(
    cluster_url: str,
) -> None:
    """With a layout gone stale (a key's slot moved to another vouched primary meanwhile), the
    node asked answers MOVED for that key: it is absent (Postgres answers it), nothing is lost,
    the layout is asked again, and the next lookup reads it where it lives now; the keys the
    node does serve are read as usual."""
    with contextlib.closing(ClusterRedis(cluster_url)) as redis:
        marker, identity = await vouched(redis)
        layout, (_, here), (_, moved) = await keys_of_two_primaries(redis, "stale-layout")
        await redis.write([Write(here, 1, b"1|here", 60_000), Write(moved, 1, b"1|moved", 60_000)])
        # The stale view: `moved`'s slot said to be served by the first primary.
        owner = bytearray(layout.owner)
        owner[key_slot(moved)] = owner[key_slot(here)]
        redis.layout = replace(layout, owner=bytes(owner))
        assert await redis.lookup([here, moved], marker, identity) == [b"1|here", None]
        asked = redis._refreshing  # the layout asked again, in the background
        assert asked is not None
        async with asyncio.timeout(WAIT):
            assert await asked == layout
        assert await redis.lookup([here, moved], marker, identity) == [b"1|here", b"1|moved"]
