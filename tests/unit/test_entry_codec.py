"""The one codec between answers and cache entries: made from Postgres or read from Redis alike."""

from __future__ import annotations

import dataclasses

import orjson
from hypothesis import given
from hypothesis import strategies as st

from introspect import rfc7662
from introspect.cache import ANSWER, HEAD, KEY_ID, LIMITS, Entry, answer_of, decode, encode
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


@given(credentials(), st.dictionaries(_TEXT, _TEXT, max_size=3))
def test_an_entry_serves_its_answer_byte_for_byte_whatever_its_members_order(
    credential: Credential, extra: dict[str, str]
) -> None:
    """An entry keeps its answer in two parts (a shared one and its own) and serves exactly
    the bytes it was made from: for the answers made here, and for a Redis value whose
    members come in another order (an earlier version's), whose strings hold `,"sub":`, or
    which has no `sub` at all."""
    made = rfc7662.entry_for(credential, ISSUER)
    assert answer_of(made) == orjson.dumps(rfc7662.active_answer(credential, ISSUER))
    body = orjson.loads(answer_of(made))
    reordered = orjson.dumps({"sub": body.pop("sub"), **extra, **body, ',"sub":': "x"})
    for answer in (reordered, orjson.dumps(body)):
        read = decode(b"%d|%s" % (credential.version, answer))
        assert read is not None
        assert answer_of(read) == answer


def test_the_part_of_an_answer_many_credentials_share_is_held_once() -> None:
    """Two credentials of one client, scope, kind and audience share their answers' first
    part: one object, whether the entry was made from Postgres or read from Redis."""
    first = Credential(
        id="tok_1", kind="access_token", format="opaque", hash=b"h" * 32, client_id="app",
        sub="app", username=None, scopes=("read",), audiences=("https://api.example",),
        iat=T0, nbf=T0, exp=T0 + 10**6, revoked_at=None, metadata=None, version=1,
        last_used_at=None,
    )  # fmt: skip
    second = dataclasses.replace(first, id="tok_2", sub="someone", exp=T0 + 2 * 10**6)
    read = decode(encode(rfc7662.entry_for(second, ISSUER)))
    assert read is not None
    entries = [rfc7662.entry_for(first, ISSUER), rfc7662.entry_for(second, ISSUER), read]
    assert len({answer_of(e) for e in entries}) == 2
    assert len({id(e[HEAD]) for e in entries}) == 1
    for entry in entries:
        own = entry[ANSWER]
        assert own is not None
        assert len(own) < len(answer_of(entry)) / 2
