"""The pure parts of the cluster port and its configuration: node URLs, hash tags, layouts."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from introspect.config import ConfigError, load_settings
from introspect.redis.cluster import Layout, node_url, tag_for
from introspect.redis.port import LOCK, MARKER

SLOTS = 16384


def slots_reply(bounds: list[int]) -> list[list[object]]:
    """A CLUSTER SLOTS reply: consecutive ranges ending at `bounds`, one primary each
    (port 7000 + its index), the first primary's host left empty as a lone node does."""
    reply: list[list[object]] = []
    start = 0
    for i, end in enumerate(bounds):
        host = b"" if i == 0 else b"127.0.0.1"
        reply.append([start, end, [host, 7000 + i, b"id%d" % i], [b"127.0.0.1", 8000 + i, b"r"]])
        start = end + 1
    return reply


@st.composite
def layouts(draw: st.DrawFn) -> list[int]:
    cuts = draw(st.lists(st.integers(0, SLOTS - 2), min_size=0, max_size=5, unique=True))
    return [*sorted(cuts), SLOTS - 1]


@given(layouts())
def test_every_key_and_each_shards_marker_map_to_the_shard_serving_its_slot(
    bounds: list[int],
) -> None:
    """A layout read from CLUSTER SLOTS maps every slot to the primary that serves it, and
    each primary's marker and lock keys hash to a slot of that very primary."""
    layout = Layout.of(slots_reply(bounds), "10.0.0.1")
    assert [s.port for s in layout.shards] == [7000 + i for i in range(len(bounds))]
    assert layout.shards[0].host == "10.0.0.1"
    starts = [0, *(end + 1 for end in bounds[:-1])]
    for i, (start, end) in enumerate(zip(starts, bounds, strict=True)):
        assert layout.shards[i].ranges == ((start, end),)
        for key in (layout.shards[i].marker, layout.shards[i].lock):
            assert start <= key_slot(key) <= end
            assert layout.shard(key) == i
    assert layout.shards[0].marker.startswith(MARKER)
    assert layout.shards[0].lock.startswith(LOCK)


@given(st.integers(0, SLOTS - 1))
def test_a_tag_is_found_for_any_slot(slot: int) -> None:
    """`tag_for` finds a hash tag for any slot a shard serves."""
    tag = tag_for(lambda s: s == slot)
    assert key_slot(b"x" + tag) == slot


def test_a_node_url_keeps_the_seeds_credentials_and_options() -> None:
    seed = "rediss://user:p%40ss@seed.example:6379/0?ssl_cert_reqs=none"
    assert node_url(seed, "10.0.0.7", 7001) == (
        "rediss://user:p%40ss@10.0.0.7:7001/0?ssl_cert_reqs=none"
    )
    assert node_url("redis://seed:6379", "h", 1) == "redis://h:1"


def env(**values: str) -> dict[str, str]:
    return {"INTROSPECT_DATA_DIR": str(Path("/nonexistent-introspect")), **values}


def test_a_cluster_needs_a_seed_and_each_seed_is_checked() -> None:
    """INTROSPECT_REDIS_CLUSTER=true takes comma-separated seeds; without a URL, or with a
    seed that is not redis:// or rediss://, it is refused naming the variable."""
    secret = {"INTROSPECT_SECRET": "s" * 32}
    with pytest.raises(ConfigError, match="INTROSPECT_REDIS_URL"):
        load_settings(env(INTROSPECT_REDIS_CLUSTER="true", **secret))
    with pytest.raises(ConfigError, match="INTROSPECT_REDIS_URL"):
        load_settings(
            env(
                INTROSPECT_REDIS_CLUSTER="true",
                INTROSPECT_REDIS_URL="redis://a:1,unix:///tmp/r.sock",
                **secret,
            )
        )
    settings = load_settings(
        env(
            INTROSPECT_REDIS_CLUSTER="true",
            INTROSPECT_REDIS_URL="redis://:pw@a:1, redis://:pw@b:2",
            INTROSPECT_DATABASE_URL="postgresql://x@db/x",
            **secret,
        )
    )
    assert settings.redis_cluster
    assert "pw" not in repr(settings)
    single = load_settings(
        env(
            INTROSPECT_REDIS_URL="unix:///tmp/r.sock",
            INTROSPECT_DATABASE_URL="postgresql://x@db/x",
            **secret,
        )
    )
    assert not single.redis_cluster
