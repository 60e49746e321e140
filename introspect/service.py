"""The authority: the one object that the HTTP views and the CLI call for every operation.

It is the composition root: it opens nothing itself (see `open_authority`),
and wires the parts that do the work over the caches and the stores:
`ClientRecords` (client_records.py), `CredentialLookup` (lookup.py, the read
path of /introspect), `AccessTokens` (issuance.py), `Jwts` (jwts.py),
`AssertionReplay` (replay.py), `UsageLog` (usage.py), `Meter`
(limits/meter.py) and `Discovery` (discovery.py). Every change runs in one
Postgres transaction that also records its invalidation in the outbox and its
audit entry, and is then announced (`CredentialCache.announce`): the one place where cache
invalidations are published. The CLI uses the same object without a
listener, so its changes publish the same invalidations.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import asyncpg

from introspect import (
    credentials,
    revocation,
    rfc6749,
    rfc7009,
    rfc7523,
    rfc8414,
    signing,
    store,
)
from introspect.cache import (
    Announced,
    CredentialCache,
    Entry,
    Invalidation,
    Listener,
    LocalCache,
)
from introspect.client_records import ClientRecords
from introspect.config import Settings
from introspect.credentials import Kind
from introspect.discovery import Discovery
from introspect.feed import RETENTION_MARGIN, Feed
from introspect.ids import new_id
from introspect.issuance import AccessTokens
from introspect.jwts import Jwts
from introspect.limits import Meter
from introspect.lookup import CredentialLookup
from introspect.metrics import METRICS
from introspect.redis import Redis, open_redis
from introspect.replay import AssertionReplay
from introspect.revocation import NOTHING_REVOKED, Revoked
from introspect.rfc6749 import Grant
from introspect.store import AuditEntry, Client, NewClient, Selection
from introspect.usage import UsageLog

# Importable here as before the split (admin, tests).
__all__ = [
    "Authority",
    "Revoked",
    "new_id",
    "open_authority",
]

T = TypeVar("T")
log = logging.getLogger(__name__)


# The deadline of every Redis operation (seconds): a reply, a connection, a free pooled
# connection. Redis answers in well under a millisecond; past this it is treated as down
# (answers come from Postgres) until it answers again. Under a second, since a lookup that
# misses Redis still has a Postgres read to make; not much less, since a worker whose event
# loop stalls briefly must not take a slow reply for a dead server.
REDIS_TIMEOUT = 0.5


class Authority:
    """Every operation on clients and credentials, over the three cache layers."""

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        redis: Redis,
        lazy_pool: asyncpg.Pool | None = None,
    ) -> None:
        self.settings = settings
        self.pool = pool
        # Commits on this pool do not wait for the WAL flush. Only writes whose loss in a
        # crash fails closed go there: new access tokens (forgotten ones introspect
        # inactive) and deletes of published outbox rows (forgotten ones are replayed).
        self.lazy_pool = lazy_pool or pool
        # The HMAC keys of stored credential hashes: the first hashes new credentials, the
        # others still verify old ones (INTROSPECT_SECRET).
        self.server_secrets = settings.secrets
        self.local = LocalCache(settings.local_cache_size, settings.local_cache_ttl)
        self.cache = CredentialCache(
            pool,
            redis,
            local=self.local,
            redis_ttl=settings.redis_cache_ttl,
            negative_ttl=settings.negative_cache_ttl,
            lazy_pool=lazy_pool,
        )
        self.listener: Listener | None = None
        self.keyring = signing.Keyring(pool, settings.secrets)
        self.clients = ClientRecords(pool, self.cache, self.local)
        self.usage = UsageLog(self.lazy_pool)
        # Rate limits and credits (introspect/limits/): leases from Redis and Postgres.
        self.meter = Meter(redis, pool)
        self.jwts = Jwts(self.keyring, self.issuer)
        self.lookups = CredentialLookup(
            pool,
            self.cache,
            settings.secrets,
            self.issuer,
            self.jwts.claims,
            memo_size=settings.local_cache_size,
        )
        # What rfc7662's decision reads from memory (see rfc7662.Memory), and the memo it
        # reads through.
        self.key_of = self.lookups.key_of
        self.hashed = self.lookups.hashed
        self.access_tokens = AccessTokens(
            self.lazy_pool, self.keyring, settings.secrets, self.issuer
        )
        self.discovery = Discovery(pool, self.local, self.issuer)
        self.feed = Feed(pool, self.jwts, settings.longest_cache_ttl + RETENTION_MARGIN)
        self.assertions = rfc7523.Assertions(
            audiences=frozenset([self.issuer, *rfc8414.endpoints(self.issuer).values()]),
            first_use=AssertionReplay(self.cache, settings.secrets).first_use,
        )

    @property
    def issuer(self) -> str:
        """`iss` of everything issued."""
        return self.settings.issuer

    async def listen(self) -> None:
        """Subscribe to invalidations; the in-process cache is used only while subscribed."""
        await self.cache.start()
        self.listener = Listener(self.cache.redis, self.local, on_change=self.feed.waker.wake)
        self.feed.listening = self.listener.subscribed.is_set
        self.listener.start()
        self.feed.start()
        METRICS.polls_waiting = lambda: self.feed.waiting
        self.cache.start_sweeper()
        self.usage.start()
        self.meter.start()

    async def close(self) -> None:
        """Stop the listener and background tasks (the pools are closed by their owner)."""
        await self.feed.close()
        if self.listener is not None:
            await self.listener.stop()
        await self.usage.stop()
        await self.meter.stop()
        await self.cache.close()

    # --- the parts' operations, as the views and the CLI call them -------------------------

    def note_admin_use(self, key_id: str) -> None:
        """Remember that an admin key was just accepted (see UsageLog)."""
        self.usage.note_admin_use(key_id)

    async def flush_usage(self) -> int:
        """Write the remembered last uses now; how many keys it touched (see UsageLog)."""
        return await self.usage.flush()

    async def get_client(self, client_id: str) -> Client | None:
        """A client record, through the cache layers (see ClientRecords.get)."""
        return await self.clients.get(client_id)

    async def metadata(self) -> bytes:
        """The RFC 8414 document (see Discovery)."""
        return await self.discovery.metadata()

    async def jwt_claims(self, token: str) -> dict[str, Any] | None:
        """The claims of a live JWT access token signed by one of our published keys, or None."""
        return await self.jwts.claims(token)

    async def sign_introspection(self, caller: Client, answer: bytes) -> bytes:
        """RFC 9701 §5: `answer` as a JWT signed for `caller`."""
        return await self.jwts.sign_introspection(caller, answer)

    async def issue_access_token(self, client: Client, grant: Grant) -> tuple[str, int]:
        """A new access token for `client`, stored, and its lifetime (see AccessTokens)."""
        return await self.access_tokens.issue(client, grant)

    def lookup(self, token: str, key: bytes | None = None) -> Coroutine[Any, Any, Entry]:
        """The cache entry for a presented credential (see CredentialLookup): its coroutine
        itself, not one more frame around it on every read through Redis."""
        return self.lookups.lookup(token, key)

    async def authenticate(self, authorization: str | None, params: dict[str, str]) -> Client:
        """The client that authenticated a request (RFC 6749 §2.3): a remembered Basic header
        (see LocalCache.recall), or any method `rfc6749.authenticate_client` accepts."""
        return await rfc6749.authenticate_client(
            authorization,
            params,
            self.clients.get,
            self.server_secrets,
            self.assertions,
            self.local,
        )

    # --- changes -----------------------------------------------------------------------------

    async def change(
        self, apply: Callable[[asyncpg.Connection], Awaitable[tuple[T, Invalidation]]]
    ) -> tuple[T, Announced]:
        """Run `apply` in a transaction with its outbox row, then announce its invalidation."""
        async with self.pool.acquire() as conn, conn.transaction():
            result, invalidation = await apply(conn)
            outbox_id = await store.add_outbox(conn, invalidation.dumps())
        return result, await self.cache.announce(invalidation, outbox_id)

    async def revoke(self, actor: str, selection: Selection) -> Revoked:
        """Revoke every live credential `selection` names, audited, in one statement; then
        announce it (see introspect/revocation.py).

        When nothing matched, nothing is written or published: a caller posting
        unknown credentials costs one read-only statement, not a broadcast.
        """
        METRICS.pg_queries.inc()
        recorded = await revocation.record(self.pool, actor, selection)
        return await revocation.announce(self.cache, recorded)

    async def revoke_presented(self, token: str, actor: str, owner: str | None) -> Revoked:
        """Revoke a presented credential, opaque or JWT (owned by `owner` when given):
        RFC 7009 and admin."""
        selection = await rfc7009.selection(token, self.server_secrets, owner, self.jwt_claims)
        if selection is None:
            return NOTHING_REVOKED
        return await self.revoke(actor, selection)

    async def create_client(
        self,
        *,
        actor: str,
        name: str,
        scopes: list[str],
        audiences: list[str],
        can_introspect: bool = False,
        token_ttl: int = 3600,
        token_format: str = "opaque",
        jwks: dict[str, Any] | None = None,
        token_endpoint_auth_method: str = rfc6749.CLIENT_SECRET_BASIC,
    ) -> tuple[Client, str | None]:
        """Register a client; returns it and its secret (shown once; a private_key_jwt
        client has none)."""
        secret = (
            None
            if token_endpoint_auth_method == rfc7523.PRIVATE_KEY_JWT
            else credentials.generate(Kind.CLIENT_SECRET)
        )
        secret_hash = (
            None if secret is None else credentials.keyed_hash(self.server_secrets[0], secret)
        )
        client_id = new_id("client")

        async def apply(conn: asyncpg.Connection) -> tuple[Client, Invalidation]:
            new = NewClient(
                client_id=client_id,
                name=name,
                scopes=tuple(scopes),
                audiences=tuple(audiences),
                can_introspect=can_introspect,
                token_ttl=token_ttl,
                token_format=token_format,
                jwks=jwks,
                token_endpoint_auth_method=token_endpoint_auth_method,
                secret_hash=secret_hash,
            )
            client = await store.insert_client(conn, new)
            await store.audit(
                conn,
                AuditEntry(
                    actor=actor,
                    action="client.create",
                    target_kind="client",
                    target_id=client_id,
                    details={
                        "name": name,
                        "scopes": scopes,
                        "audiences": audiences,
                        "token_endpoint_auth_method": token_endpoint_auth_method,
                    },
                ),
            )
            # A worker may have cached this id as unknown.
            return client, Invalidation(records=[(client_id, client.version)])

        client, _ = await self.change(apply)
        self.clients.unknown.forget(client_id)
        return client, secret


def _pool_usage(pool: asyncpg.Pool) -> tuple[int, int]:
    """(in use, idle) connections of an asyncpg pool."""
    idle = pool.get_idle_size()
    return pool.get_size() - idle, idle


@contextlib.asynccontextmanager
async def open_authority(
    settings: Settings, database_url: str, redis_url: str, *, listen: bool
) -> AsyncIterator[Authority]:
    """An Authority with its pools, torn down in reverse order on exit."""
    pool = await store.create_pool(database_url)
    lazy_pool = await store.create_pool(
        database_url, min_size=1, max_size=4, synchronous_commit=False
    )
    # Every Redis command goes through the port (introspect/redis/port.py).
    redis = open_redis(redis_url, cluster=settings.redis_cluster, timeout=REDIS_TIMEOUT)
    authority = Authority(settings, pool, redis, lazy_pool)
    probes = {
        "postgres": functools.partial(_pool_usage, pool),
        "postgres_lazy": functools.partial(_pool_usage, lazy_pool),
    }
    METRICS.pool_probes.update(probes)
    try:
        if listen:
            await authority.listen()
        yield authority
    finally:
        await authority.close()
        for name, probe in probes.items():
            if METRICS.pool_probes.get(name) is probe:
                del METRICS.pool_probes[name]
        redis.close()
        await lazy_pool.close()
        await pool.close()
