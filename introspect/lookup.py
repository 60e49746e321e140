"""Presented credentials to cache entries: the read path of /introspect.

A presented credential, opaque or JWT, is looked up by its keyed hash under
every server secret; a malformed one costs no I/O, and a JWT is verified
locally before anything but the in-process cache is asked.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from introspect import credentials, rfc7662, rfc9068, store
from introspect.cache import Coalescer, CredentialCache, Entry, inactive, uncacheable
from introspect.credentials import Kind
from introspect.metrics import METRICS

_INACTIVE = inactive(cacheable=False)


class CredentialLookup:
    """The cache entry of each presented credential, through the three cache layers."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        cache: CredentialCache,
        server_secrets: tuple[bytes, ...],
        issuer: str,
        jwt_claims: Callable[[str], Awaitable[dict[str, Any] | None]],
        *,
        memo_size: int,
    ) -> None:
        self.pool = pool
        self.cache = cache
        self.server_secrets = server_secrets
        self.issuer = issuer
        self.jwt_claims = jwt_claims
        # Presented credential -> its keyed hash under the first server secret, for
        # well-formed ones recently seen: the hash is a pure function of the string, so this
        # never needs invalidating, and a repeated presentation skips the format check and
        # the HMAC. It serves in-process hits only, so it holds as many credentials as the
        # in-process cache holds entries; each costs its string (an opaque credential is
        # about 60 bytes, a JWT we issue under 1 KiB).
        self.hashed: OrderedDict[str, bytes] = OrderedDict()
        self.memo_size = memo_size
        # Postgres lookups of one event-loop iteration share one query.
        self._finds: Coalescer[tuple[bytes, ...], store.Credential] = Coalescer(
            self._find_many, flights=2
        )

    async def lookup(self, token: str, key: bytes | None = None) -> Entry:
        """The cache entry for a presented credential, opaque or JWT; malformed ones cost no I/O.

        `key` is its keyed hash when the caller found it in `hashed`. A JWT is
        looked up like an opaque credential, by the keyed hash of the whole
        string; before anything but the in-process cache is asked, it is
        verified locally (RFC 9068 §4). An in-process entry was only ever stored
        after this worker verified that very string.
        """
        if key is not None and "." not in token:
            # Memoized, and no JWT (a compact JWS has two dots, an opaque credential none):
            # a well-formed opaque credential, parsed when first seen (a read through Redis
            # after an in-process miss skips the format check, as an in-process hit does).
            jwt = False
        else:
            kind = credentials.parse(token)
            jwt = kind is not Kind.ACCESS_TOKEN and kind is not Kind.API_KEY
            if jwt and (kind is not None or not rfc9068.jwt_shaped(token)):
                return _INACTIVE
        secrets = self.server_secrets
        primary = credentials.keyed_hash(secrets[0], token) if key is None else key
        refused = False
        admit = None
        if jwt:

            async def admit() -> bool:
                nonlocal refused
                refused = await self.jwt_claims(token) is None
                return not refused

        async def load() -> Entry:
            hashes = (primary, *(credentials.keyed_hash(s, token) for s in secrets[1:]))
            found = await self._finds.get(hashes)
            entry = rfc7662.entry_for(found, self.issuer)
            if found is not None and found.hash != primary:
                # Stored under an older server secret: move it to the current one,
                # and cache nothing until writers and readers agree on the key.
                await store.rehash(self.pool, found.id, found.hash, primary)
                entry = uncacheable(entry)
            return entry

        entry = await self.cache.lookup(primary, load, admit)
        # A JWT is remembered only once verified (an in-process entry of one was stored after
        # verifying it): up to 8 KiB of anyone's forged string must not be kept per entry.
        if key is None and not refused:
            self.remember(token, primary)
        return entry

    def key_of(self, token: str) -> bytes | None:
        """The keyed hash of a presented credential that `hashed` lacks, if it can be told
        with no I/O: a well-formed opaque credential, hashed now (and memoized); None for a
        JWT (verified before it is memoized) and for a malformed value (`lookup` answers
        both).

        The memo holds the values of final answers too, so once a Zipf tail outgrows it, it
        forgets credentials whose entries the in-process cache still holds: without the hash
        made here, each of those went through the async tail to be answered from memory
        after all (5 % of the mix's requests with 10,000,000 seeded).
        """
        if "." in token:  # (a compact JWS has two dots, ours none)
            return None
        kind = credentials.parse(token)
        if kind is not Kind.ACCESS_TOKEN and kind is not Kind.API_KEY:
            return None
        key = credentials.keyed_hash(self.server_secrets[0], token)
        self.remember(token, key)
        return key

    def remember(self, token: str, key: bytes) -> None:
        """Memoize the keyed hash of a well-formed opaque credential or a verified JWT."""
        hashed = self.hashed
        if self.memo_size <= 0:
            return
        if token not in hashed and len(hashed) >= self.memo_size:
            hashed.popitem(last=False)  # the oldest insertion, as in the in-process cache
        hashed[token] = key

    async def _find_many(
        self, wanted: list[tuple[bytes, ...]]
    ) -> dict[tuple[bytes, ...], store.Credential]:
        """The credentials of several lookups (each one hash per server secret), in one query."""
        METRICS.pg_queries.inc()
        found = await store.find_credentials(self.pool, [h for hashes in wanted for h in hashes])
        by_hash = {credential.hash: credential for credential in found}
        out = {}
        for hashes in wanted:
            for h in hashes:
                if h in by_hash:
                    out[hashes] = by_hash[h]
                    break
        return out
