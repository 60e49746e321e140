"""Service-client access keys, the issuing side: one string that lets a service authenticate as
its client with RFC 7523 `private_key_jwt`, from nothing else.

The server makes the Ed25519 key pair (`generate`), registers the public key
in the client's JWK Set under a new `kid`, and shows the access key once; it
never stores the private key. The string is

    iak_ + base64url (RFC 4648 §5, no padding) of the compact JSON object
    {"client_id": CLIENT_ID, "kid": KID, "d": D}

where D is the 32-byte Ed25519 private key as base64url without padding (the
`d` member of an RFC 8037 OKP JWK). The reading side (strict parsing, signing
client assertions) belongs to the services that hold such keys: it lives in the
resource-server SDK, `introspect_sdk.access_keys`, which the tests read these
strings with. Pure: no I/O.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric import ed25519

PREFIX = "iak_"
ALGORITHM = "EdDSA"
_MAX_FIELD = 256


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


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
        d = _b64(self.private.private_bytes_raw())
        payload = {"client_id": self.client_id, "kid": self.kid, "d": d}
        return PREFIX + _b64(orjson.dumps(payload))

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


def generate(client_id: str, kid: str) -> AccessKey:
    """A new access key for `client_id`: a fresh Ed25519 key pair under `kid`."""
    for value in (client_id, kid):
        if not 0 < len(value) <= _MAX_FIELD or not value.isprintable():
            raise ValueError("client_id and kid must be short printable strings")
    return AccessKey(client_id, kid, ed25519.Ed25519PrivateKey.generate())
