"""JWTs under our signing keys: presented access tokens admitted (RFC 9068), introspection
answers signed (RFC 9701)."""

from __future__ import annotations

from typing import Any

from introspect import rfc9068, rfc9701, signing, store
from introspect.store import Client


class Jwts:
    """Verifies and signs with the published keys of `keyring`, as `issuer`."""

    def __init__(self, keyring: signing.Keyring, issuer: str) -> None:
        self.keyring = keyring
        self.issuer = issuer

    async def claims(self, token: str) -> dict[str, Any] | None:
        """The claims of a live JWT access token signed by one of our published keys, or None."""
        found = rfc9068.header(token)
        if found is None:
            return None
        alg, kid = found
        key = await self.keyring.verification_key(kid)
        if key is None:
            return None
        return rfc9068.verify(token, key, alg, self.issuer)

    async def sign_introspection(self, caller: Client, answer: bytes) -> bytes:
        """RFC 9701 §5: `answer` as a JWT signed for `caller`."""
        iat = store.now()
        claims = rfc9701.response_claims(answer, self.issuer, caller.client_id, iat)
        signed = await self.keyring.sign(claims, rfc9701.TYP, iat + rfc9701.VERIFY_WINDOW)
        return signed.encode()
