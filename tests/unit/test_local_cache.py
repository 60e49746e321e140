"""LocalCache's refresh bookkeeping: when an in-process entry comes due to be read again."""

from __future__ import annotations

import math
import time

from introspect.cache import REFRESH_FROM, REFRESH_TO, Entry, LocalCache


def usable(ttl: float = 10.0) -> LocalCache:
    """A cache in the state a subscribed, healthy listener keeps it in."""
    local = LocalCache(size=1000, ttl=ttl)
    local.set_state(subscribed=True, healthy=True)
    local.fresh_until = math.inf
    return local


def test_an_entry_comes_due_once_late_in_its_life() -> None:
    """Hits before the refresh point change nothing; the first hit after it reports the key once."""
    local = usable()
    before = time.monotonic()
    local.put(b"k", Entry(answer=b"{}"), local.epoch, now=0)
    entry = local.get(b"k", before)
    assert entry is not None
    assert before + 10 * REFRESH_FROM <= entry.refresh_at <= time.monotonic() + 10 * REFRESH_TO
    assert local.get(b"k", entry.refresh_at - 0.01) is entry
    assert local.due == []
    due_at = entry.refresh_at
    assert local.get(b"k", due_at) is entry  # still served: due is not expired
    assert local.get(b"k", due_at + 0.01) is entry
    assert local.due == [b"k"]


def test_refresh_points_are_spread() -> None:
    """Entries stored together come due at different times, so their refreshes do not bunch."""
    local = usable()
    for i in range(200):
        local.put(b"k%d" % i, Entry(answer=b"{}"), local.epoch, now=0)
    entries = [local.get(b"k%d" % i, 0.0) for i in range(200)]
    points = {round(entry.refresh_at, 3) for entry in entries if entry is not None}
    assert len(points) > 150


def test_no_refresh_for_an_entry_cut_short_by_its_exp() -> None:
    """An entry whose in-process life ends at its exp never comes due: it ends for good."""
    local = usable()
    now = int(time.time())
    local.put(b"short", Entry(answer=b"{}", exp=now + 3), local.epoch, now=now)
    entry = local.get(b"short", time.monotonic() + 2.5)
    assert entry is not None
    assert entry.refresh_at == math.inf
    assert local.due == []


def test_clear_forgets_what_came_due() -> None:
    """After a possibly missed message nothing is read again on the old entries' behalf."""
    local = usable()
    local.put(b"k", Entry(answer=b"{}"), local.epoch, now=0)
    local.get(b"k", time.monotonic() + 9.5)
    assert local.due == [b"k"]
    local.clear()
    assert local.due == []
