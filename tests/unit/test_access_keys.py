"""Service-client access keys: the string the server writes, the SDK's strict parsing of it, and
the assertions the SDK signs with it."""

from __future__ import annotations

import base64
import contextlib

import jwt
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from introspect import access_keys, jwks
from introspect_sdk import access_keys as reader
from introspect_sdk.access_keys import MalformedAccessKey

CLIENT_ID = "client_" + "A" * 22
KID = "ak_" + "B" * 22


def packed(payload: object) -> str:
    """`iak_` and the base64url of `payload` as JSON, as an access key is laid out."""
    return "iak_" + base64.urlsafe_b64encode(orjson.dumps(payload)).rstrip(b"=").decode()


def test_an_access_key_round_trips() -> None:
    """A generated key encodes to an iak_ string that parses back to the same key."""
    key = access_keys.generate(CLIENT_ID, KID)
    text = key.encode()
    assert text.startswith("iak_")
    assert text.isascii()
    assert "=" not in text
    back = reader.parse(text)
    raw = key.private.private_bytes_raw()
    assert (back.client_id, back.kid, back.private.private_bytes_raw()) == (CLIENT_ID, KID, raw)


def test_the_layout_is_the_documented_json_object() -> None:
    """The part after iak_ is base64url of exactly {client_id, kid, d}, d being 32 bytes."""
    key = access_keys.generate(CLIENT_ID, KID)
    body = key.encode()[4:]
    payload = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    assert set(payload) == {"client_id", "kid", "d"}
    assert len(base64.urlsafe_b64decode(payload["d"] + "==")) == 32


def test_the_public_jwk_is_a_valid_registrable_key() -> None:
    """The public half is an Ed25519 JWK with the kid, no private member, and passes validation."""
    jwk = access_keys.generate(CLIENT_ID, KID).public_jwk()
    assert jwk["kid"] == KID
    assert jwk["alg"] == "EdDSA"
    assert "d" not in jwk
    jwks.validate({"keys": [jwk]})


def test_the_assertion_verifies_with_the_public_jwk() -> None:
    """An assertion from the key verifies with its public JWK, with iss = sub = client_id."""
    key = access_keys.generate(CLIENT_ID, KID)
    signer = reader.parse(key.encode())
    assertion = signer.assertion("https://issuer.example/token", now=1_000, lifetime=30)
    assert jwt.get_unverified_header(assertion)["kid"] == KID
    claims = jwt.decode(
        assertion,
        jwt.PyJWK(key.public_jwk()),
        algorithms=["EdDSA"],
        audience="https://issuer.example/token",
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims["iss"] == claims["sub"] == CLIENT_ID
    assert (claims["iat"], claims["exp"]) == (1_000, 1_030)
    again = jwt.decode(signer.assertion("x", now=1_000), options={"verify_signature": False})
    assert claims["jti"] != again["jti"]


def test_repr_never_shows_the_private_key() -> None:
    """The repr of an access key, written or read, names the client and kid, never the key."""
    key = access_keys.generate(CLIENT_ID, KID)
    d = key.encode()
    for each in (key, reader.parse(d)):
        assert repr(each) == f"AccessKey(client_id={CLIENT_ID!r}, kid={KID!r})"
        assert d[10:30] not in repr(each)


SEED = base64.urlsafe_b64encode(b"\x01" * 32).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("iak_", id="prefix-only"),
        pytest.param("iak_!!!!", id="not-base64"),
        pytest.param("iak_" + "A" * 2000, id="too-long"),
        pytest.param("ikey_abc", id="other-prefix"),
        pytest.param("iak_AAAAA", id="bad-length"),
        pytest.param(
            "iak_" + base64.urlsafe_b64encode(b"\xff\xfe").decode().rstrip("="), id="not-utf8"
        ),
        pytest.param(packed([CLIENT_ID, KID, SEED]), id="array"),
        pytest.param(packed({"client_id": CLIENT_ID, "kid": KID}), id="no-d"),
        pytest.param(packed({"client_id": CLIENT_ID, "kid": KID, "d": SEED, "x": 1}), id="extra"),
        pytest.param(packed({"client_id": CLIENT_ID, "kid": KID, "d": SEED[:-4]}), id="short-d"),
        pytest.param(packed({"client_id": CLIENT_ID, "kid": KID, "d": 5}), id="d-number"),
        pytest.param(packed({"client_id": 5, "kid": KID, "d": SEED}), id="client-id-number"),
        pytest.param(packed({"client_id": CLIENT_ID, "kid": "", "d": SEED}), id="kid-empty"),
        pytest.param(packed({"client_id": "a\nb", "kid": KID, "d": SEED}), id="control"),
    ],
)
def test_malformed_access_keys_are_refused(text: str) -> None:
    """Anything but the exact layout is MalformedAccessKey."""
    with pytest.raises(MalformedAccessKey):
        reader.parse(text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300) | st.text(max_size=300).map(lambda t: "iak_" + t))
def test_random_text_raises_nothing_but_malformed(text: str) -> None:
    """parse of any string gives an access key or MalformedAccessKey, nothing else."""
    with contextlib.suppress(MalformedAccessKey):
        reader.parse(text)
