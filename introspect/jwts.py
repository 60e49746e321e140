"""JWTs under our signing keys: presented access tokens admitted (RFC 9068), introspection
answers (RFC 9701) and revocation feed events (RFC 8417) signed."""

from __future__ import annotations

from typing import Any

from introspect import rfc8417, rfc9068, rfc9701, signing, store
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

    async def sign_event(
        self, audience: str, jti: str, event_type: str, payload: dict[str, Any]
    ) -> str:
        """RFC 8417: one event as a SET signed for `audience` (a client_id)."""
        iat = store.now()
        claims = rfc8417.set_claims(
            issuer=self.issuer,
            audience=audience,
            iat=iat,
            jti=jti,
            event_type=event_type,
            payload=payload,
        )
        return await self.keyring.sign(claims, rfc8417.TYP, iat + rfc8417.VERIFY_WINDOW)
