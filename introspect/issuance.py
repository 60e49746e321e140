"""Issuing access tokens (RFC 6749 §4.4), opaque or JWT (RFC 9068), stored by their hash."""

from __future__ import annotations

from typing import Any

import asyncpg

from introspect import credentials, rfc9068, signing, store
from introspect.cache import Coalescer
from introspect.credentials import Kind
from introspect.ids import new_id
from introspect.metrics import METRICS
from introspect.rfc6749 import Grant
from introspect.store import Client


class AccessTokens:
    """New access tokens, stored by their keyed hash under the first server secret."""

    def __init__(
        self,
        lazy_pool: asyncpg.Pool,
        keyring: signing.Keyring,
        server_secrets: tuple[bytes, ...],
        issuer: str,
    ) -> None:
        # New access tokens are stored on the pool whose commits do not wait for the WAL
        # flush: one forgotten in a crash introspects inactive.
        self.lazy_pool = lazy_pool
        self.keyring = keyring
        # The first server secret hashes new credentials.
        self.server_secrets = server_secrets
        self.issuer = issuer
        # Access tokens issued in one event-loop iteration are stored by one COPY.
        self._issues: Coalescer[tuple[Any, ...], None] = Coalescer(self._store, flights=2)

    async def issue(self, client: Client, grant: Grant) -> tuple[str, int]:
        """Store and return a new access token for `client` in its format, and its lifetime.

        A JWT (RFC 9068) is stored like an opaque token: by the keyed hash of
        the whole string, its `jti` as the credential id.
        """
        credential_id = new_id("tok")
        iat = store.now()
        exp = iat + client.token_ttl
        if client.token_format == "jwt":
            claims = rfc9068.access_token_claims(
                issuer=self.issuer,
                client_id=client.client_id,
                scopes=grant.scopes,
                audiences=grant.audiences,
                jti=credential_id,
                iat=iat,
                exp=exp,
            )
            token = await self.keyring.sign(claims, rfc9068.TYP, exp)
        else:
            token = credentials.generate(Kind.ACCESS_TOKEN)
        row = (
            credential_id,
            Kind.ACCESS_TOKEN.value,
            client.token_format,
            credentials.keyed_hash(self.server_secrets[0], token),
            client.client_id,
            client.client_id,
            grant.scopes,
            grant.audiences,
            iat,
            iat,
            exp,
        )
        await self._issues.get(row)
        METRICS.tokens_issued.inc()
        return token, client.token_ttl

    async def _store(self, rows: list[tuple[Any, ...]]) -> dict[Any, None]:
        """Store the access tokens issued in one loop iteration with one COPY."""
        METRICS.pg_queries.inc()
        await store.copy_access_tokens(self.lazy_pool, rows)
        return {}
