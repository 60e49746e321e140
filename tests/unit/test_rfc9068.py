"""RFC 9068 JWT access tokens: claims, and the local validation run before any lookup."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any

import jwt
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from introspect import rfc9068, signing
from introspect.errors import InvalidTarget
from introspect.signing import SigningKey

ISSUER = "https://issuer.example"


def make_key(alg: str = "ES256", kid: str = "k1") -> tuple[SigningKey, Any]:
    """An in-memory signing key and its private part."""
    private = signing.generate(alg)
    jwk = signing.public_jwk(private, kid, alg)
    key = SigningKey(kid, alg, 1, 0, jwk, jwt.PyJWK(jwk, algorithm=alg), private)
    return key, private


def claims(**over: Any) -> dict[str, Any]:
    """Live access token claims, with `over` applied."""
    t = int(time.time())
    base = rfc9068.access_token_claims(
        issuer=ISSUER,
        client_id="client_a",
        scopes=("read",),
        audiences=("https://api.example",),
        jti="tok_1",
        iat=t,
        exp=t + 60,
    )
    return {**base, **over}


def sign(key: SigningKey, private: Any, payload: dict[str, Any], **header: Any) -> str:
    """A JWS by `private` with our header, `header` applied."""
    return jwt.encode(
        payload, private, algorithm=key.alg, headers={"typ": "at+jwt", "kid": key.kid, **header}
    )


def b64(data: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_claims_follow_section_2_2() -> None:
    """One audience is a string, several a list; sub and client_id are the client."""
    one = claims()
    assert one["aud"] == "https://api.example"
    assert one["sub"] == one["client_id"] == "client_a"
    assert one["nbf"] == one["iat"]
    assert one["scope"] == "read"
    two = rfc9068.access_token_claims(
        issuer=ISSUER, client_id="c", scopes=(), audiences=("a", "b"), jti="j", iat=1, exp=2
    )
    assert two["aud"] == ["a", "b"]


def test_claims_need_an_audience() -> None:
    """RFC 9068 §2.2 requires aud: a client with no audience gets invalid_target."""
    with pytest.raises(InvalidTarget):
        rfc9068.access_token_claims(
            issuer=ISSUER, client_id="c", scopes=(), audiences=(), jti="j", iat=1, exp=2
        )


@pytest.mark.parametrize("alg", signing.ALGORITHMS)
def test_our_token_passes(alg: str) -> None:
    """A token signed by a published key, for our issuer, live now, verifies."""
    key, private = make_key(alg)
    payload = claims()
    token = sign(key, private, payload)
    assert rfc9068.header(token) == (alg, key.kid)
    assert rfc9068.verify(token, key, alg, ISSUER) == payload


@pytest.mark.parametrize(
    "header",
    [
        {"typ": "JWT"},
        {"typ": None},
        {"alg": "none"},
        {"alg": "HS256"},
        {"alg": "RS256"},
        {"alg": ["ES256"]},
        {"kid": 7},
        {"kid": None},
    ],
)
def test_header_refuses_foreign_shapes(header: dict[str, Any]) -> None:
    """Wrong typ, an algorithm we never sign with, or no kid: refused before any lookup."""
    key, private = make_key()
    good = sign(key, private, claims())
    head = orjson.loads(base64.urlsafe_b64decode(good.split(".")[0] + "=="))
    forged_head = {k: v for k, v in {**head, **header}.items() if v is not None}
    token = b64(orjson.dumps(forged_head)) + "." + good.split(".", 1)[1]
    assert rfc9068.header(token) is None


def test_header_refuses_oversized_and_misshapen() -> None:
    """Over 8 KiB, not three segments, or undecodable: None."""
    key, private = make_key()
    good = sign(key, private, claims())
    assert rfc9068.header(good + "." + "A") is None
    assert rfc9068.header(good + "A" * rfc9068.MAX_LENGTH) is None
    for bad in ("", "a.b", "a.b.c", "....", "e30.e30.e30", "bnVsbA.e30.x"):
        assert rfc9068.header(bad) is None


@pytest.mark.parametrize(
    "over",
    [
        # Times are read when the test runs, not when the suite is collected minutes before.
        lambda: {"iss": "https://other.example"},
        lambda: {"exp": int(time.time()) - 10},
        lambda: {"nbf": int(time.time()) + 300},
        lambda: {"iat": int(time.time()) + 300},
        lambda: {"client_id": None},
        lambda: {"jti": None},
    ],
)
def test_verify_refuses_bad_claims(over: Callable[[], dict[str, Any]]) -> None:
    """Another issuer, expired, not yet valid, or missing required claims: None."""
    key, private = make_key()
    payload = {k: v for k, v in claims(**over()).items() if v is not None}
    assert rfc9068.verify(sign(key, private, payload), key, key.alg, ISSUER) is None


def test_verify_refuses_other_keys_and_algorithms() -> None:
    """A signature by another key, or an alg that is not the key's, is refused."""
    key, private = make_key("ES256")
    other, other_private = make_key("ES256")
    assert rfc9068.verify(sign(other, other_private, claims()), key, "ES256", ISSUER) is None
    assert rfc9068.verify(sign(key, private, claims()), key, "EdDSA", ISSUER) is None
    head, _body, sig = sign(key, private, claims()).split(".")
    tampered = f"{head}.{b64(orjson.dumps(claims(scope='admin')))}.{sig}"
    assert rfc9068.verify(tampered, key, "ES256", ISSUER) is None


@given(st.text(max_size=300))
def test_header_never_raises_on_text(text: str) -> None:
    """Any presented string is either shaped like our token or None, never an exception."""
    found = rfc9068.header(text)
    assert found is None or isinstance(found, tuple)


@given(st.binary(max_size=200), st.binary(max_size=200), st.binary(max_size=100))
def test_verify_never_raises_on_segments(head: bytes, body: bytes, sig: bytes) -> None:
    """Arbitrary segments, behind our header or not, verify to None and never raise."""
    key, _ = make_key()
    ours = b64(orjson.dumps({"typ": "at+jwt", "alg": "ES256", "kid": key.kid}))
    for header in (ours, b64(head)):
        token = f"{header}.{b64(body)}.{b64(sig)}"
        assert rfc9068.verify(token, key, "ES256", ISSUER) is None
