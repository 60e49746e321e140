"""A worker's bounded memories (the in-process cache's live entries and final answers, the
memo of keyed hashes) each evict their oldest insertion to make room, and nothing else.

What an eviction costs once they are full is measured by `python -m bench.churn`."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from introspect.cache import answered, inactive
from introspect.lookup import CredentialLookup
from tests.unit.test_local_cache import usable

SIZE = 4
LIVE = answered(b"{}", {}, 1)


def _model(keys: list[int]) -> list[int]:
    """What a memory of SIZE holds after putting `keys` in turn: a key put again keeps its
    place; a new one, when full, pushes out the oldest insertion."""
    held: list[int] = []
    for key in keys:
        if key not in held:
            if len(held) == SIZE:
                held.pop(0)
            held.append(key)
    return held


def _memo() -> CredentialLookup:
    # (Remembering touches neither store: none is given.)
    return CredentialLookup(None, None, (b"secret",), "iss", None, memo_size=SIZE)  # type: ignore[arg-type]


_KEYS = st.lists(st.integers(0, 9), max_size=40)


@given(_KEYS)
def test_the_cache_keeps_the_newest_insertions(keys: list[int]) -> None:
    """Live entries, and final answers in their own bound, hold exactly the SIZE newest
    insertions."""
    local = usable(size=SIZE)
    for key in keys:
        local.put(b"live%d" % key, LIVE, local.epoch, now=0)
        local.put(b"dead%d" % key, inactive(), local.epoch, now=0)
    for key in range(10):
        held = key in _model(keys)
        assert (local.get(b"live%d" % key, 0.0) is not None) == held
        assert (local.get(b"dead%d" % key, 0.0) is not None) == held


@given(_KEYS)
def test_the_memo_keeps_the_newest_insertions(keys: list[int]) -> None:
    """The memo of keyed hashes holds exactly the SIZE newest insertions, in order."""
    memo = _memo()
    for key in keys:
        memo.remember(f"token{key}", b"%d" % key)
    assert list(memo.hashed) == [f"token{key}" for key in _model(keys)]


def test_remembering_a_credential_held_again_evicts_nothing() -> None:
    """A full memo told again of a credential it holds keeps every other one (it used to
    evict the oldest to make room for one that needed none)."""
    memo = _memo()
    for key in range(SIZE):
        memo.remember(f"token{key}", b"k")
    memo.remember("token2", b"k")
    assert sorted(memo.hashed) == [f"token{key}" for key in range(SIZE)]
