"""RFC 7662 introspection: the answer's shape, and the one decision in its two steps.

Pure: memory and the stores are dicts here, no server. The same facts held in
memory (the synchronous step, `from_memory`) or only in the stores (the async
tail, `complete`) must give the same answer, the same refusal and the same
noted use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from introspect import rfc7662
from introspect.cache import CLIENT_ID, EXP, NBF, Entry, answer_of, inactive
from introspect.errors import InvalidClient, InvalidRequest, OAuth2Error, UnauthorizedClient
from introspect.store import Client, Credential, now
from tests.unit import test_rfc6749 as rfc6749_tests

ISSUER = "https://issuer.example"
AUTH = "Basic cmVzb3VyY2U6c2VjcmV0"
TOKEN = "iat_presented"
KEY = b"k" * 32
OWNER = "client_owner"


def a_client(
    client_id: str = "client_rs",
    *,
    audiences: tuple[str, ...] = (),
    can_introspect: bool = True,
    disabled: bool = False,
) -> Client:
    """A registered client (test_rfc6749's, renamed and changed)."""
    return rfc6749_tests.a_client(
        client_id=client_id,
        audiences=audiences,
        can_introspect=can_introspect,
        disabled=disabled,
    )


def a_credential(**changes: Any) -> Credential:
    """A live access token of OWNER, with `changes`."""
    t = now()
    values: dict[str, Any] = {
        "id": "tok_a",
        "kind": "access_token",
        "format": "opaque",
        "hash": KEY,
        "client_id": OWNER,
        "sub": OWNER,
        "username": None,
        "scopes": ("read", "write"),
        "audiences": ("https://api",),
        "iat": t - 10,
        "nbf": t - 10,
        "exp": t + 3600,
        "revoked_at": None,
        "metadata": None,
        "version": 1,
        "last_used_at": None,
    }
    return Credential(**(values | changes))


class Memo(dict[str, bytes]):
    """The memo of keyed hashes, counting its probes."""

    probes = 0

    def get(self, key: str, default: Any = None) -> Any:
        """dict.get, counted."""
        self.probes += 1
        return super().get(key, default)


@dataclass
class Local:
    """This process's remembered callers and client records (rfc7662.InProcess)."""

    callers: dict[str, Client] = field(default_factory=dict)
    owners: dict[str, Client | None] = field(default_factory=dict)

    def recall(self, authorization: str, mono: float) -> Client | None:
        """The remembered caller of `authorization`."""
        return self.callers.get(authorization)

    def remember(self, authorization: str, client: Client) -> None:
        """Remember the caller of `authorization`."""
        self.callers[authorization] = client

    def get_client(self, client_id: str, mono: float) -> tuple[bool, Client | None]:
        """(held, record) of a client."""
        return client_id in self.owners, self.owners.get(client_id)


@dataclass
class Entries:
    """This process's cache entries by keyed hash (rfc7662.Entries)."""

    by_key: dict[bytes, Entry] = field(default_factory=dict)

    def cached(self, key: bytes, mono: float) -> Entry | None:
        """The entry held for `key`."""
        return self.by_key.get(key)


@dataclass
class Usage:
    """The uses noted (rfc7662.Usage)."""

    noted: list[Entry] = field(default_factory=list)

    def note_use(self, entry: Entry) -> None:
        """Note a use."""
        self.noted.append(entry)


@dataclass
class Worker:
    """A worker's memory over the stores (rfc7662.Stores): `registered` are the callers
    authentication accepts, `stored` the entries Redis and Postgres give for each presented
    credential, `clients` the client records they hold."""

    local: Local = field(default_factory=Local)
    hashed: Memo = field(default_factory=Memo)
    cache: Entries = field(default_factory=Entries)
    usage: Usage = field(default_factory=Usage)
    registered: dict[str, Client] = field(default_factory=dict)
    stored: dict[str, Entry] = field(default_factory=dict)
    clients: dict[str, Client] = field(default_factory=dict)
    lookups: list[tuple[str, bytes | None]] = field(default_factory=list)

    def key_of(self, token: str) -> bytes | None:
        """None: this fake hashes nothing itself (`hashed` holds what it knows)."""
        return None

    async def authenticate(self, authorization: str | None, params: dict[str, str]) -> Client:
        """The registered caller of `authorization`, else invalid_client."""
        client = None if authorization is None else self.registered.get(authorization)
        if client is None:
            raise InvalidClient("client authentication failed")
        return client

    async def lookup(self, token: str, key: bytes | None) -> Entry:
        """The stored entry of `token` (inactive when unknown)."""
        self.lookups.append((token, key))
        return self.stored.get(token, inactive())

    async def get_client(self, client_id: str) -> Client | None:
        """The stored record of a client."""
        return self.clients.get(client_id)


def warm(caller: Client, entry: Entry, owner: Client | None, **stores: Any) -> Worker:
    """A worker whose memory holds the caller, the credential's hash and entry, its owner."""
    worker = cold(caller, entry, owner)
    worker.local.callers[AUTH] = caller
    worker.local.owners[OWNER] = owner
    worker.hashed[TOKEN] = KEY
    worker.cache.by_key[KEY] = entry
    return worker


def cold(caller: Client, entry: Entry, owner: Client | None) -> Worker:
    """A worker whose memory holds nothing: every fact is in the stores."""
    worker = Worker(registered={AUTH: caller}, stored={TOKEN: entry})
    if owner is not None:
        worker.clients[OWNER] = owner
    return worker


def live() -> Entry:
    """The entry of a live access token of OWNER."""
    return rfc7662.entry_for(a_credential(), ISSUER)


async def full(worker: Worker, params: dict[str, str]) -> bytes:
    """The answer through both steps, as the view runs them."""
    answer = rfc7662.from_memory(worker, AUTH, params)
    if isinstance(answer, rfc7662.Answer):
        return answer.body
    return (await rfc7662.complete(worker, AUTH, params, answer))[1].body


# --- the answer's shape (§2.2 and SPEC) -------------------------------------------------


def test_an_active_answer_holds_every_member_spec_names() -> None:
    """A live credential answers active with scope, client_id, sub, aud, iss, times, jti,
    token_type and kind; username and metadata when set."""
    credential = a_credential(username="ann", metadata={"plan": "pro"})
    answer = rfc7662.active_answer(credential, ISSUER)
    assert answer == {
        "active": True,
        "scope": "read write",
        "client_id": OWNER,
        "sub": OWNER,
        "aud": "https://api",
        "iss": ISSUER,
        "exp": credential.exp,
        "iat": credential.iat,
        "nbf": credential.nbf,
        "jti": "tok_a",
        "token_type": "Bearer",
        "kind": "access_token",
        "username": "ann",
        "metadata": {"plan": "pro"},
    }


def test_several_audiences_answer_a_list_and_a_key_without_expiry_has_no_exp() -> None:
    """`aud` is a string for one audience and a list for several; no `exp` for a
    non-expiring API key, no `client_id` for one issued to a subject alone."""
    credential = a_credential(
        kind="api_key", client_id=None, sub="ann", audiences=("a", "b"), exp=None
    )
    answer = rfc7662.active_answer(credential, ISSUER)
    assert answer["aud"] == ["a", "b"]
    assert "exp" not in answer
    assert "client_id" not in answer
    assert answer["kind"] == "api_key"


def test_the_inactive_answer_is_exactly_active_false() -> None:
    """Every inactive case answers the same bytes, with no hint of why (§2.2)."""
    assert orjson.loads(rfc7662.INACTIVE) == {"active": False}


# --- the decision ----------------------------------------------------------------------


async def test_a_warm_request_is_answered_from_memory_alone() -> None:
    """Caller, hash, entry and owner in memory: the step answers, with no lookup."""
    entry, owner = live(), a_client(OWNER)
    worker = warm(a_client(), entry, owner)
    answer = rfc7662.from_memory(worker, AUTH, {"token": TOKEN})
    assert answer == rfc7662.Answer(answer_of(entry), entry)
    assert worker.lookups == []
    assert worker.usage.noted == [entry]


async def test_an_unknown_caller_is_left_to_the_tail_which_authenticates() -> None:
    """Memory that does not know the caller says so (None); the tail refuses a stranger."""
    worker = warm(a_client(), live(), a_client(OWNER))
    assert rfc7662.from_memory(worker, "Basic c3RyYW5nZXI6eA==", {"token": TOKEN}) is None
    assert rfc7662.from_memory(worker, None, {"token": TOKEN}) is None
    with pytest.raises(InvalidClient):
        await rfc7662.complete(worker, "Basic c3RyYW5nZXI6eA==", {"token": TOKEN})


@pytest.mark.parametrize("make", [warm, cold])
async def test_permission_is_checked_before_the_token(make: Any) -> None:
    """A caller that may not introspect is 403 even without a token; with permission, a
    missing token is 400: from memory and from the stores alike."""
    barred = make(a_client(can_introspect=False), live(), a_client(OWNER))
    with pytest.raises(UnauthorizedClient):
        await full(barred, {})
    allowed = make(a_client(), live(), a_client(OWNER))
    with pytest.raises(InvalidRequest):
        await full(allowed, {"token_type_hint": "access_token"})


async def test_an_owner_memory_lacks_is_read_then_decides() -> None:
    """With the owner's record missing from memory, the step hands its entry to the tail,
    which reads the record: a disabled owner makes the credential inactive."""
    entry = live()
    worker = warm(a_client(), entry, a_client(OWNER, disabled=True))
    del worker.local.owners[OWNER]
    pending = rfc7662.from_memory(worker, AUTH, {"token": TOKEN})
    assert isinstance(pending, rfc7662.Pending)
    assert pending.entry is entry
    _caller, answer = await rfc7662.complete(worker, AUTH, {"token": TOKEN}, pending)
    assert answer == rfc7662.INACTIVE_ANSWER
    assert worker.lookups == []
    assert worker.usage.noted == []


async def test_the_memo_is_probed_once_on_a_miss() -> None:
    """A memoized hash whose entry left memory: one probe of the memo for the whole request,
    and the tail looks up by that hash without computing it again."""
    worker = warm(a_client(), live(), a_client(OWNER))
    worker.cache.by_key.clear()
    assert await full(worker, {"token": TOKEN}) == answer_of(worker.stored[TOKEN])
    assert worker.hashed.probes == 1
    assert worker.lookups == [(TOKEN, KEY)]


async def test_a_caller_authenticated_by_the_tail_probes_the_memo_once() -> None:
    """A caller memory does not remember: the memo is probed once, after authentication."""
    worker = cold(a_client(), live(), a_client(OWNER))
    assert await full(worker, {"token": TOKEN}) == answer_of(worker.stored[TOKEN])
    assert worker.hashed.probes == 1
    assert worker.lookups == [(TOKEN, None)]


# --- the two steps agree ----------------------------------------------------------------

AUDIENCES = st.sampled_from(
    [(), ("https://api",), ("https://other",), ("https://other", "https://api")]
)


@st.composite
def facts(draw: st.DrawFn) -> tuple[Client, Entry, Client | None, dict[str, str]]:
    """A caller, the entry of what it presents, the owner's record, the request parameters."""
    caller = a_client(audiences=draw(AUDIENCES), can_introspect=draw(st.booleans()))
    state = draw(st.sampled_from(["unknown", "revoked", "live", "expired", "not yet", "api key"]))
    t = now()
    if state == "unknown":
        entry = rfc7662.entry_for(None, ISSUER)
    elif state == "revoked":
        entry = rfc7662.entry_for(a_credential(revoked_at=t - 5), ISSUER)
    elif state == "api key":
        credential = a_credential(
            kind="api_key",
            exp=draw(st.sampled_from([None, t + 600])),
            client_id=draw(st.sampled_from([None, OWNER])),
            audiences=draw(AUDIENCES),
        )
        entry = rfc7662.entry_for(credential, ISSUER)
    else:
        entry = rfc7662.entry_for(a_credential(audiences=draw(AUDIENCES)), ISSUER)
        # Cached while live; since then expired, or not valid before a time still to come.
        if state == "expired":
            entry = (*entry[:EXP], t - draw(st.integers(2, 10_000)), *entry[NBF:])
        elif state == "not yet":
            entry = (*entry[:NBF], t + draw(st.integers(2, 10_000)), *entry[CLIENT_ID:])
    owner = draw(st.sampled_from([a_client(OWNER), a_client(OWNER, disabled=True), None]))
    params = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "token": st.just(TOKEN),
                "token_type_hint": st.sampled_from(sorted(rfc7662.HINTS)),
            },
        )
    )
    return caller, entry, owner, params


async def outcome(worker: Worker, params: dict[str, str], *, step_only: bool) -> Any:
    """The answer, or the class of the error, and the uses noted; from the step alone if
    `step_only` (None when it leaves the rest to the tail)."""
    try:
        if step_only:
            answer = rfc7662.from_memory(worker, AUTH, params)
            result: Any = answer.body if isinstance(answer, rfc7662.Answer) else None
        else:
            result = await full(worker, params)
    except OAuth2Error as exc:
        result = type(exc)
    return result, worker.usage.noted


@given(facts(), st.booleans(), st.booleans(), st.booleans())
async def test_memory_and_the_stores_decide_alike(
    facts: tuple[Client, Entry, Client | None, dict[str, str]],
    memoized: bool,
    cached: bool,
    owner_held: bool,
) -> None:
    """Whatever the facts and however much of them memory holds, the synchronous step
    (where it answers or refuses) and the two steps together answer what the async tail
    decides from the stores alone, and note the same use."""
    caller, entry, owner, params = facts

    def partly_warm() -> Worker:
        worker = warm(caller, entry, owner)
        if not memoized:
            worker.hashed.clear()
        if not cached:
            worker.cache.by_key.clear()
        if not owner_held:
            worker.local.owners.clear()
        return worker

    expected = await outcome(cold(caller, entry, owner), params, step_only=False)
    step = await outcome(partly_warm(), params, step_only=True)
    if step[0] is not None:
        assert step == expected
    assert await outcome(partly_warm(), params, step_only=False) == expected


# --- Cache-Control (SPEC "Revocation feed") -----------------------------------------------


@pytest.mark.parametrize(("exp_in", "expected"), [(None, 60), (3600, 60), (60, 60), (7, 7), (0, 0)])
def test_an_active_answer_may_be_reused_for_the_rs_lifetime_never_past_exp(
    exp_in: int | None, expected: int
) -> None:
    """max-age is INTROSPECT_RS_CACHE_TTL, cut at the credential's exp."""
    t = now()
    entry = live()
    entry = (*entry[:EXP], None if exp_in is None else t + exp_in, *entry[EXP + 1 :])
    answer = rfc7662.Answer(answer_of(entry), entry)
    assert rfc7662.max_age(answer, 60, 30, t) == expected


def test_an_inactive_answer_is_reused_no_longer_than_the_server_keeps_its_own() -> None:
    """An inactive answer's max-age is the shorter of the RS lifetime and the negative TTL."""
    assert rfc7662.max_age(rfc7662.INACTIVE_ANSWER, 60, 30, now()) == 30
    assert rfc7662.max_age(rfc7662.INACTIVE_ANSWER, 10, 30, now()) == 10
