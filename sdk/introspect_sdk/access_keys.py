"""Service-client access keys, the reading side: the string `POST /admin/clients/{id}/access-keys`
shows once, parsed strictly, and the RFC 7523 §3 client assertions it signs.

The string is

    iak_ + base64url (RFC 4648 §5, no padding) of the compact JSON object
    {"client_id": CLIENT_ID, "kid": KID, "d": D}

where D is the 32-byte Ed25519 private key as base64url without padding (the
`d` member of an RFC 8037 OKP JWK). The server writes it (`introspect.access_keys`
generates the key pair and registers the public half under `kid`); a service
reads it here and signs `private_key_jwt` assertions with it. Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import time
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives.asymmetric import ed25519

PREFIX = "iak_"
ALGORITHM = "EdDSA"
# Default lifetime of an assertion made by `AccessKey.assertion`, in seconds.
ASSERTION_LIFETIME = 60
MAX_LENGTH = 1024
_MAX_FIELD = 256
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


class MalformedAccessKey(ValueError):
    """A string that is not an access key (the message never repeats any of it)."""


def _unb64(text: str) -> bytes:
    if len(text) % 4 == 1 or not _BASE64URL.fullmatch(text):
        raise MalformedAccessKey("not base64url without padding")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error:
        raise MalformedAccessKey("not base64url without padding") from None


def _field(value: object) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_FIELD or not value.isprintable():
        raise MalformedAccessKey("client_id and kid must be short printable strings")
    return value


@dataclass(frozen=True, slots=True, repr=False)
class AccessKey:
    """A client id, the kid its public key is registered under, and the private key."""

    client_id: str
    kid: str
    private: ed25519.Ed25519PrivateKey

    def __repr__(self) -> str:
        """Never the private key."""
        return f"AccessKey(client_id={self.client_id!r}, kid={self.kid!r})"

    def assertion(
        self, audience: str, *, now: int | None = None, lifetime: int = ASSERTION_LIFETIME
    ) -> str:
        """A client assertion (RFC 7523 §3) for `audience`, e.g. the token endpoint's URL,
        with a fresh `jti`."""
        return sign_assertion(
            self.client_id, self.private, ALGORITHM, self.kid, audience, now=now, lifetime=lifetime
        )


def sign_assertion(
    client_id: str,
    private: object,
    algorithm: str,
    kid: str | None,
    audience: str,
    *,
    now: int | None = None,
    lifetime: int = ASSERTION_LIFETIME,
) -> str:
    """An RFC 7523 §3 client assertion: iss = sub = `client_id`, a fresh `jti`, signed with
    `private` (any key PyJWT takes for `algorithm`), `kid` in the header when given."""
    iat = int(time.time()) if now is None else now
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "iat": iat,
        "exp": iat + lifetime,
        "jti": secrets.token_urlsafe(16),
    }
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(claims, private, algorithm=algorithm, headers=headers)  # type: ignore[arg-type]


def parse(text: str) -> AccessKey:
    """The access key a string holds; `MalformedAccessKey` when it holds none."""
    if not text.startswith(PREFIX) or len(text) > MAX_LENGTH:
        raise MalformedAccessKey(f"an access key starts with {PREFIX} and is short")
    try:
        payload = json.loads(_unb64(text[len(PREFIX) :]))
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError alike
        raise MalformedAccessKey("the access key does not hold a JSON object") from None
    if not isinstance(payload, dict) or set(payload) != {"client_id", "kid", "d"}:
        raise MalformedAccessKey("the access key must hold exactly client_id, kid and d")
    d = payload["d"]
    seed = _unb64(d) if isinstance(d, str) else b""
    if len(seed) != 32:
        raise MalformedAccessKey("d must be a 32-byte Ed25519 private key")
    private = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    return AccessKey(_field(payload["client_id"]), _field(payload["kid"]), private)
