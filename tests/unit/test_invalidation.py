"""Invalidation: the client-record tombstones it writes, and its outbox form read back."""

from __future__ import annotations

import orjson

from introspect.cache import KEY_PREFIX, REVOKED_TTL, TOMBSTONE_TTL, Invalidation, client_key
from introspect.redis import Write


def test_a_client_change_tombstones_its_record_with_its_version_even_in_a_revocation() -> None:
    """A changed client's Redis record gets a tombstone of the change's version (not the
    inactive answer a revocation writes for credentials), and survives the outbox round trip."""
    inv = Invalidation(
        tombstones=[(b"h" * 32, 7)], records=[("client_a", 9)], clients=["client_a"], revoked=True
    )
    again = Invalidation.loads(inv.dumps())
    assert again == inv
    writes = again.writes()
    assert writes == [
        Write(KEY_PREFIX + b"h" * 32, 7, b"7|0", REVOKED_TTL * 1000),
        Write(KEY_PREFIX + client_key("client_a"), 9, b"9|T", TOMBSTONE_TTL * 1000),
    ]
    assert inv.message("n")["r"] == ["client_a"]


def test_a_change_logged_before_client_versions_evicts_and_writes_nothing_for_the_client() -> None:
    """An outbox row written before client records had versions still evicts the in-process
    record, and writes no tombstone it has no version for."""
    old = orjson.dumps({"t": [], "k": [], "r": ["client_a"], "c": [], "s": [], "all": False})
    inv = Invalidation.loads(old)
    assert inv.records == [("client_a", 0)]
    assert inv.writes() == []
    assert inv.message("n")["r"] == ["client_a"]
