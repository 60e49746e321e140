"""The authority: one object that the HTTP views and the CLI call for every operation.

It owns the Postgres pool, the Redis client and the caches. Reads go
through `CredentialCache.lookup`; every change runs in one Postgres
transaction that also records its invalidation in the outbox and its audit
entry, and is then announced (`CredentialCache.announce`): the one place
where cache invalidations are published. The CLI uses the same object
without a listener, so its changes publish the same invalidations.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import asyncpg
import orjson

from introspect import (
    credentials,
    revocation,
    rfc6749,
    rfc7009,
    rfc7523,
    rfc7662,
    rfc8414,
    rfc9068,
    rfc9701,
    signing,
    store,
)
from introspect.cache import (
    Announced,
    Coalescer,
    CredentialCache,
    Entry,
    Invalidation,
    Listener,
    LocalCache,
)
from introspect.config import Settings
from introspect.credentials import Kind
from introspect.metrics import METRICS
from introspect.redis import LeanRedis, Redis
from introspect.revocation import NOTHING_REVOKED, Revoked
from introspect.rfc6749 import Grant
from introspect.store import Client, Selection

T = TypeVar("T")
log = logging.getLogger(__name__)
# How many presented credentials' hashes each worker remembers (see Authority.lookup).
HASHED_MEMO_SIZE = 10_000
# API keys' and admin keys' last_used_at is written at most this often (seconds), in one
# statement each.
USAGE_FLUSH_INTERVAL = 10
# Client ids found unknown, remembered per worker (see UnknownIds).
UNKNOWN_CLIENTS_SIZE = 10_000
UNKNOWN_CLIENT_TTL = 2.0
ID_LENGTH = 22
# Seconds the discovery document is reused at most; an invalidation (every change to a
# client publishes one) ends it sooner.
METADATA_TTL = 5.0
_INACTIVE = Entry(answer=None, cacheable=False)


def new_id(prefix: str) -> str:
    """A public identifier: a readable prefix and 22 random base62 characters."""
    return prefix + "_" + credentials.random_base62(ID_LENGTH)


def has_id_shape(value: str, prefix: str) -> bool:
    """Whether `value` could have come from `new_id(prefix)`: decided with no I/O."""
    head, sep, tail = value.partition("_")
    return (
        head == prefix
        and bool(sep)
        and len(tail) == ID_LENGTH
        and tail.isascii()
        and tail.isalnum()
    )


class UnknownIds:
    """Client ids recently looked up and not found: a bounded LRU, apart from known clients.

    Lookups of made-up ids fill only this, so they never push a known client's
    record, or a remembered authentication, out of the in-process cache. Like
    that cache, it is read only while the listener vouches for freshness, and
    an id is stored only if no invalidation arrived while its lookup ran (the
    epoch rule of LocalCache). An entry lives `ttl` seconds: a client created
    after its id was looked up (which takes guessing 22 random characters
    first) authenticates within that on every worker, and at once on the one
    that created it.
    """

    def __init__(self, local: LocalCache, size: int, ttl: float) -> None:
        self.local = local
        self.size = size
        self.ttl = ttl
        self._until: OrderedDict[str, float] = OrderedDict()

    def holds(self, client_id: str, mono: float) -> bool:
        """Whether `client_id` was found unknown moments ago (at `mono`, time.monotonic())."""
        local = self.local
        if not local.usable or mono > local.fresh_until:
            return False
        until = self._until.get(client_id)
        if until is None:
            return False
        if until <= mono:
            del self._until[client_id]
            return False
        self._until.move_to_end(client_id)
        return True

    def add(self, client_id: str, epoch: int) -> None:
        """Remember that `client_id` was found unknown by a lookup that started at `epoch`."""
        if not self.local.usable or epoch != self.local.epoch:
            return
        self._until[client_id] = time.monotonic() + self.ttl
        self._until.move_to_end(client_id)
        if len(self._until) > self.size:
            self._until.popitem(last=False)

    def forget(self, client_id: str) -> None:
        """`client_id` names a client now."""
        self._until.pop(client_id, None)


@dataclass(frozen=True, slots=True)
class Built:
    """A discovery document, and when it stops being served: at `until`, or at a new epoch."""

    epoch: int
    until: float
    body: bytes


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
        fast: Redis,
        lazy_pool: asyncpg.Pool | None = None,
    ) -> None:
        self.settings = settings
        self.pool = pool
        # Commits on this pool do not wait for the WAL flush. Only writes whose loss in a
        # crash fails closed go there: new access tokens (forgotten ones introspect
        # inactive) and deletes of published outbox rows (forgotten ones are replayed).
        self.lazy_pool = lazy_pool or pool
        self.keys = settings.secrets
        self.local = LocalCache(settings.local_cache_size, settings.local_cache_ttl)
        self.unknown = UnknownIds(self.local, UNKNOWN_CLIENTS_SIZE, UNKNOWN_CLIENT_TTL)
        self.cache = CredentialCache(
            pool,
            fast,
            local=self.local,
            redis_ttl=settings.redis_cache_ttl,
            negative_ttl=settings.negative_cache_ttl,
            lazy_pool=lazy_pool,
        )
        self.listener: Listener | None = None
        self._used: dict[str, int] = {}
        self._admin_used: dict[str, int] = {}
        # Presented credential -> its keyed hash, for well-formed ones recently seen: the
        # hash is a pure function of the string, so this never needs invalidating, and a
        # repeated presentation skips the format check and the HMAC.
        self._hashed: dict[str, bytes] = {}
        self._usage_task: asyncio.Task[None] | None = None
        # Access tokens issued in one event-loop iteration are stored by one COPY.
        self._issues: Coalescer[tuple[Any, ...], None] = Coalescer(
            self._store_access_tokens, flights=2
        )
        # Postgres lookups of one event-loop iteration share one query.
        self._finds: Coalescer[tuple[bytes, ...], store.Credential] = Coalescer(
            self._find_many, flights=2
        )
        self._client_reads: Coalescer[str, Client] = Coalescer(self._read_clients, flights=2)
        # Concurrent GETs of discovery share one build (see metadata).
        self._metadata: Built | None = None
        self._metadata_builds: Coalescer[None, bytes] = Coalescer(self._build_metadata)
        self.keyring = signing.Keyring(pool, settings.secrets)
        self.assertions = rfc7523.Assertions(
            audiences=frozenset([self.issuer, *rfc8414.endpoints(self.issuer).values()]),
            first_use=self.first_use_of_assertion,
        )

    @property
    def issuer(self) -> str:
        """`iss` of everything issued."""
        return self.settings.issuer

    async def listen(self) -> None:
        """Subscribe to invalidations; the in-process cache is used only while subscribed."""
        await self.cache.start()
        self.listener = Listener(self.cache.redis, self.local)
        self.listener.start()
        self.cache.start_sweeper()
        self._usage_task = asyncio.get_running_loop().create_task(self._flush_usage_forever())

    async def close(self) -> None:
        """Stop the listener and background tasks (the pools are closed by their owner)."""
        if self.listener is not None:
            await self.listener.stop()
        if self._usage_task is not None:
            self._usage_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._usage_task
        await self.cache.close()

    # --- last use of API keys and admin keys: remembered in memory, written in batches ------

    def note_use(self, entry: Entry) -> None:
        """Remember that an API key was just answered active (a dict write, no I/O)."""
        if entry.key_id is not None:
            self._used[entry.key_id] = store.now()

    def note_admin_use(self, key_id: str) -> None:
        """Remember that an admin key was just accepted (a dict write, no I/O)."""
        self._admin_used[key_id] = store.now()

    async def flush_usage(self) -> int:
        """Write the remembered last uses, one statement per table; how many keys it touched."""
        used, self._used = self._used, {}
        admin_used, self._admin_used = self._admin_used, {}
        if used:
            METRICS.pg_queries.inc()
            await store.touch_credentials(self.pool, used)
        if admin_used:
            METRICS.pg_queries.inc()
            await store.touch_admin_keys(self.pool, admin_used)
        return len(used) + len(admin_used)

    async def _flush_usage_forever(self) -> None:
        try:
            while True:
                await asyncio.sleep(USAGE_FLUSH_INTERVAL)
                try:
                    await self.flush_usage()
                except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                    log.warning("could not record key use: %s", type(exc).__name__)
        finally:
            with contextlib.suppress(Exception):
                await self.flush_usage()

    # --- reads -------------------------------------------------------------------------------

    async def get_client(self, client_id: str) -> Client | None:
        """A client record: in-process when cached, else from Redis, else from Postgres.

        Through a Postgres outage, a record in Redis keeps authenticating its
        client, and deciding on its tokens, for the Redis cache lifetime.
        None with no I/O for an id that cannot be one of ours, or that was
        found unknown moments ago (see UnknownIds).
        """
        if not has_id_shape(client_id, "client"):
            return None
        local = self.local
        mono = time.monotonic()
        found, client = local.get_client(client_id, mono)
        if found:
            return client
        if self.unknown.holds(client_id, mono):
            return None
        epoch = local.epoch
        client = await self.cache.read_client(
            client_id, functools.partial(self._client_reads.get, client_id)
        )
        if client is None:
            self.unknown.add(client_id, epoch)
        else:
            local.put_client(client_id, client, epoch)
        return client

    async def metadata(self) -> bytes:
        """The RFC 8414 document (its `scopes_supported` aggregates over every client), built
        at most once per METADATA_TTL and per invalidation received, whatever the GETs."""
        built = self._metadata
        if built is not None and built.epoch == self.local.epoch and time.monotonic() < built.until:
            return built.body
        # The build always answers (see _build_metadata): never None.
        return cast(bytes, await self._metadata_builds.get(None))

    async def _build_metadata(self, _wanted: list[None]) -> dict[None, bytes]:
        epoch, until = self.local.epoch, time.monotonic() + METADATA_TTL
        METRICS.pg_queries.inc()
        scopes = await store.scopes_in_use(self.pool)
        body = orjson.dumps(rfc8414.metadata(self.issuer, scopes))
        self._metadata = Built(epoch, until, body)
        return {None: body}

    async def _read_clients(self, client_ids: list[str]) -> dict[str, Client]:
        """The client records of several lookups (of one loop iteration), in one query."""
        METRICS.pg_queries.inc()
        return {c.client_id: c for c in await store.get_clients(self.pool, client_ids)}

    def owner_disabled(self, client_id: str) -> bool | None:
        """Whether the client holding a credential is disabled (or gone), when its record is
        cached in-process; None when it is not (then `read_owner_disabled`)."""
        found, client = self.local.get_client(client_id, time.monotonic())
        if found:
            return client is None or client.disabled
        return None

    async def read_owner_disabled(self, client_id: str) -> bool:
        """Whether the client holding a credential is disabled (or gone), read if need be."""
        client = await self.get_client(client_id)
        return client is None or client.disabled

    def introspect_in_memory(
        self, authorization: str | None, params: dict[str, str]
    ) -> bytes | None:
        """The introspection answer when all it needs is in this process's memory, else None.

        The hot path of the product, with no await: a caller remembered by its
        Authorization header (`rfc6749.remembered`), a credential seen before
        whose entry is in the in-process cache, and its owner's record. Any
        other case, including every error, is None, and the full path decides
        (with the same answer where this one gives one).
        """
        mono = time.monotonic()
        caller = rfc6749.remembered(authorization, params, self.local, mono)
        if caller is None or not caller.can_introspect:
            return None
        token = params.get("token")
        entry = None if token is None else self._seen(token, mono)
        if entry is None:
            return None
        body = rfc7662.verdict(caller, entry, self.owner_disabled)
        if body is not None and body is not rfc7662.INACTIVE:
            self.note_use(entry)
        return body

    def _seen(self, token: str, mono: float) -> Entry | None:
        """The in-process entry of a credential hashed before (see `_hashed`), if any."""
        key = self._hashed.get(token)
        return None if key is None else self.cache.cached(key, mono)

    async def lookup(self, token: str) -> Entry:
        """The cache entry for a presented credential, opaque or JWT; malformed ones cost no I/O.

        A JWT is looked up like an opaque credential, by the keyed hash of the
        whole string; before anything but the in-process cache is asked, it is
        verified locally (RFC 9068 §4). An in-process entry was only ever stored
        after this worker verified that very string.
        """
        hit = self._seen(token, time.monotonic())
        if hit is not None:
            return hit
        kind = credentials.parse(token)
        jwt = kind is not Kind.ACCESS_TOKEN and kind is not Kind.API_KEY
        if jwt and (kind is not None or not rfc9068.jwt_shaped(token)):
            return _INACTIVE
        hashes = [credentials.keyed_hash(key, token) for key in self.keys]
        primary = hashes[0]
        hit = self.cache.cached(primary, time.monotonic())
        # A JWT is remembered only once verified (an in-process entry of one was stored after
        # verifying it): up to 8 KiB of anyone's forged string must not be kept per entry.
        if hit is not None or not jwt:
            self._remember(token, primary)
        if hit is not None:
            return hit
        admit = None
        if jwt:

            async def admit() -> bool:
                if await self.jwt_claims(token) is None:
                    return False
                self._remember(token, primary)
                return True

        async def load() -> Entry:
            found = await self._finds.get(tuple(hashes))
            entry = rfc7662.entry_for(found, self.issuer)
            if found is not None and found.hash != primary:
                # Stored under an older server secret: move it to the current one,
                # and cache nothing until writers and readers agree on the key.
                await store.rehash(self.pool, found.id, found.hash, primary)
                entry.cacheable = False
            return entry

        return await self.cache.lookup(primary, load, admit)

    def _remember(self, token: str, key: bytes) -> None:
        """Memoize the keyed hash of a well-formed opaque credential or a verified JWT."""
        if len(self._hashed) >= HASHED_MEMO_SIZE:
            self._hashed.clear()
        self._hashed[token] = key

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

    async def jwt_claims(self, token: str) -> dict[str, Any] | None:
        """The claims of a live JWT access token signed by one of our published keys, or None."""
        found = rfc9068.header(token)
        if found is None:
            return None
        alg, kid = found
        key = await self.keyring.verification_key(kid)
        if key is None:
            return None
        return rfc9068.verify(token, key, alg, self.issuer)

    async def first_use_of_assertion(
        self, client_id: str, jti: str, presented_from: int, until: int
    ) -> bool:
        """RFC 7523 §3: remember a client assertion's `jti` until `until`; False when seen before.

        SET NX in Redis, which every worker shares: a replay on any of them
        fails. Redis may have lost what it remembered (promise 6): an
        assertion that could have been presented before the vouched history
        started is refused (see introspect/history.py).
        """
        if presented_from < self.cache.history.started_at:
            return False
        key = b"introspect:jti:" + credentials.keyed_hash(self.keys[0], f"{client_id}\x00{jti}")
        return await self.cache.remember_once(key, until)

    async def sign_introspection(self, caller: Client, answer: bytes) -> bytes:
        """RFC 9701 §5: `answer` as a JWT signed for `caller`."""
        iat = store.now()
        claims = rfc9701.response_claims(answer, self.issuer, caller.client_id, iat)
        signed = await self.keyring.sign(claims, rfc9701.TYP, iat + rfc9701.VERIFY_WINDOW)
        return signed.encode()

    # --- changes -----------------------------------------------------------------------------

    async def change(
        self, apply: Callable[[asyncpg.Connection], Awaitable[tuple[T, Invalidation]]]
    ) -> tuple[T, Announced]:
        """Run `apply` in a transaction with its outbox row, then announce its invalidation."""
        async with self.pool.acquire() as conn, conn.transaction():
            result, invalidation = await apply(conn)
            outbox_id = await store.add_outbox(conn, invalidation.dumps())
        return result, await self.cache.announce(invalidation, outbox_id)

    async def issue_access_token(self, client: Client, grant: Grant) -> tuple[str, int]:
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
            credentials.keyed_hash(self.keys[0], token),
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

    async def _store_access_tokens(self, rows: list[tuple[Any, ...]]) -> dict[Any, None]:
        """Store the access tokens issued in one loop iteration with one COPY."""
        METRICS.pg_queries.inc()
        await store.copy_access_tokens(self.lazy_pool, rows)
        return {}

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
        selection = await rfc7009.selection(token, self.keys, owner, self.jwt_claims)
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
        secret_hash = None if secret is None else credentials.keyed_hash(self.keys[0], secret)
        client_id = new_id("client")

        async def apply(conn: asyncpg.Connection) -> tuple[Client, Invalidation]:
            client = await store.insert_client(
                conn,
                client_id=client_id,
                name=name,
                scopes=scopes,
                audiences=audiences,
                can_introspect=can_introspect,
                token_ttl=token_ttl,
                token_format=token_format,
                jwks=jwks,
                token_endpoint_auth_method=token_endpoint_auth_method,
                secret_hash=secret_hash,
            )
            await store.audit(
                conn,
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
            )
            # A worker may have cached this id as unknown.
            return client, Invalidation(records=[(client_id, client.version)])

        client, _ = await self.change(apply)
        self.unknown.forget(client_id)
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
    fast = LeanRedis(redis_url, timeout=REDIS_TIMEOUT)
    authority = Authority(settings, pool, fast, lazy_pool)
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
        fast.close()
        await lazy_pool.close()
        await pool.close()
