"""A worker's bounded memories (the in-process cache's live entries and final answers, the
memo of keyed hashes) each evict their oldest insertion to make room, and nothing else.

What an eviction costs once they are full is measured by `python -m bench.churn`."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from introspect import credentials
from introspect.cache import answered, inactive
from introspect.credentials import Kind
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


@given(st.sampled_from([Kind.ACCESS_TOKEN, Kind.API_KEY]), st.integers(0, 40), st.text(max_size=3))
def test_the_hash_of_a_well_formed_credential_is_made_and_memoized_in_memory(
    kind: Kind, at: int, noise: str
) -> None:
    """A well-formed opaque credential gets its keyed hash with no lookup, memoized; a value
    altered anywhere (a failed checksum), or JWT-shaped and not verified here, gets none and
    is not memoized (the lookup answers it)."""
    memo = _memo()
    token = credentials.generate(kind)
    key = memo.key_of(token)
    assert key == credentials.keyed_hash(b"secret", token)
    assert memo.hashed[token] == key
    altered = token[:at] + noise + token[at + 1 :]
    if credentials.parse(altered) is None:
        assert memo.key_of(altered) is None
        assert altered not in memo.hashed
    jwt = "eyJhbGciOiJFUzI1NiJ9.e30.sig"
    assert memo.key_of(jwt) is None
    assert jwt not in memo.hashed
