"""What a protected route answers (RFC 6750 §3 and §3.1), decided from an RFC 7662 answer.

Framework-free: `authenticate`'s outcome and `require` give either the
introspection answer the handler sees, or a `Refusal` (status, headers, body)
that the aiohttp and ASGI glue write as they are:

- no credential, or an inactive one: 401, `WWW-Authenticate: Bearer error="invalid_token"`;
- an inactive answer that carries the rate-limit fields of the introspection
  response (`Retry-After`, `RateLimit`, `RateLimit-Policy`): 429 with those fields;
- an active credential without a scope the route requires: 403,
  `WWW-Authenticate: Bearer error="insufficient_scope", scope="..."`;
- introspect cannot be asked and nothing valid is cached: 503. Never the route.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# The introspection response's fields a 429 passes on to the caller
# (draft-ietf-httpapi-ratelimit-headers, and RFC 9110 §10.2.3).
LIMIT_FIELDS = ("Retry-After", "RateLimit", "RateLimit-Policy")


@dataclass(frozen=True, slots=True)
class Introspection:
    """An RFC 7662 answer as a handler sees it; `claims` is the whole answer."""

    active: bool
    scope: frozenset[str] = frozenset()
    client_id: str | None = None
    sub: str | None = None
    jti: str | None = None
    exp: int | None = None
    kind: str | None = None
    username: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    claims: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, claims: Mapping[str, Any]) -> Introspection:
        """Read an answer; anything but `"active": true` is inactive, whatever else it says."""
        if claims.get("active") is not True:
            return INACTIVE
        scope = claims.get("scope")
        metadata = claims.get("metadata")
        exp = claims.get("exp")
        return cls(
            active=True,
            scope=frozenset(scope.split()) if isinstance(scope, str) else frozenset(),
            client_id=_text(claims.get("client_id")),
            sub=_text(claims.get("sub")),
            jti=_text(claims.get("jti")),
            exp=exp if isinstance(exp, int) and not isinstance(exp, bool) else None,
            kind=_text(claims.get("kind")),
            username=_text(claims.get("username")),
            metadata=metadata if isinstance(metadata, dict) else {},
            claims=dict(claims),
        )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


INACTIVE = Introspection(active=False, claims={"active": False})


@dataclass(frozen=True, slots=True)
class Refusal:
    """An answer to the caller instead of the route: status, headers and a JSON body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @classmethod
    def of(
        cls, status: int, error: str, description: str, headers: Iterable[tuple[str, str]] = ()
    ) -> Refusal:
        """A refusal with an `{"error", "error_description"}` body."""
        body = json.dumps({"error": error, "error_description": description}).encode()
        return cls(status, (*headers, ("Content-Type", "application/json")), body)


INVALID_TOKEN = ("WWW-Authenticate", 'Bearer error="invalid_token"')


def missing() -> Refusal:
    """No credential in the request (RFC 6750 §3.1 `invalid_token`, as the SPEC asks)."""
    return Refusal.of(401, "invalid_token", "a credential is required", [INVALID_TOKEN])


def inactive(limit_headers: Iterable[tuple[str, str]] = ()) -> Refusal:
    """An inactive credential: 429 when introspect said a limit ran out, else 401."""
    fields = tuple(limit_headers)
    if fields:
        return Refusal.of(429, "rate_limited", "the credential's limit is exhausted", fields)
    return Refusal.of(401, "invalid_token", "the credential is not active", [INVALID_TOKEN])


def unavailable() -> Refusal:
    """Introspect could not be asked and no valid answer was cached: refuse, never pass."""
    return Refusal.of(
        503,
        "temporarily_unavailable",
        "the credential cannot be checked now",
        [("Retry-After", "1")],
    )


def require(answer: Introspection, scopes: Iterable[str]) -> Refusal | None:
    """The 403 for an active answer lacking one of `scopes` (RFC 6750 §3.1), or None."""
    wanted = tuple(scopes)
    lacking = [s for s in wanted if s not in answer.scope]
    if not answer.active:
        return inactive()
    if not lacking:
        return None
    named = " ".join(wanted)
    challenge = f'Bearer error="insufficient_scope", scope="{named}"'
    return Refusal.of(
        403,
        "insufficient_scope",
        f"this route needs scope {named}",
        [("WWW-Authenticate", challenge)],
    )


def limit_headers(headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The rate-limit fields an introspection response carries (case-insensitive `headers`)."""
    return tuple((name, headers[name]) for name in LIMIT_FIELDS if name in headers)


def bearer(headers: Mapping[str, str], api_key_header: str | None = None) -> str | None:
    """The credential of a request: `Authorization: Bearer X` (RFC 6750 §2.1), else the
    named API-key header; None when neither holds one. `headers` is case-insensitive."""
    authorization = headers.get("Authorization")
    if authorization is not None:
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token and " " not in token:
            return token
    if api_key_header is not None:
        value = headers.get(api_key_header, "").strip()
        if value:
            return value
    return None
