"""A client's JWK Set, checked when it is registered or changed: RFC 7517 §4-5 (JWK and
JWK Set), RFC 7518 §6 (key parameters) and RFC 8037 §2 (OKP keys), as RFC 7591 §2
`jwks` client metadata for RFC 7523 `private_key_jwt`.

`validate` refuses, with `InvalidKeySet` naming the member at fault, any set
that holds a key the token endpoint could never verify an assertion with, or
one it must not hold. Every key must be a public key usable with one of the
algorithms of `ALGORITHMS`: EC on P-256 (ES256), OKP Ed25519 (EdDSA), or RSA
of `MIN_RSA_BITS` to `MAX_RSA_BITS` bits (RS256, PS256); no private or
symmetric members; `use`, when present, `sig`; `key_ops`, when present,
including `verify`; `alg`, when present, one of `ALGORITHMS` that fits the
key; no `x5u` (we fetch nothing); `kid` a non-empty string, unique in the
set, required when the set holds more than one key; 1 to `MAX_KEYS` keys.
Members this module does not know are left alone (RFC 7517 §4, §5).
Pure: no I/O; any JSON value in, `None` or `InvalidKeySet` out.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Callable
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

ALGORITHMS = ("ES256", "EdDSA", "RS256", "PS256")
# (kty, crv) of the keys each algorithm verifies with; RSA keys have no crv.
KEY_TYPES: dict[str, tuple[str, str | None]] = {
    "ES256": ("EC", "P-256"),
    "EdDSA": ("OKP", "Ed25519"),
    "RS256": ("RSA", None),
    "PS256": ("RSA", None),
}
MAX_KEYS = 10
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 4096
MAX_KID = 256
# RFC 7518 §6.2.2, §6.3.2, §6.4.1 and RFC 8037 §2: private or symmetric key material.
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_SUPPORTED_KTY = frozenset(kty for kty, _crv in KEY_TYPES.values())
_CURVES = {"EC": "P-256", "OKP": "Ed25519"}
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
# Long enough for a 4096-bit modulus (683 characters), short enough to bound the work.
_MAX_ENCODED = 700


class InvalidKeySet(ValueError):
    """A JWK Set that cannot be registered; the message names the member at fault."""

    def __init__(self, where: str, fault: str) -> None:
        super().__init__(f"{where}: {fault}")
        self.where = where
        self.fault = fault


def algorithms(jwk: dict[str, Any]) -> tuple[str, ...]:
    """The algorithms of `ALGORITHMS` a key of this kty, crv and alg may verify."""
    kty, crv, alg = jwk.get("kty"), jwk.get("crv"), jwk.get("alg")
    return tuple(
        a
        for a, (k, c) in KEY_TYPES.items()
        if k == kty and (c is None or c == crv) and (alg is None or alg == a)
    )


def validate(jwks: object, field: str = "jwks") -> None:
    """Refuse (`InvalidKeySet`) a JWK Set we could not verify client assertions with.

    Messages name the member at fault below `field`, e.g. `jwks.keys[1].alg: ...`.
    """
    if not isinstance(jwks, dict):
        raise InvalidKeySet(field, "must be a JWK Set: a JSON object with keys")
    keys = jwks.get("keys")
    where = f"{field}.keys"
    if not isinstance(keys, list):
        raise InvalidKeySet(where, "must be an array of JWKs")
    if not 1 <= len(keys) <= MAX_KEYS:
        raise InvalidKeySet(where, f"must hold 1 to {MAX_KEYS} keys, not {len(keys)}")
    kids: set[str] = set()
    for n, jwk in enumerate(keys):
        at = f"{where}[{n}]"
        _check_key(jwk, at)
        kid = jwk.get("kid")
        if kid is None and len(keys) > 1:
            raise InvalidKeySet(f"{at}.kid", "is required when the set holds more than one key")
        if kid in kids:
            raise InvalidKeySet(f"{at}.kid", "is not unique in the set")
        if kid is not None:
            kids.add(kid)


def _check_key(jwk: object, at: str) -> None:
    """One JWK: its metadata members, then its key material."""
    if not isinstance(jwk, dict):
        raise InvalidKeySet(at, "must be a JWK: a JSON object")
    private = sorted(PRIVATE_MEMBERS.intersection(jwk))
    if private:
        raise InvalidKeySet(
            f"{at}.{private[0]}", "private or symmetric key material; register public keys only"
        )
    if "x5u" in jwk:
        raise InvalidKeySet(f"{at}.x5u", "is not supported: give the key itself")
    kty = jwk.get("kty")
    if not isinstance(kty, str):
        raise InvalidKeySet(f"{at}.kty", "is required, a string")
    if kty not in _SUPPORTED_KTY:
        raise InvalidKeySet(f"{at}.kty", f"{kty[:20]!r} is not supported: use EC, OKP or RSA")
    if "use" in jwk and jwk["use"] != "sig":
        raise InvalidKeySet(f"{at}.use", "must be sig")
    ops = jwk.get("key_ops")
    if "key_ops" in jwk and (
        not isinstance(ops, list)
        or not all(isinstance(op, str) for op in ops)
        or "verify" not in ops
    ):
        raise InvalidKeySet(f"{at}.key_ops", "must be an array of strings including verify")
    kid = jwk.get("kid")
    if "kid" in jwk and not (
        isinstance(kid, str) and 0 < len(kid) <= MAX_KID and kid.isprintable()
    ):
        raise InvalidKeySet(f"{at}.kid", f"must be a printable string of 1 to {MAX_KID} characters")
    alg = jwk.get("alg")
    if "alg" in jwk and (not isinstance(alg, str) or alg not in ALGORITHMS):
        raise InvalidKeySet(f"{at}.alg", f"must be one of {', '.join(ALGORITHMS)}")
    if kty in _CURVES and jwk.get("crv") != _CURVES[kty]:
        raise InvalidKeySet(f"{at}.crv", f"must be {_CURVES[kty]} for kty {kty}")
    usable = algorithms(jwk)
    if not usable:
        raise InvalidKeySet(f"{at}.alg", f"{alg} does not fit a key of kty {kty}")
    _check_material(jwk, kty, at)
    for algorithm in usable:
        try:
            jwt.PyJWK(jwk, algorithm=algorithm)
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            raise InvalidKeySet(at, f"is not a key usable with {algorithm}") from None


def _check_material(jwk: dict[str, Any], kty: str, at: str) -> None:
    """The public key itself: well-encoded, of the right size, and a valid key."""
    make: Callable[[], object]
    if kty == "EC":
        x = _integer(jwk, "x", at, size=32)
        y = _integer(jwk, "y", at, size=32)
        make = ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key
    elif kty == "OKP":
        make = functools.partial(
            ed25519.Ed25519PublicKey.from_public_bytes, _octets(jwk, "x", at, size=32)
        )
    else:
        n = _integer(jwk, "n", at)
        e = _integer(jwk, "e", at)
        if not MIN_RSA_BITS <= n.bit_length() <= MAX_RSA_BITS:
            raise InvalidKeySet(
                f"{at}.n",
                f"the modulus has {n.bit_length()} bits;"
                f" RSA keys must have {MIN_RSA_BITS} to {MAX_RSA_BITS}",
            )
        if n % 2 == 0 or e % 2 == 0 or not 3 <= e < n:
            raise InvalidKeySet(f"{at}.e", "is not a valid RSA public exponent for n")
        make = rsa.RSAPublicNumbers(e, n).public_key
    try:
        make()
    except ValueError:
        raise InvalidKeySet(at, f"is not a valid {kty} public key") from None


def _octets(jwk: dict[str, Any], member: str, at: str, size: int | None = None) -> bytes:
    """A base64url member (RFC 7515 §2: no padding) as bytes, `size` of them when given."""
    value = jwk.get(member)
    where = f"{at}.{member}"
    if not isinstance(value, str) or not value:
        raise InvalidKeySet(where, "is required, a base64url string")
    if len(value) > _MAX_ENCODED or len(value) % 4 == 1 or not _BASE64URL.fullmatch(value):
        raise InvalidKeySet(where, "is not base64url without padding")
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except binascii.Error:
        raise InvalidKeySet(where, "is not base64url without padding") from None
    if size is not None and len(raw) != size:
        raise InvalidKeySet(where, f"must encode {size} bytes, not {len(raw)}")
    return raw


def _integer(jwk: dict[str, Any], member: str, at: str, size: int | None = None) -> int:
    """A base64urlUInt member (RFC 7518 §2) as an integer."""
    return int.from_bytes(_octets(jwk, member, at, size), "big")
