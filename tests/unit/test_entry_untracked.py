"""Cached entries are invisible to CPython's cyclic GC: a full cache costs a collection nothing.

A full collection walks every object the collector tracks; 100,000 cached
entries that it tracked made each one a pause of tens of milliseconds, seen
as the tail of every request (issue 19, `python -m bench.gc_pause`).
"""

from __future__ import annotations

import gc

from hypothesis import given

from introspect import rfc7662
from introspect.cache import LIMITS, decode, encode
from introspect.store import Credential, now
from tests.unit.test_entry_codec import ISSUER, credentials
from tests.unit.test_local_cache import usable

FILLED = 20_000


def test_a_filled_cache_adds_no_tracked_objects() -> None:
    """Filling the cache with live, revoked and unknown entries (final answers apart), made
    from Postgres rows and read from Redis values, leaves the collector tracking as many
    objects as before."""
    local = usable(size=FILLED)
    t = now()
    gc.collect()
    before = len(gc.get_objects())
    for i in range(FILLED):
        client = f"client_{i % 50}"
        body = (
            f'{{"active":true,"scope":"read","sub":"{client}","jti":"tok_{i}",'
            f'"kind":"{"api_key" if i % 3 else "access_token"}","client_id":"{client}",'
            f'"aud":["https://a","https://b"],"exp":{t + 3600},"nbf":{t}}}'
        ).encode()
        raw = b"%d|%s" % (i + 1, body) if i % 10 else b"%d|0" % (i + 1)
        entry = decode(raw) if i % 7 else rfc7662.entry_for(None, ISSUER)
        assert entry is not None
        local.put(i.to_bytes(32, "big"), entry, local.epoch, t)
    assert all(local.get(i.to_bytes(32, "big"), 0.0) is not None for i in range(FILLED))
    gc.collect()
    added = len(gc.get_objects()) - before
    # The cache's dicts and the shared audiences of the 50 clients, not one per entry.
    assert added < FILLED / 100, added


@given(credentials())
def test_a_cached_live_entry_is_untracked_and_served_unchanged(credential: Credential) -> None:
    """Whatever a live credential holds (metadata, audiences, an API key's id), its cached
    entry is untracked once the collections of its generation passed, and reads back from
    Redis the same; only an API key with limits of its own keeps its entry tracked (its Limits
    object: such keys are few).

    (Untracked by the first collection it survives when its audience tuple already was: a
    collection checks the tuples it keeps in an order of its own, and one checked before the
    new audience tuple it holds is untracked by the next collection of its generation.)"""
    local = usable(size=FILLED)
    made = rfc7662.entry_for(credential, ISSUER)
    local.put(b"k", made, local.epoch, now())
    gc.collect(0)
    gc.collect(1)
    cached = local.get(b"k", 0.0)
    assert cached is not None
    assert gc.is_tracked(cached) == (cached[LIMITS] is not None)
    assert decode(encode(cached)) == made


@given(credentials(live=False))
def test_a_cached_dead_entry_is_untracked(credential: Credential) -> None:
    """An expired credential's entry is untracked once a collection passed."""
    made = rfc7662.entry_for(credential, ISSUER)
    gc.collect(0)
    assert not gc.is_tracked(made)
