"""Signing keys behind the RFC 7517 JWK Set: generation, public JWKs, sealed private parts."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization

from introspect import signing

SECRET = b"server-secret-0123456789"


@pytest.mark.parametrize(("alg", "kty"), [("ES256", "EC"), ("EdDSA", "OKP")])
def test_public_jwk_has_no_private_part(alg: str, kty: str) -> None:
    """A published JWK names its kid, alg and use, and carries no private member."""
    jwk = signing.public_jwk(signing.generate(alg), "kid1", alg)
    assert jwk["kty"] == kty
    assert (jwk["kid"], jwk["alg"], jwk["use"]) == ("kid1", alg, "sig")
    assert "d" not in jwk


def test_only_our_algorithms_are_generated() -> None:
    """Asking for an algorithm we do not sign with is an error."""
    with pytest.raises(ValueError, match="unsupported"):
        signing.generate("HS256")


@pytest.mark.parametrize("alg", signing.ALGORITHMS)
def test_sealed_key_opens_only_with_a_server_secret_and_its_kid(alg: str) -> None:
    """The sealed private key opens under any configured secret, bound to its kid."""
    private = signing.generate(alg)
    sealed = signing.seal(SECRET, "kid1", private)
    der = private.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert der not in sealed
    opened = signing.unseal((b"new-secret-0123456789", SECRET), "kid1", sealed)
    assert opened is not None
    assert (
        opened.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        == der
    )
    assert signing.unseal((b"other-secret-0123456789",), "kid1", sealed) is None
    assert signing.unseal((SECRET,), "kid2", sealed) is None


def test_default_delay_outlasts_refresh_and_jwks_caching() -> None:
    """A new key signs only after every worker reloaded and every cached JWK Set expired."""
    assert signing.DEFAULT_PROPAGATION_DELAY > signing.REFRESH + signing.JWKS_MAX_AGE
    assert signing.DEFAULT_ALG == "ES256"
