"""LocalCache: when an in-process entry comes due to be read again, and what a lost cluster
primary drops."""

from __future__ import annotations

import math
import time

from hypothesis import given
from hypothesis import strategies as st
from redis.crc import REDIS_CLUSTER_HASH_SLOTS as SLOTS
from redis.crc import key_slot

from introspect.cache import (
    ANSWER,
    AUD,
    CLIENT_ID,
    KEY_PREFIX,
    REFRESH_AT,
    REFRESH_FROM,
    REFRESH_TO,
    SUB,
    LocalCache,
    answered,
    client_key,
    decode,
    inactive,
)

LIVE = answered(b"{}", {}, 1)


def usable(ttl: float = 10.0, size: int = 1000) -> LocalCache:
    """A cache in the state a subscribed, healthy listener keeps it in."""
    local = LocalCache(size=size, ttl=ttl)
    local.set_state(subscribed=True, healthy=True, source=b"server", vouched=b"server")
    local.fresh_until = math.inf
    return local


def test_an_entry_comes_due_once_late_in_its_life() -> None:
    """Hits before the refresh point change nothing; the first hit after it reports the key once."""
    local = usable()
    before = time.monotonic()
    local.put(b"k", LIVE, local.epoch, now=0)
    entry = local.get(b"k", before)
    assert entry is not None
    due_at = entry[REFRESH_AT]
    assert before + 10 * REFRESH_FROM <= due_at <= time.monotonic() + 10 * REFRESH_TO
    assert local.get(b"k", due_at - 0.01) is entry
    assert local.due == []
    served = local.get(b"k", due_at)  # still served: due is not expired
    assert served is not None
    assert served[:REFRESH_AT] == entry[:REFRESH_AT]
    assert local.due == [b"k"]
    assert local.get(b"k", due_at + 0.01) is served  # reported once
    assert local.due == [b"k"]


def test_refresh_points_are_spread() -> None:
    """Entries stored together come due at different times, so their refreshes do not bunch."""
    local = usable()
    for i in range(200):
        local.put(b"k%d" % i, LIVE, local.epoch, now=0)
    entries = [local.get(b"k%d" % i, 0.0) for i in range(200)]
    points = {round(entry[REFRESH_AT], 3) for entry in entries if entry is not None}
    assert len(points) > 150


def test_no_refresh_for_an_entry_cut_short_by_its_exp() -> None:
    """An entry whose in-process life ends at its exp never comes due: it ends for good."""
    local = usable()
    now = int(time.time())
    local.put(b"short", answered(b"{}", {"exp": now + 3}, 1), local.epoch, now=now)
    entry = local.get(b"short", time.monotonic() + 2.5)
    assert entry is not None
    assert entry[REFRESH_AT] == math.inf
    assert local.due == []


def test_clear_forgets_what_came_due() -> None:
    """After a possibly missed message nothing is read again on the old entries' behalf."""
    local = usable()
    local.put(b"k", LIVE, local.epoch, now=0)
    local.get(b"k", time.monotonic() + 9.5)
    assert local.due == [b"k"]
    local.clear()
    assert local.due == []


def answer(jti: str, client: str, aud: str) -> bytes:
    """A Redis value as the server writes it, for one access token of `client`."""
    body = (
        f'{{"active":true,"scope":"read","sub":"{client}","jti":"{jti}","kind":"access_token",'
        f'"client_id":"{client}","aud":"{aud}","exp":4102444800}}'
    )
    return b"7|" + body.encode()


def test_entries_of_one_client_share_its_id_subject_and_audiences() -> None:
    """Many cached entries of one client hold one copy of what they have in common."""
    one = decode(answer("tok_1", "client_A", "https://api"))
    two = decode(answer("tok_2", "client_A", "https://api"))
    other = decode(answer("tok_3", "client_B", "https://else"))
    assert one is not None
    assert two is not None
    assert other is not None
    assert one[CLIENT_ID] == "client_A"
    assert one[AUD] == ("https://api",)
    assert one[CLIENT_ID] is two[CLIENT_ID]
    assert one[SUB] is two[SUB]
    assert one[AUD] is two[AUD]
    assert other[CLIENT_ID] == "client_B"
    assert other[AUD] == ("https://else",)


def test_the_cache_is_usable_only_when_subscribed_to_the_vouched_server() -> None:
    """A subscription that reaches another server than the one whose history is vouched for
    leaves the in-process cache unusable; reaching the vouched one makes it usable, empty."""
    local = LocalCache(size=1000, ttl=10.0)
    local.set_state(subscribed=True, healthy=True, source=b"restarted", vouched=b"before")
    assert not local.usable
    local.set_state(vouched=b"restarted")
    assert local.usable
    assert len(local) == 0


def test_a_final_answer_has_no_age() -> None:
    """An inactive answer (unknown, revoked, expired) is final: it is still answered long after
    a live entry would have aged out, until the cache is cleared."""
    local = usable()
    local.put(b"dead", inactive(7), local.epoch, now=0)
    later = time.monotonic() + 10 * 86_400
    answer = local.get(b"dead", later)
    assert answer is not None
    assert answer[ANSWER] is None
    local.clear()
    assert local.get(b"dead", 0.0) is None


def test_final_answers_never_evict_live_entries() -> None:
    """A flood of unknown values fills the final answers' own bound, not the live entries'."""
    local = usable()
    local.put(b"live", LIVE, local.epoch, now=0)
    for i in range(3 * local.size):
        local.put(b"unknown%d" % i, inactive(), local.epoch, now=0)
    assert local.get(b"live", 0.0) is not None
    assert local.get(b"unknown%d" % (3 * local.size - 1), 0.0) is not None
    assert local.get(b"unknown0", 0.0) is None  # the oldest went first


def test_a_final_answer_obeys_messages_and_the_epoch() -> None:
    """A message naming the key drops its final answer (a change to it: a PATCH read it live
    while this worker read it expired); one read before a message is not stored."""
    local = usable()
    local.put(b"k", inactive(3), local.epoch, now=0)
    local.apply({"k": [b"k".hex()]})
    assert local.get(b"k", 0.0) is None
    epoch = local.epoch
    local.apply({"c": ["someone"]})
    local.put(b"k", inactive(3), epoch, now=0)
    assert local.get(b"k", 0.0) is None
    local.apply({"k": [b"k".hex()], "x": True})  # a revocation's message: final at once
    revoked = local.get(b"k", 0.0)
    assert revoked is not None
    assert revoked[ANSWER] is None


@given(st.lists(st.binary(min_size=1, max_size=8), min_size=1, max_size=40, unique=True))
def test_dropping_slots_drops_exactly_what_lives_in_them(keys: list[bytes]) -> None:
    """A cluster primary lost: the entries, final keys and client records whose Redis keys
    hash to its slots are dropped, every other one is kept."""
    local = usable()
    lost = (0, SLOTS // 2 - 1)
    for i, key in enumerate(keys):
        local.put(key, LIVE if i % 2 else inactive(), local.epoch, now=0)
        local.put_client(key.hex(), None, local.epoch)
    local.drop_slots([lost])
    for key in keys:
        inside = lost[0] <= key_slot(KEY_PREFIX + key) <= lost[1]
        assert (local.get(key, 0.0) is None) == inside
        record_inside = lost[0] <= key_slot(KEY_PREFIX + client_key(key.hex())) <= lost[1]
        assert local.get_client(key.hex(), 0.0)[0] != record_inside
