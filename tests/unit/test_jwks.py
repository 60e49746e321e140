"""Validation of a client's JWK Set: which keys can verify assertions, and every refusal named."""

from __future__ import annotations

import base64
import contextlib
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from introspect import jwks
from introspect.jwks import InvalidKeySet, validate

EC_KEY = ec.generate_private_key(ec.SECP256R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public(private: Any, alg: str, **members: Any) -> dict[str, Any]:
    """The public JWK of `private` as PyJWT writes it for `alg`, with `members` added."""
    return {**jwt.get_algorithm_by_name(alg).to_jwk(private.public_key(), as_dict=True), **members}


EC = public(EC_KEY, "ES256")
ED = public(ED_KEY, "EdDSA")
RSA = public(RSA_KEY, "RS256")


def b64(raw: bytes) -> str:
    """base64url without padding."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def rsa_jwk(bits: int) -> dict[str, Any]:
    """A public RSA JWK of `bits` bits."""
    return public(rsa.generate_private_key(public_exponent=65537, key_size=bits), "RS256")


def refused(key_set: object) -> InvalidKeySet:
    """The refusal of `key_set`."""
    with pytest.raises(InvalidKeySet) as caught:
        validate(key_set)
    return caught.value


@pytest.mark.parametrize(
    "keys",
    [
        pytest.param([EC], id="es256"),
        pytest.param([ED], id="eddsa"),
        pytest.param([RSA], id="rsa-2048"),
        pytest.param([{**EC, "alg": "ES256", "use": "sig", "kid": "a"}], id="es256-alg-use-kid"),
        pytest.param([{**ED, "alg": "EdDSA", "key_ops": ["verify"]}], id="eddsa-key-ops"),
        pytest.param([{**RSA, "alg": "PS256"}], id="ps256"),
        pytest.param([{**RSA, "x5c": ["opaque"], "ext": True}], id="unknown-members-ignored"),
        pytest.param(
            [{**EC, "kid": "a"}, {**ED, "kid": "b"}, {**RSA, "kid": "c"}], id="three-kinds"
        ),
        pytest.param([{**ED, "kid": str(n)} for n in range(jwks.MAX_KEYS)], id="ten-keys"),
    ],
)
def test_usable_public_keys_are_accepted(keys: list[dict[str, Any]]) -> None:
    """Public keys for ES256, EdDSA, RS256 and PS256, with optional members, pass."""
    validate({"keys": keys})


def test_rsa_of_4096_bits_is_accepted() -> None:
    """An RSA key of the largest allowed size passes."""
    validate({"keys": [rsa_jwk(4096)]})


def test_accepted_keys_verify_signatures_of_their_algorithms() -> None:
    """What passes validation is a key PyJWT verifies a signature with, for each fitting alg."""
    for private, jwk in ((EC_KEY, EC), (ED_KEY, ED), (RSA_KEY, RSA)):
        validate({"keys": [jwk]})
        for alg in jwks.algorithms(jwk):
            signed = jwt.encode({"a": 1}, private, algorithm=alg)
            assert jwt.decode(signed, jwt.PyJWK(jwk, algorithm=alg), algorithms=[alg]) == {"a": 1}


def test_algorithms_follow_key_type_curve_and_alg() -> None:
    """An RSA key serves RS256 and PS256, unless its alg names one; EC and OKP serve one each."""
    assert jwks.algorithms(RSA) == ("RS256", "PS256")
    assert jwks.algorithms({**RSA, "alg": "PS256"}) == ("PS256",)
    assert jwks.algorithms(EC) == ("ES256",)
    assert jwks.algorithms(ED) == ("EdDSA",)
    assert jwks.algorithms({**EC, "alg": "RS256"}) == ()


P384 = public(ec.generate_private_key(ec.SECP384R1()), "ES384")
ED448 = {
    "kty": "OKP",
    "crv": "Ed448",
    "x": b64(ed448.Ed448PrivateKey.generate().public_key().public_bytes_raw()),
}


@pytest.mark.parametrize(
    ("key_set", "where"),
    [
        pytest.param([EC], "jwks:", id="not-an-object"),
        pytest.param({}, "jwks.keys:", id="no-keys"),
        pytest.param({"keys": {"a": EC}}, "jwks.keys:", id="keys-not-array"),
        pytest.param({"keys": []}, "jwks.keys: must hold 1 to 10", id="empty"),
        pytest.param(
            {"keys": [{**ED, "kid": str(n)} for n in range(11)]}, "jwks.keys:", id="eleven"
        ),
        pytest.param({"keys": [[EC]]}, "jwks.keys[0]:", id="key-not-object"),
        pytest.param({"keys": [{"kty": "RSA"}]}, "jwks.keys[0].n:", id="rsa-without-n"),
        pytest.param({"keys": [{**RSA, "n": "!!"}]}, "jwks.keys[0].n:", id="rsa-n-not-base64"),
        pytest.param({"keys": [{**RSA, "n": RSA["n"] + "="}]}, "keys[0].n:", id="rsa-n-padded"),
        pytest.param({"keys": [{**RSA, "n": 5}]}, "jwks.keys[0].n:", id="rsa-n-number"),
        pytest.param(
            {"keys": [rsa_jwk(1024)]}, "jwks.keys[0].n: the modulus has 1024", id="rsa-1024"
        ),
        pytest.param({"keys": [{**RSA, "e": "Ag"}]}, "jwks.keys[0].e:", id="rsa-even-exponent"),
        pytest.param({"keys": [{**RSA, "e": "AQ"}]}, "jwks.keys[0].e:", id="rsa-exponent-1"),
        pytest.param({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}, "jwks.keys[0].k:", id="oct-k"),
        pytest.param({"keys": [{"kty": "oct"}]}, "jwks.keys[0].kty:", id="oct"),
        pytest.param({"keys": [{"kty": "XYZ"}]}, "jwks.keys[0].kty:", id="unknown-kty"),
        pytest.param({"keys": [{"n": RSA["n"]}]}, "jwks.keys[0].kty:", id="no-kty"),
        pytest.param({"keys": [{**RSA, "kty": 1}]}, "jwks.keys[0].kty:", id="kty-number"),
        pytest.param({"keys": [P384]}, "jwks.keys[0].crv: must be P-256", id="ec-p384"),
        pytest.param({"keys": [{**EC, "crv": None}]}, "jwks.keys[0].crv:", id="ec-no-crv"),
        pytest.param({"keys": [ED448]}, "jwks.keys[0].crv: must be Ed25519", id="ed448"),
        pytest.param({"keys": [{**ED, "crv": "X25519"}]}, "jwks.keys[0].crv:", id="x25519"),
        pytest.param({"keys": [{**EC, "x": EC["y"][:-2]}]}, "jwks.keys[0].x:", id="ec-short-x"),
        pytest.param({"keys": [{**EC, "x": EC["y"], "y": EC["x"]}]}, "keys[0]:", id="off-curve"),
        pytest.param({"keys": [{**ED, "x": ED["x"] + "AA"}]}, "jwks.keys[0].x:", id="okp-long-x"),
        pytest.param({"keys": [{**EC, "use": "enc"}]}, "jwks.keys[0].use:", id="use-enc"),
        pytest.param({"keys": [{**EC, "key_ops": ["sign"]}]}, "keys[0].key_ops:", id="key-ops"),
        pytest.param({"keys": [{**EC, "key_ops": "verify"}]}, "keys[0].key_ops:", id="ops-str"),
        pytest.param({"keys": [{**EC, "alg": "HS256"}]}, "jwks.keys[0].alg:", id="alg-hs256"),
        pytest.param({"keys": [{**EC, "alg": "none"}]}, "jwks.keys[0].alg:", id="alg-none"),
        pytest.param({"keys": [{**EC, "alg": "ES384"}]}, "jwks.keys[0].alg:", id="alg-es384"),
        pytest.param({"keys": [{**EC, "alg": "RS256"}]}, "jwks.keys[0].alg:", id="alg-misfit"),
        pytest.param({"keys": [{**ED, "alg": "ES256"}]}, "jwks.keys[0].alg:", id="alg-misfit-okp"),
        pytest.param({"keys": [{**EC, "alg": ["ES256"]}]}, "jwks.keys[0].alg:", id="alg-array"),
        pytest.param({"keys": [{**EC, "x5u": "https://x.example/c"}]}, "keys[0].x5u:", id="x5u"),
        pytest.param({"keys": [{**EC, "kid": 5}]}, "jwks.keys[0].kid:", id="kid-number"),
        pytest.param({"keys": [{**EC, "kid": ""}]}, "jwks.keys[0].kid:", id="kid-empty"),
        pytest.param({"keys": [{**EC, "kid": "a\n"}]}, "jwks.keys[0].kid:", id="kid-control"),
        pytest.param(
            {"keys": [{**EC, "kid": "a"}, ED]}, "jwks.keys[1].kid: is required", id="kid-missing"
        ),
        pytest.param(
            {"keys": [{**EC, "kid": "a"}, {**ED, "kid": "a"}]},
            "keys[1].kid: is not unique",
            id="kid-twice",
        ),
        pytest.param({"keys": [ED] * 20}, "jwks.keys:", id="twenty-without-kid"),
    ],
)
def test_unusable_key_sets_are_refused_naming_the_member(key_set: object, where: str) -> None:
    """Each fault is refused with a message that starts at the member at fault."""
    assert where in str(refused(key_set))


@pytest.mark.parametrize("member", sorted(jwks.PRIVATE_MEMBERS))
def test_private_members_are_refused(member: str) -> None:
    """A key carrying any private or symmetric member is refused, naming it."""
    error = refused({"keys": [{**RSA, member: "AQAB"}]})
    assert error.where == f"jwks.keys[0].{member}"
    assert "public keys only" in error.fault


def test_a_refusal_never_repeats_key_material() -> None:
    """The message names members, never their values (a stray private key stays out of logs)."""
    secret = RSA_KEY.private_numbers()
    leaked = {**RSA, "d": b64(secret.d.to_bytes(256, "big"))}
    assert leaked["d"][:16] not in str(refused({"keys": [leaked]}))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
MEMBERS = st.sampled_from(
    ["kty", "crv", "x", "y", "n", "e", "alg", "use", "kid", "key_ops", "x5u", "d", "k"]
)


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_random_json_raises_nothing_but_the_refusal(value: object) -> None:
    """Any JSON value either validates or is refused with InvalidKeySet: nothing else escapes."""
    for candidate in (value, {"keys": value}, {"keys": [value]}):
        with contextlib.suppress(InvalidKeySet):
            validate(candidate)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([EC, ED, RSA]), st.dictionaries(MEMBERS, JSON, min_size=1, max_size=3))
def test_mutated_valid_keys_raise_nothing_but_the_refusal(
    jwk: dict[str, Any], changes: dict[str, Any]
) -> None:
    """A valid key with members replaced by random JSON validates or is refused, nothing else."""
    with contextlib.suppress(InvalidKeySet):
        validate({"keys": [{**jwk, **changes}]})
