"""RFC 6749: client authentication (§2.3) and the client credentials grant (§4.4), pure."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from introspect import credentials, rfc6749
from introspect.errors import (
    InvalidClient,
    InvalidRequest,
    InvalidScope,
    InvalidTarget,
    OAuth2Error,
    UnsupportedGrantType,
)
from introspect.forms import parse_basic
from introspect.store import Client, now

CURRENT, OLD = b"c" * 32, b"o" * 32
SECRET = "isec_the-secret"
CLIENT_ID = "client_abc"


def a_client(**changes: object) -> Client:
    """A client whose one live secret is SECRET, hashed under the current server secret."""
    client = Client(
        client_id=CLIENT_ID,
        name="app",
        scopes=("read", "write"),
        audiences=("https://api", "https://other"),
        can_introspect=False,
        token_ttl=3600,
        token_format="opaque",
        jwks=None,
        disabled=False,
        created_at=0,
        updated_at=0,
        secrets=((credentials.keyed_hash(CURRENT, SECRET), None),),
    )
    return dataclasses.replace(client, **changes)


class Memo:
    """An rfc6749.AuthMemo over a dict."""

    def __init__(self) -> None:
        self.held: dict[str, Client] = {}

    def recall(self, authorization: str, mono: float) -> Client | None:
        """The client remembered for `authorization`."""
        return self.held.get(authorization)

    def remember(self, authorization: str, client: Client) -> None:
        """Remember `client` for `authorization`."""
        self.held[authorization] = client


async def authenticate(
    authorization: str | None,
    params: dict[str, str],
    client: Client | None = None,
    memo: Memo | None = None,
) -> Client:
    """authenticate_client over one registered client (None: none), current server secret."""
    registered = a_client() if client is None else client

    async def get_client(client_id: str) -> Client | None:
        return registered if client_id == registered.client_id else None

    return await rfc6749.authenticate_client(
        authorization, params, get_client, (CURRENT,), memo=memo
    )


# --- §2.3 client authentication ----------------------------------------------------------


def test_a_live_secret_matches_under_any_server_secret() -> None:
    """A secret hashed under an older server secret still matches while that one is listed;
    a secret past its grace period, or of no client, does not."""
    assert rfc6749.secret_matches((CURRENT,), a_client(), SECRET)
    old = a_client(secrets=((credentials.keyed_hash(OLD, SECRET), None),))
    assert rfc6749.secret_matches((CURRENT, OLD), old, SECRET)
    assert not rfc6749.secret_matches((CURRENT,), old, SECRET)
    expired = a_client(secrets=((credentials.keyed_hash(CURRENT, SECRET), now() - 1),))
    assert not rfc6749.secret_matches((CURRENT,), expired, SECRET)
    assert not rfc6749.secret_matches((CURRENT,), None, SECRET)
    assert not rfc6749.secret_matches((CURRENT,), a_client(), SECRET + "x")


async def test_basic_and_post_authenticate_the_same_client() -> None:
    """client_secret_basic and client_secret_post both authenticate."""
    basic = rfc6749.basic(CLIENT_ID, SECRET)
    assert (await authenticate(basic, {})).client_id == CLIENT_ID
    post = {"client_id": CLIENT_ID, "client_secret": SECRET}
    assert (await authenticate(None, post)).client_id == CLIENT_ID


@pytest.mark.parametrize(
    ("authorization", "params", "error"),
    [
        (None, {}, InvalidClient),  # no method
        ("basic", {"client_secret": SECRET}, InvalidRequest),  # two methods
        ("basic", {"client_id": "client_other"}, InvalidRequest),  # names another client
        (None, {"client_secret": SECRET}, InvalidClient),  # post without client_id
        (None, {"client_id": CLIENT_ID, "client_secret": "wrong"}, InvalidClient),
        (None, {"client_assertion": "x"}, InvalidClient),  # private_key_jwt not enabled
        ("Bearer abc", {}, InvalidClient),  # not Basic
    ],
)
async def test_refusals_name_their_rfc_error(
    authorization: str | None, params: dict[str, str], error: type[OAuth2Error]
) -> None:
    """Two methods or a mismatched client_id are invalid_request; none, a wrong secret or an
    unusable method invalid_client."""
    if authorization == "basic":
        authorization = rfc6749.basic(CLIENT_ID, SECRET)
    with pytest.raises(error):
        await authenticate(authorization, params)


@pytest.mark.parametrize(
    "client",
    [
        a_client(disabled=True),
        a_client(token_endpoint_auth_method="private_key_jwt"),
    ],
    ids=["disabled", "private-key-jwt-client"],
)
async def test_a_client_that_may_not_use_its_secret_is_refused(client: Client) -> None:
    """A disabled client, or one registered for private_key_jwt, cannot use a secret."""
    with pytest.raises(InvalidClient):
        await authenticate(rfc6749.basic(CLIENT_ID, SECRET), {}, client)


async def test_an_oversized_secret_is_refused_without_a_lookup() -> None:
    """A secret longer than any of ours is invalid_client before the client is looked up."""

    async def get_client(_client_id: str) -> Client | None:
        raise AssertionError("looked up")

    long = rfc6749.basic(CLIENT_ID, "x" * (credentials.MAX_OPAQUE_LENGTH + 1))
    with pytest.raises(InvalidClient):
        await rfc6749.authenticate_client(long, {}, get_client, (CURRENT,))


async def test_only_the_canonical_basic_header_is_remembered() -> None:
    """A Basic header that authenticated is remembered in its canonical spelling only, and
    recalled only for a request with no other authentication parameter."""
    memo = Memo()
    canonical = rfc6749.basic(CLIENT_ID, SECRET)
    await authenticate("basic " + canonical[6:], {}, memo=memo)
    assert memo.held == {}
    client = await authenticate(canonical, {}, memo=memo)
    assert memo.held == {canonical: client}
    assert rfc6749.remembered(canonical, {"token": "t"}, memo, 0.0) is client
    assert rfc6749.remembered(canonical, {"client_id": CLIENT_ID}, memo, 0.0) is client
    for extra in ("client_secret", "client_assertion", "client_assertion_type"):
        assert rfc6749.remembered(canonical, {extra: "x"}, memo, 0.0) is None
    assert rfc6749.remembered(canonical, {"client_id": "client_other"}, memo, 0.0) is None
    assert rfc6749.remembered(None, {}, memo, 0.0) is None


TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40
)


@given(TEXT.filter(bool), TEXT)
def test_basic_is_form_encoded_then_base64(client_id: str, secret: str) -> None:
    """§2.3.1: the canonical header parses back to the same id and secret."""
    assert parse_basic(rfc6749.basic(client_id, secret)) == (client_id, secret)


@given(
    st.text(max_size=300),
    st.dictionaries(
        st.sampled_from(["client_id", "client_secret", "client_assertion"]), st.text(max_size=50)
    ),
)
async def test_any_authorization_fails_cleanly(authorization: str, params: dict[str, str]) -> None:
    """Whatever a caller sends, authentication answers a client or a protocol error."""
    with contextlib.suppress(OAuth2Error):
        await authenticate(authorization, params)


# --- §4.4 the client credentials grant --------------------------------------------------


def grant(params: dict[str, str], multi: dict[str, list[str]] | None = None) -> rfc6749.Grant:
    """The grant decided for a_client()."""
    return rfc6749.client_credentials_grant(a_client(), params, multi or {})


def test_an_omitted_scope_grants_every_scope_and_audience() -> None:
    """SPEC: no `scope` means all of the client's scopes; no target, all its audiences."""
    assert grant({"grant_type": "client_credentials"}) == rfc6749.Grant(
        scopes=("read", "write"), audiences=("https://api", "https://other")
    )


def test_a_requested_scope_and_audience_narrow_the_grant() -> None:
    """Scopes and audiences asked for (repeats once) are granted when registered."""
    params = {"grant_type": "client_credentials", "scope": "read read"}
    assert grant(params, {"audience": ["https://api", "https://api"]}) == rfc6749.Grant(
        scopes=("read",), audiences=("https://api",)
    )
    assert grant(params, {"resource": ["https://other"]}).audiences == ("https://other",)


@pytest.mark.parametrize(
    ("params", "multi", "error"),
    [
        ({}, {}, InvalidRequest),
        ({"grant_type": "password"}, {}, UnsupportedGrantType),
        ({"grant_type": "client_credentials", "scope": "admin"}, {}, InvalidScope),
        ({"grant_type": "client_credentials", "scope": "read  write"}, {}, InvalidScope),
        ({"grant_type": "client_credentials", "scope": 'a"b'}, {}, InvalidScope),
        (
            {"grant_type": "client_credentials"},
            {"resource": ["https://api"], "audience": ["https://api"]},
            InvalidRequest,
        ),
        ({"grant_type": "client_credentials"}, {"resource": ["not-a-uri"]}, InvalidTarget),
        ({"grant_type": "client_credentials"}, {"resource": ["https://api#f"]}, InvalidTarget),
        ({"grant_type": "client_credentials"}, {"audience": ["https://elsewhere"]}, InvalidTarget),
    ],
)
def test_a_grant_outside_the_registration_names_its_error(
    params: dict[str, str], multi: dict[str, list[str]], error: type[OAuth2Error]
) -> None:
    """Missing grant_type, another grant, scopes or audiences beyond the registration, a
    malformed scope or resource, or both target parameters: each its RFC error."""
    with pytest.raises(error):
        grant(params, multi)


def test_the_token_response_always_names_its_scope() -> None:
    """§5.1: a Bearer token, its lifetime, and `scope` even when it is everything asked."""
    assert rfc6749.token_response("at", 60, ("read", "write")) == {
        "access_token": "at",
        "token_type": "Bearer",
        "expires_in": 60,
        "scope": "read write",
    }
