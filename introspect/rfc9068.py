"""RFC 9068: JWT profile for OAuth 2.0 access tokens (§2 the token, §4 its validation).

Clients registered with `token_format = jwt` get access tokens signed by the
current key of `introspect/signing.py`: header `typ: at+jwt` and `kid`
(§2.1); claims `iss, sub, aud, exp, iat, nbf, jti, client_id, scope` (§2.2).
Each is also stored as a credential row (format `jwt`, id = `jti`, hash =
the keyed hash of the whole string), so introspection and revocation treat
it like an opaque token: a revoked JWT introspects inactive at once.

Before a presented JWT costs a cache or database lookup, it is validated
here as §4 asks, with no I/O: at most 8 KiB; `typ` is `at+jwt`; the
algorithm is one we sign with (never `none`, never HS*) and must be the
algorithm of the published key named by `kid`; the signature, `iss`, and
the time claims are checked.
"""

from __future__ import annotations

from typing import Any

import jwt

from introspect import signing
from introspect.errors import InvalidTarget
from introspect.signing import SigningKey

TYP = "at+jwt"
MAX_LENGTH = 8 * 1024
_TYPES = frozenset({TYP, "application/at+jwt"})
_DECODER = jwt.PyJWT(
    {"require": ["iss", "sub", "exp", "iat", "jti", "client_id"], "verify_aud": False}
)


def access_token_claims(
    *,
    issuer: str,
    client_id: str,
    scopes: tuple[str, ...],
    audiences: tuple[str, ...],
    jti: str,
    iat: int,
    exp: int,
) -> dict[str, Any]:
    """The §2.2 claims of a client credentials token; its subject is the client itself."""
    if not audiences:
        raise InvalidTarget(
            "a JWT access token needs an audience (RFC 9068 §2.2); register the client with one"
        )
    return {
        "iss": issuer,
        "sub": client_id,
        "aud": audiences[0] if len(audiences) == 1 else list(audiences),
        "exp": exp,
        "iat": iat,
        "nbf": iat,
        "jti": jti,
        "client_id": client_id,
        "scope": " ".join(scopes),
    }


def jwt_shaped(token: str) -> bool:
    """Whether `token` could be a compact JWS of acceptable length: a test without parsing."""
    return len(token) <= MAX_LENGTH and token.count(".") == 2


def header(token: str) -> tuple[str, str] | None:
    """(alg, kid) when `token` is shaped like one of our access tokens, else None; no I/O."""
    if not jwt_shaped(token):
        return None
    try:
        fields = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        return None
    typ, alg, kid = fields.get("typ"), fields.get("alg"), fields.get("kid")
    if not isinstance(typ, str) or typ.lower() not in _TYPES:
        return None
    if not isinstance(alg, str) or alg not in signing.ALGORITHMS or not isinstance(kid, str):
        return None
    return alg, kid


def verify(token: str, key: SigningKey, alg: str, issuer: str) -> dict[str, Any] | None:
    """The claims of `token` when `key` signed it with `alg` for `issuer` and it is live now."""
    if alg != key.alg:
        return None
    try:
        return _DECODER.decode(token, key.verifier, algorithms=[key.alg], issuer=issuer)
    except jwt.PyJWTError:
        return None
