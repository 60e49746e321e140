"""RFC 7523 §2.2 and §3: JWT client authentication (`private_key_jwt`), with the
parameters of RFC 7521 §4.2.

A client registered with a JWK Set (`clients.jwks`) authenticates by sending
`client_assertion_type` = `urn:ietf:params:oauth:client-assertion-type:jwt-bearer`
and `client_assertion`, a JWT it signed with one of those keys (ES256,
EdDSA, RS256 or PS256; never `none`, never HS*). Following §3: `iss` and
`sub` are its client_id; `aud` names our issuer or one of our endpoint
URLs; `exp` is required and at most `MAX_LIFETIME` seconds after `iat` (or
now, without `iat`); `jti` is required and used once: `Assertions.first_use`
remembers it until the assertion expires, in a store every worker shares,
so a replay on any worker fails; it is also told since when the assertion
could have been presented (`iat` less the leeway, or `exp` less the maximum
lifetime without `iat`), so that a replay memory that may have been lost
since can refuse it. Half of the parameter pair is
`invalid_request`; every other failure is `invalid_client` (§3.2).
Pure protocol logic: the authority passes in the client lookup and the
replay memory.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import jwt

from introspect import jwks
from introspect.errors import InvalidClient, InvalidRequest
from introspect.store import Client, now

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# The RFC 7591 token_endpoint_auth_method of a client that authenticates only this way.
PRIVATE_KEY_JWT = "private_key_jwt"
ALGORITHMS = jwks.ALGORITHMS
# An hour: Authlib's assertions live exactly that by default (openid-client's a minute).
# The replay memory keeps each jti until its assertion expires.
MAX_LIFETIME = 3600
# Clock skew allowed between the client and us, on exp, nbf and iat.
LEEWAY = 30
MAX_LENGTH = 8 * 1024
MAX_KEYS_TRIED = 4
_DECODER = jwt.PyJWT(
    {"require": ["iss", "sub", "aud", "exp", "jti"], "enforce_minimum_key_length": True}
)

GetClient = Callable[[str], Awaitable[Client | None]]
# (client_id, jti, presented at the earliest at, remember until; epoch seconds)
# -> whether this is the first use.
FirstUse = Callable[[str, str, int, int], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class Assertions:
    """What checking an assertion needs from the authority: our audiences and replay memory."""

    audiences: frozenset[str]
    first_use: FirstUse


def _failed(detail: str) -> InvalidClient:
    return InvalidClient("client authentication failed", detail=detail)


def _keys(key_set: dict[str, Any], kid: str | None, alg: str) -> list[jwt.PyJWK]:
    """The client's public keys that may have made a signature with `alg` (and `kid`)."""
    listed = key_set.get("keys")
    if not isinstance(listed, list):
        return []
    kty, crv = jwks.KEY_TYPES[alg]
    found = []
    for jwk in listed:
        if (
            not isinstance(jwk, dict)
            or (kid is not None and jwk.get("kid") != kid)
            or jwk.get("kty") != kty
            or jwk.get("crv") != crv
            or jwk.get("alg", alg) != alg
            or jwk.get("use", "sig") != "sig"
            or "d" in jwk  # private material never belongs in a registered JWK Set
        ):
            continue
        try:
            found.append(jwt.PyJWK(jwk, algorithm=alg))
        except (jwt.PyJWTError, ValueError, TypeError):
            continue
        if len(found) == MAX_KEYS_TRIED:
            break
    return found


def _verified(
    assertion: str, client: Client, alg: str, kid: str | None, audiences: frozenset[str]
) -> dict[str, Any]:
    if not isinstance(client.jwks, dict):
        raise _failed(f"client {client.client_id} has no JWK Set")
    for key in _keys(client.jwks, kid, alg):
        try:
            return _DECODER.decode(
                assertion,
                key,
                algorithms=[alg],
                audience=list(audiences),
                issuer=client.client_id,
                subject=client.client_id,
                leeway=LEEWAY,
            )
        except jwt.InvalidSignatureError:
            continue
        except jwt.PyJWTError as exc:
            raise _failed(f"client assertion rejected: {exc}") from None
    raise _failed("no registered key verifies the client assertion")


async def authenticate(
    params: dict[str, str], get_client: GetClient, assertions: Assertions
) -> Client:
    """The client that authenticated with a `private_key_jwt` assertion in `params`."""
    assertion = params.get("client_assertion")
    assertion_type = params.get("client_assertion_type")
    if assertion is None or assertion_type is None:
        raise InvalidRequest("client_assertion and client_assertion_type go together")
    if assertion_type != ASSERTION_TYPE:
        raise InvalidClient(f"client_assertion_type must be {ASSERTION_TYPE}")
    if len(assertion) > MAX_LENGTH:
        raise _failed("client assertion too long")
    try:
        unverified = jwt.decode_complete(assertion, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise _failed("malformed client assertion") from None
    alg, kid = unverified["header"].get("alg"), unverified["header"].get("kid")
    client_id = unverified["payload"].get("iss")
    if not isinstance(alg, str) or alg not in ALGORITHMS:
        raise _failed("client assertion algorithm not allowed")
    if not isinstance(client_id, str) or not 0 < len(client_id) <= 200:
        raise _failed("client assertion has no usable iss")
    if params.get("client_id", client_id) != client_id:
        raise _failed("client_id does not match the client assertion")
    client = await get_client(client_id)
    if client is None or client.disabled:
        raise _failed("unknown or disabled client")
    claims = _verified(assertion, client, alg, kid, assertions.audiences)
    exp = int(claims["exp"])
    iat = claims.get("iat")
    if exp - int(now() if iat is None else iat) > MAX_LIFETIME:
        raise _failed("client assertion valid for too long")
    jti = claims["jti"]
    if not 0 < len(jti) <= 256:
        raise _failed("client assertion jti is empty or too long")
    # PyJWT refused an iat more than LEEWAY ahead; without iat, exp bounds it.
    presented_from = exp - MAX_LIFETIME if iat is None else int(iat) - LEEWAY
    if not await assertions.first_use(client_id, jti, presented_from, exp + LEEWAY):
        raise _failed("client assertion replayed")
    return client
