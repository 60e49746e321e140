"""Service-client access keys: one string that lets a service authenticate as its client
with RFC 7523 `private_key_jwt`, from nothing else.

The server makes the Ed25519 key pair (`generate`), registers the public key
in the client's JWK Set under a new `kid`, and shows the access key once; it
never stores the private key. The string is

    iak_ + base64url (RFC 4648 §5, no padding) of the compact JSON object
    {"client_id": CLIENT_ID, "kid": KID, "d": D}

where D is the 32-byte Ed25519 private key as base64url without padding (the
`d` member of an RFC 8037 OKP JWK). `parse` reads it back, strictly, and
`AccessKey.assertion` signs a client assertion (RFC 7523 §3) with it, as the
SDK's token provider does. Pure: no I/O, no server dependency beyond PyJWT
and cryptography.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

import jwt
import orjson
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


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


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

    def encode(self) -> str:
        """The access key string (a secret: shown once, never stored by the server)."""
        payload = {"client_id": self.client_id, "kid": self.kid, "d": _b64(self.private_bytes())}
        return PREFIX + _b64(orjson.dumps(payload))

    def private_bytes(self) -> bytes:
        """The 32-byte Ed25519 private key."""
        return self.private.private_bytes_raw()

    def public_jwk(self) -> dict[str, Any]:
        """The public key as the client's JWK Set holds it (RFC 8037 §2)."""
        x = _b64(self.private.public_key().public_bytes_raw())
        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": x,
            "kid": self.kid,
            "alg": ALGORITHM,
            "use": "sig",
        }

    def assertion(
        self, audience: str, *, now: int | None = None, lifetime: int = ASSERTION_LIFETIME
    ) -> str:
        """A client assertion (RFC 7523 §3) for `audience`, e.g. the token endpoint's URL,
        with a fresh `jti`."""
        iat = int(time.time()) if now is None else now
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": audience,
            "iat": iat,
            "exp": iat + lifetime,
            "jti": secrets.token_urlsafe(16),
        }
        return jwt.encode(claims, self.private, algorithm=ALGORITHM, headers={"kid": self.kid})


def generate(client_id: str, kid: str) -> AccessKey:
    """A new access key for `client_id`: a fresh Ed25519 key pair under `kid`."""
    return AccessKey(_field(client_id), _field(kid), ed25519.Ed25519PrivateKey.generate())


def parse(text: str) -> AccessKey:
    """The access key a string holds; `MalformedAccessKey` when it holds none."""
    if not text.startswith(PREFIX) or len(text) > MAX_LENGTH:
        raise MalformedAccessKey(f"an access key starts with {PREFIX} and is short")
    try:
        payload = orjson.loads(_unb64(text[len(PREFIX) :]))
    except orjson.JSONDecodeError:
        raise MalformedAccessKey("the access key does not hold a JSON object") from None
    if not isinstance(payload, dict) or set(payload) != {"client_id", "kid", "d"}:
        raise MalformedAccessKey("the access key must hold exactly client_id, kid and d")
    d = payload["d"]
    seed = _unb64(d) if isinstance(d, str) else b""
    if len(seed) != 32:
        raise MalformedAccessKey("d must be a 32-byte Ed25519 private key")
    private = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    return AccessKey(_field(payload["client_id"]), _field(payload["kid"]), private)
