"""The one codec between answers and cache entries: made from Postgres or read from Redis alike."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from introspect import rfc7662
from introspect.cache import ANSWER, KEY_ID, Entry, decode, encode
from introspect.store import Credential, now

ISSUER = "https://issuer.example"
_TEXT = st.text(min_size=1, max_size=12)


def _served(entry: Entry) -> tuple[object, ...]:
    """What serving an entry depends on (not the in-process bookkeeping)."""
    return entry[: KEY_ID + 1]


@st.composite
def credentials(draw: st.DrawFn, live: bool = True) -> Credential:
    # Offsets from now, so that what is drawn does not hang on the clock (hypothesis replays).
    lifetime = draw(st.none() | st.integers(60, 10**6))
    t = now()
    return Credential(
        id=draw(_TEXT),
        kind=draw(st.sampled_from(["access_token", "api_key"])),
        format="opaque",
        hash=b"h" * 32,
        client_id=draw(st.none() | _TEXT),
        sub=draw(_TEXT),
        username=draw(st.none() | _TEXT),
        scopes=tuple(draw(st.lists(_TEXT, max_size=3))),
        audiences=tuple(draw(st.lists(_TEXT, max_size=3, unique=True))),
        iat=t - 10,
        nbf=t - draw(st.integers(0, 10)),
        exp=(None if lifetime is None else t + lifetime) if live else t - 1,
        revoked_at=None,
        metadata=draw(st.none() | st.dictionaries(_TEXT, _TEXT, max_size=2)),
        version=draw(st.integers(1, 2**40)),
        last_used_at=None,
    )


@given(credentials())
def test_an_answer_read_back_from_redis_is_served_as_the_one_made_from_postgres(
    credential: Credential,
) -> None:
    """A live credential's entry and the entry decoded from its Redis value agree on every
    field serving depends on, the API key's id included (and only for API keys)."""
    made = rfc7662.entry_for(credential, ISSUER)
    read = decode(encode(made))
    assert read is not None
    assert _served(read) == _served(made)
    assert made[KEY_ID] == (credential.id if credential.kind == "api_key" else None)


@given(credentials(live=False))
def test_a_dead_credential_is_cached_inactive_with_its_version(credential: Credential) -> None:
    """An expired credential's entry is inactive, keeps its version, and reads back so."""
    made = rfc7662.entry_for(credential, ISSUER)
    read = decode(encode(made))
    assert read is not None
    assert made[ANSWER] is None
    assert _served(read) == _served(made)
