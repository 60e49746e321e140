"""RFC 9701: JWT response for OAuth token introspection (§4 request, §5 response).

A caller that asks for `application/token-introspection+jwt` in `Accept`
(§4) gets the RFC 7662 answer as the `token_introspection` claim of a JWT
signed by the current signing key (§5): header `typ:
token-introspection+jwt`; claims `iss`, `aud` (the caller's client_id),
`iat` and `token_introspection`, which is exactly `{"active": false}` for an
inactive credential. As §5 and §8.1 advise, there is no `sub` and no `exp`,
so the answer cannot pass for an access token. The signing algorithms are
advertised as `introspection_signing_alg_values_supported` (§6).
"""

from __future__ import annotations

from typing import Any

import orjson

MEDIA_TYPE = "application/token-introspection+jwt"
TYP = "token-introspection+jwt"
# How long after `iat` a resource server may still be verifying an answer:
# its signing key stays published at least that long.
VERIFY_WINDOW = 60


def _quality(params: list[str]) -> float:
    for param in params:
        name, _, value = param.strip().partition("=")
        if name.strip().lower() == "q":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 1.0


def wants_jwt(accept: str | None) -> bool:
    """Whether an `Accept` header prefers the signed answer to plain JSON (§4)."""
    if not accept or "jwt" not in accept.lower():
        return False
    jwt_q = json_q = 0.0
    for item in accept.split(",")[:32]:
        media, *params = item.split(";")
        media = media.strip().lower()
        if media == MEDIA_TYPE:
            jwt_q = max(jwt_q, _quality(params))
        elif media == "application/json":
            json_q = max(json_q, _quality(params))
    return jwt_q > 0 and jwt_q >= json_q


def response_claims(answer: bytes, issuer: str, audience: str, iat: int) -> dict[str, Any]:
    """The §5 claims carrying an RFC 7662 answer (its exact JSON bytes) to `audience`."""
    return {
        "iss": issuer,
        "aud": audience,
        "iat": iat,
        "token_introspection": orjson.loads(answer),
    }
