"""UnknownIds: the per-worker memory of client ids found unknown, apart from known clients."""

from __future__ import annotations

import time

from introspect.client_records import UnknownIds
from introspect.ids import has_id_shape, new_id
from introspect.store import Client
from tests.unit.test_local_cache import usable


def test_the_oldest_unknown_id_makes_room_and_known_clients_are_untouched() -> None:
    """Past its size the least recently asked id goes; the known clients' records stay."""
    local = usable()
    unknown = UnknownIds(local, size=3, ttl=60.0)
    known = Client("client_known", "k", (), (), False, 60, "opaque", None, False, 0, 0)
    local.put_client("client_known", known, local.epoch)
    for client_id in ("a", "b", "c"):
        unknown.add(client_id, local.epoch)
    now = time.monotonic()
    assert unknown.holds("a", now)  # asked again: now the most recent
    unknown.add("d", local.epoch)
    assert [unknown.holds(i, now) for i in ("a", "b", "c", "d")] == [True, False, True, True]
    assert local.get_client("client_known", now) == (True, known)


def test_an_unknown_id_is_forgotten_after_its_ttl() -> None:
    """An entry stops counting once its short life is over."""
    local = usable()
    unknown = UnknownIds(local, size=10, ttl=2.0)
    unknown.add("a", local.epoch)
    now = time.monotonic()
    assert unknown.holds("a", now + 1.9)
    assert not unknown.holds("a", now + 2.1)


def test_a_lookup_that_raced_an_invalidation_stores_nothing() -> None:
    """A miss read before an invalidation arrived (the epoch moved) is not remembered."""
    local = usable()
    unknown = UnknownIds(local, size=10, ttl=60.0)
    epoch = local.epoch
    local.apply({"n": "x", "r": ["a"]})
    unknown.add("a", epoch)
    assert not unknown.holds("a", time.monotonic())


def test_nothing_is_answered_while_the_in_process_cache_is_not_trusted() -> None:
    """Without a fresh heartbeat (or a subscription) the memory is not read."""
    local = usable()
    unknown = UnknownIds(local, size=10, ttl=60.0)
    unknown.add("a", local.epoch)
    local.fresh_until = 0.0
    assert not unknown.holds("a", time.monotonic())


def test_only_ids_of_our_shape_pass() -> None:
    """The shape check accepts what new_id makes and nothing near it."""
    assert has_id_shape(new_id("client"), "client")
    assert not has_id_shape(new_id("key"), "client")
    assert not has_id_shape("client_" + "a" * 21, "client")
    assert not has_id_shape("client_" + "a" * 21 + "-", "client")
    assert not has_id_shape("client_" + "a" * 21 + "\u0661", "client")  # a non-ASCII digit
