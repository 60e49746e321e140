"""RFC 7523 private_key_jwt: assertion checks, replay memory, and its hook in RFC 6749 auth."""

from __future__ import annotations

import base64
import dataclasses
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from introspect import credentials, rfc7523
from introspect.errors import InvalidClient, InvalidRequest, OAuth2Error
from introspect.rfc6749 import authenticate_client
from introspect.store import Client

AUD = "https://issuer.example/token"
PRIVATE = ec.generate_private_key(ec.SECP256R1())
JWK = {**jwt.get_algorithm_by_name("ES256").to_jwk(PRIVATE.public_key(), as_dict=True), "kid": "k"}


def client(jwks: dict[str, Any] | None = None, *, disabled: bool = False) -> Client:
    """A registered client holding `jwks` (by default the one public key above)."""
    return Client(
        client_id="client_a",
        name="a",
        scopes=(),
        audiences=(),
        can_introspect=False,
        token_ttl=60,
        token_format="opaque",
        jwks={"keys": [JWK]} if jwks is None else jwks,
        disabled=disabled,
        created_at=0,
        updated_at=0,
    )


class Memory:
    """Replay memory in a set, standing in for Redis SET NX."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, str]] = set()
        self.until: list[int] = []

    async def first_use(self, client_id: str, jti: str, _from: int, until: int) -> bool:
        """True the first time a (client, jti) is seen."""
        self.until.append(until)
        if (client_id, jti) in self.seen:
            return False
        self.seen.add((client_id, jti))
        return True


def assertion(**over: Any) -> str:
    """A valid ES256 assertion from client_a; `over` changes (None drops) claims."""
    t = int(time.time())
    payload = {
        "iss": "client_a",
        "sub": "client_a",
        "aud": AUD,
        "iat": t,
        "exp": t + 60,
        "jti": "j1",
    }
    payload = {k: v for k, v in {**payload, **over}.items() if v is not None}
    return jwt.encode(payload, PRIVATE, algorithm="ES256", headers={"kid": "k"})


async def authenticate(
    value: str, found: Client | None = None, memory: Memory | None = None, **params: str
) -> Client:
    """Run rfc7523.authenticate against one client lookup."""

    async def get_client(client_id: str) -> Client | None:
        return found if found is not None and client_id == found.client_id else None

    assertions = rfc7523.Assertions(frozenset({AUD}), (memory or Memory()).first_use)
    form = {"client_assertion_type": rfc7523.ASSERTION_TYPE, "client_assertion": value, **params}
    return await rfc7523.authenticate(form, get_client, assertions)


async def test_valid_assertion_authenticates_and_is_remembered() -> None:
    """A good assertion yields the client; its jti is remembered until exp plus leeway."""
    memory = Memory()
    value = assertion()
    assert (await authenticate(value, client(), memory)).client_id == "client_a"
    claims = jwt.decode(value, options={"verify_signature": False})
    assert memory.until == [claims["exp"] + rfc7523.LEEWAY]
    with pytest.raises(InvalidClient):
        await authenticate(value, client(), memory)


@pytest.mark.parametrize(
    "found",
    [
        None,
        client(disabled=True),
        client({"keys": []}),
        client({"keys": "nope"}),
        client({"keys": [{**JWK, "kid": "other"}]}),
        client({"keys": [{**JWK, "alg": "ES384"}]}),
        client({"keys": [{**JWK, "use": "enc"}]}),
        client({"keys": [{**JWK, "d": "AAAA"}]}),
        client({"keys": [{**JWK, "x": 3}]}),
    ],
)
async def test_unusable_client_keys_are_invalid_client(found: Client | None) -> None:
    """Unknown or disabled clients, and key sets with no fitting key, fail authentication."""
    with pytest.raises(InvalidClient):
        await authenticate(assertion(), found)


async def test_empty_jti_is_refused() -> None:
    """A jti must be a non-empty string."""
    with pytest.raises(InvalidClient):
        await authenticate(assertion(jti=""), client())


async def test_parameters_go_together() -> None:
    """client_assertion without its type (or the reverse) is invalid_request."""

    async def none(_client_id: str) -> Client | None:
        return None

    assertions = rfc7523.Assertions(frozenset({AUD}), Memory().first_use)
    for form in ({"client_assertion": assertion()}, {"client_assertion_type": "x"}):
        with pytest.raises(InvalidRequest):
            await rfc7523.authenticate(form, none, assertions)


async def test_two_methods_at_once_is_invalid_request() -> None:
    """RFC 6749 §2.3: an assertion with Basic or client_secret is invalid_request."""

    async def get(_client_id: str) -> Client | None:
        return client()

    form = {"client_assertion_type": rfc7523.ASSERTION_TYPE, "client_assertion": assertion()}
    assertions = rfc7523.Assertions(frozenset({AUD}), Memory().first_use)
    with pytest.raises(InvalidRequest):
        await authenticate_client("Basic eDp5", form, get, (b"k" * 16,), assertions)
    with pytest.raises(InvalidRequest):
        await authenticate_client(
            None, {**form, "client_secret": "s"}, get, (b"k" * 16,), assertions
        )
    with pytest.raises(InvalidClient):
        await authenticate_client(None, form, get, (b"k" * 16,))


@given(st.text(max_size=400))
async def test_any_assertion_fails_cleanly(value: str) -> None:
    """Whatever a caller sends as an assertion, the answer is a protocol error, never a crash."""
    with pytest.raises(OAuth2Error):
        await authenticate(value, client())


@pytest.mark.parametrize("where", ["basic", "post"])
async def test_a_private_key_jwt_client_cannot_use_a_secret(where: str) -> None:
    """A private_key_jwt client is invalid_client with a secret, even one stored for it."""
    keys = (b"k" * 16,)
    secret = "isec_" + "A" * 38
    stored = ((credentials.keyed_hash(keys[0], secret), None),)
    for method, refused in (("client_secret_basic", False), ("private_key_jwt", True)):
        found = dataclasses.replace(client(), token_endpoint_auth_method=method, secrets=stored)

        async def get(_client_id: str, found: Client = found) -> Client | None:
            return found

        header = "Basic " + base64.b64encode(f"client_a:{secret}".encode()).decode()
        authorization, form = (
            (header, {})
            if where == "basic"
            else (None, {"client_id": "client_a", "client_secret": secret})
        )
        if refused:
            with pytest.raises(InvalidClient):
                await authenticate_client(authorization, form, get, keys)
        else:
            assert (await authenticate_client(authorization, form, get, keys)) is found
