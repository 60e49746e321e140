"""The pure parts of vouching for a Redis history: the marker, the server's identity, eviction."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from introspect.history import EvictingRedis, Marker, refuse_eviction
from introspect.redis.resp import Server

SERVER = b"# Server\r\nredis_version:7.2.4\r\nrun_id:abc123\r\ntcp_port:6379\r\n"
REPLICATION = b"# Replication\r\nrole:master\r\nmaster_replid:def456\r\nmaster_replid2:000\r\n"
MEMORY = b"# Memory\r\nused_memory:1000\r\nmaxmemory_policy:noeviction\r\n"


def test_info_names_the_server_and_its_history() -> None:
    """run_id and master_replid together identify a server process and replication history."""
    server = Server.from_info(SERVER, REPLICATION, MEMORY)
    assert server == Server("abc123", "def456", "master", "noeviction")
    assert server.identity == b"abc123:def456"


def test_info_without_run_id_is_refused() -> None:
    """A server that does not tell its run id cannot be told apart from a restarted one."""
    with pytest.raises(Exception, match="run_id"):
        Server.from_info(b"# Server\r\nredis_version:7\r\n", REPLICATION, MEMORY)


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-ttl", "allkeys-random"])
def test_evicting_policies_are_refused(policy: str) -> None:
    """Every policy but noeviction may drop a revocation's answer; the message says what to set."""
    with pytest.raises(EvictingRedis, match="maxmemory-policy noeviction"):
        refuse_eviction(Server("a", "b", "master", policy))


def test_noeviction_is_accepted() -> None:
    """noeviction keeps every key until it expires or is deleted."""
    refuse_eviction(Server("a", "b", "master", "noeviction"))


@given(
    identity=st.binary(min_size=1).filter(lambda b: b"|" not in b),
    started_at=st.integers(min_value=0, max_value=2**62),
    nonce=st.text(alphabet="0123456789abcdef", min_size=1, max_size=32),
)
def test_a_marker_reads_back_as_written(identity: bytes, started_at: int, nonce: str) -> None:
    """Encoding then decoding a marker gives it back."""
    marker = Marker(identity, started_at, nonce)
    assert Marker.decode(marker.encode()) == marker


@given(st.one_of(st.none(), st.binary()))
def test_any_stored_value_decodes_to_a_marker_or_none(raw: bytes | None) -> None:
    """Whatever the key holds (absent, foreign, garbage), decoding never raises."""
    found = Marker.decode(raw)
    assert found is None or isinstance(found, Marker)
