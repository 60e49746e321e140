"""The one codec between answers and cache entries: made from Postgres or read from Redis alike."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from introspect import rfc7662
from introspect.cache import ANSWER, KEY_ID, LIMITS, Entry, decode, encode
from introspect.store import Credential, now
from introspect.store.records import Limits, Refill, Window

ISSUER = "https://issuer.example"
# One instant for every example: a strategy reading the clock draws differently when replayed
# a second later (hypothesis's FlakyStrategyDefinition); live expiries lie an hour past it.
T0 = now()
_TEXT = st.text(min_size=1, max_size=12)


def _served(entry: Entry) -> tuple[object, ...]:
    """What serving an entry depends on (not the in-process bookkeeping)."""
    return entry[: LIMITS + 1]


_NAME = st.from_regex(r"[A-Za-z0-9_-]{1,32}", fullmatch=True)


@st.composite
def limits(draw: st.DrawFn, owner: str) -> Limits | None:
    """Limits an admin could set on the API key `owner`, or none."""
    if draw(st.booleans()):
        return None
    names = draw(st.lists(_NAME, max_size=4, unique=True))
    windows = tuple(
        Window(n, draw(st.integers(1, 10**9)), draw(st.integers(1, 86_400))) for n in names
    )
    credits = draw(st.booleans())
    refill = draw(st.none() | st.builds(Refill, st.integers(0, 10**12), st.integers(60, 10**7)))
    return Limits(
        owner=owner,
        windows=windows,
        credits=credits,
        generation=draw(st.integers(0, 2**40)) if credits else 0,
        refill=refill if credits else None,
    )


@st.composite
def credentials(draw: st.DrawFn, live: bool = True) -> Credential:
    t = T0
    credential_id = draw(_TEXT)
    kind = draw(st.sampled_from(["access_token", "api_key"]))
    return Credential(
        id=credential_id,
        kind=kind,
        format="opaque",
        hash=b"h" * 32,
        client_id=draw(st.none() | _TEXT),
        sub=draw(_TEXT),
        username=draw(st.none() | _TEXT),
        scopes=tuple(draw(st.lists(_TEXT, max_size=3))),
        audiences=tuple(draw(st.lists(_TEXT, max_size=3, unique=True))),
        iat=t - 10,
        nbf=t - draw(st.integers(0, 10)),
        exp=draw(st.none() | st.integers(t + 3600, t + 10**6)) if live else t - 1,
        revoked_at=None,
        metadata=draw(st.none() | st.dictionaries(_TEXT, _TEXT, max_size=2)),
        version=draw(st.integers(1, 2**40)),
        last_used_at=None,
        limits=draw(limits(f"api_key:{credential_id}")) if kind == "api_key" else None,
    )


@given(credentials())
def test_an_answer_read_back_from_redis_is_served_as_the_one_made_from_postgres(
    credential: Credential,
) -> None:
    """A live credential's entry and the entry decoded from its Redis value agree on every
    field serving depends on, the API key's id and limits included (and only for API keys)."""
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
