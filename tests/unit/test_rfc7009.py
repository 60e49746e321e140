"""RFC 7009: which credentials a revocation request names, decided without a server."""

from __future__ import annotations

from typing import Any

import pytest

from introspect import credentials, rfc7009
from introspect.credentials import Kind
from introspect.errors import InvalidRequest
from introspect.store import Selection

SECRETS = (b"s" * 32, b"o" * 32)
JWT = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"


class Verifier:
    """A JWT verifier that answers `claims` and counts its calls."""

    def __init__(self, claims: dict[str, Any] | None) -> None:
        self.claims = claims
        self.calls = 0

    async def __call__(self, _token: str) -> dict[str, Any] | None:
        self.calls += 1
        return self.claims


def test_token_is_required() -> None:
    """§2.1: a request without `token` is invalid_request; `token_type_hint` is not needed."""
    with pytest.raises(InvalidRequest):
        rfc7009.token_parameter({"token_type_hint": "access_token"})
    assert rfc7009.token_parameter({"token": "x", "token_type_hint": "bogus"}) == "x"


@pytest.mark.parametrize("kind", [Kind.ACCESS_TOKEN, Kind.API_KEY])
async def test_an_opaque_credential_names_its_hashes_among_the_owners(kind: Kind) -> None:
    """An access token or API key names the credentials stored under its keyed hash by any
    server secret, among the requesting client's (§2.1), with no JWT check."""
    token = credentials.generate(kind)
    verify = Verifier(None)
    found = await rfc7009.selection(token, SECRETS, "client_x", verify)
    hashes = tuple(credentials.keyed_hash(s, token) for s in SECRETS)
    assert found == Selection(hashes=hashes, client_id="client_x")
    assert verify.calls == 0
    assert found.dropped() == ([], [])  # invalidated key by key, never the whole client


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not a credential",
        credentials.generate(Kind.CLIENT_SECRET),
        credentials.generate(Kind.ACCESS_TOKEN)[:-1] + "!",
    ],
)
async def test_what_cannot_be_one_of_ours_names_nothing(token: str) -> None:
    """A client secret, or a string that is neither our format nor a JWT we signed, names
    nothing (then nothing is written: §2.2 answers 200 all the same)."""
    assert await rfc7009.selection(token, SECRETS, None, Verifier(None)) is None


async def test_a_jwt_names_its_hash_only_once_verified() -> None:
    """A JWT access token counts only when signed by one of our keys and live."""
    assert await rfc7009.selection(JWT, SECRETS, None, Verifier(None)) is None
    found = await rfc7009.selection(JWT, SECRETS, None, Verifier({"jti": "tok_1"}))
    assert found == Selection(hashes=tuple(credentials.keyed_hash(s, JWT) for s in SECRETS))


def test_selections_name_whole_clients_and_subjects_only_alone() -> None:
    """A selection of a client's, or a subject's, every credential is dropped by one message;
    one narrowed by an id, a hash or the other field is not."""
    assert Selection(client_id="c").dropped() == (["c"], [])
    assert Selection(sub="s").dropped() == ([], ["s"])
    for narrowed in (
        Selection(client_id="c", id="i"),
        Selection(client_id="c", sub="s"),
        Selection(hashes=(b"h",), client_id="c"),
        Selection(id="i"),
    ):
        assert narrowed.dropped() == ([], [])
