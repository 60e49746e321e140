"""A realistic data set, fast: clients through the service, credentials by COPY.

Clients are registered through `introspect.service.Authority`, the code
behind the CLI and the admin API. Credentials go straight into the
`credentials` table with `copy_records_to_table`, hashed with
`introspect.credentials.keyed_hash` under the server secret the bench gives
the server, so the server sees them exactly as if it had issued them.
JWT access tokens (RFC 9068) cannot be made that way: they are issued by
`Authority.issue_access_token`, the server's own code path, which signs them
with the signing key stored in Postgres (sealed under the same secret) and
stores their rows.

The set: access tokens (80 %, one hour of life, some issued up to ten
minutes ago) and API keys (20 %, half never expiring, some bound to a user
subject, with metadata), of which a share is revoked and a share expired,
spread over the app clients; plus well-formed tokens that were never stored.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import asyncpg
import orjson

from bench.tokens import generate, public_ids
from introspect.credentials import Kind, keyed_hash
from introspect.rfc6749 import Grant
from introspect.service import Authority
from introspect.signing import KeyringError

AUDIENCE = "https://api.example.com"
SCOPES = ("read", "write")
APP_CLIENTS = 20
REVOKED_SHARE = 0.05
EXPIRED_SHARE = 0.05
API_KEY_SHARE = 0.2
UNKNOWN = 10_000
CHUNK = 100_000
JWT_BATCH = 500  # JWTs issued concurrently: the server stores each batch in a few COPYs
COLUMNS = (
    "id",
    "kind",
    "hash",
    "client_id",
    "sub",
    "scopes",
    "audiences",
    "iat",
    "nbf",
    "exp",
    "revoked_at",
    "metadata",
)
# The tables a run in the bench's own embedded database starts from empty (the audit log is
# append-only by design, and keeps growing by a few rows per run).
TABLES = (
    "credentials",
    "client_secrets",
    "clients",
    "invalidation_outbox",
    "signing_keys",
    "credit_accounts",
)


@dataclass(frozen=True, slots=True)
class Registered:
    """A client the bench registered, with its secret."""

    client_id: str
    secret: str


@dataclass(slots=True)
class Seeded:
    """What was seeded: clients, and credential values by what the server should answer."""

    resource_server: Registered
    apps: list[Registered]
    jwt_app: Registered  # registered with token_format="jwt"; owns every JWT
    active: list[str] = field(default_factory=list)
    active_owner: list[int] = field(default_factory=list)  # index into `apps`
    revoked: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    jwt: list[str] = field(default_factory=list)  # live JWT access tokens, in issue order
    limited: list[str] = field(default_factory=list)  # API keys with a generous window
    signing_keys: list[str] = field(default_factory=list)  # kids the bench's issuing created

    @property
    def total(self) -> int:
        """Credentials stored by COPY (the JWTs are counted apart)."""
        return len(self.active) + len(self.revoked) + len(self.expired)


async def reset(conn: asyncpg.Connection) -> None:
    """Empty the tables of the bench's own embedded database (never a database it was given)."""
    await conn.execute(f"TRUNCATE {', '.join(TABLES)} CASCADE")


async def remove(conn: asyncpg.Connection, seeded: Seeded) -> None:
    """Delete what a run added to a database it was given: its clients and their credentials,
    and the signing key its JWTs made the server create, if there was none."""
    clients = [seeded.resource_server, seeded.jwt_app, *seeded.apps]
    ids = [c.client_id for c in clients]
    async with conn.transaction():
        # The balances of the limits scenarios' keys (bench/limits.py), and their leases.
        await conn.execute(
            "DELETE FROM credit_accounts WHERE owner IN (SELECT 'api_key:' || id"
            " FROM credentials WHERE client_id = ANY($1::text[]))",
            ids,
        )
        await conn.execute("DELETE FROM credentials WHERE client_id = ANY($1::text[])", ids)
        await conn.execute("DELETE FROM client_secrets WHERE client_id = ANY($1::text[])", ids)
        await conn.execute("DELETE FROM clients WHERE client_id = ANY($1::text[])", ids)
        await conn.execute(
            "DELETE FROM signing_keys WHERE kid = ANY($1::text[])", seeded.signing_keys
        )


async def register_clients(authority: Authority, apps: int = APP_CLIENTS) -> Seeded:
    """The resource server that introspects, the app clients that own credentials, and the
    client whose access tokens are JWTs."""
    rs, rs_secret = await authority.create_client(
        actor="bench",
        name="bench-resource-server",
        scopes=[],
        audiences=[AUDIENCE],
        can_introspect=True,
    )
    registered = []
    for i in range(apps):
        app, secret = await authority.create_client(
            actor="bench", name=f"bench-app-{i}", scopes=list(SCOPES), audiences=[AUDIENCE]
        )
        registered.append(Registered(app.client_id, secret))
    jwt_app, jwt_secret = await authority.create_client(
        actor="bench",
        name="bench-jwt-app",
        scopes=list(SCOPES),
        audiences=[AUDIENCE],
        token_format="jwt",  # noqa: S106 - a token format, not a password
    )
    return Seeded(
        Registered(rs.client_id, rs_secret), registered, Registered(jwt_app.client_id, jwt_secret)
    )


async def _signing_kids(authority: Authority) -> set[str]:
    return {row["kid"] for row in await authority.pool.fetch("SELECT kid FROM signing_keys")}


async def issue_jwts(
    authority: Authority,
    seeded: Seeded,
    count: int,
    on_progress: Callable[[int], None] | None = None,
) -> None:
    """Issue `count` JWT access tokens to `seeded.jwt_app` through the server's own code.

    `Authority.issue_access_token` signs each with the current signing key
    (creating the first one when the database has none: its kid goes into
    `seeded.signing_keys`) and stores its row, as `POST /token` does.
    """
    client = await authority.get_client(seeded.jwt_app.client_id)
    if client is None:
        raise RuntimeError(f"the bench's JWT client {seeded.jwt_app.client_id} is gone")
    grant = Grant(SCOPES, (AUDIENCE,))
    kids = await _signing_kids(authority)
    try:
        while len(seeded.jwt) < count:
            batch = min(JWT_BATCH, count - len(seeded.jwt))
            issued = await asyncio.gather(
                *(authority.issue_access_token(client, grant) for _ in range(batch))
            )
            seeded.jwt += [token for token, _lifetime in issued]
            if on_progress is not None:
                on_progress(len(seeded.jwt))
    except KeyringError as exc:
        raise RuntimeError(
            f"cannot sign JWTs: {exc}; set INTROSPECT_SECRET to the secret of the servers"
            " that use this database"
        ) from exc
    finally:
        seeded.signing_keys = sorted(await _signing_kids(authority) - kids)


def _records(
    seeded: Seeded, key: bytes, count: int, rng: random.Random
) -> Iterator[list[tuple[object, ...]]]:
    """Chunks of credential rows; records each value in `seeded` by what it should answer."""
    now = int(time.time())
    apps = [a.client_id for a in seeded.apps]
    scopes = [list(SCOPES), [SCOPES[0]]]
    audiences = [AUDIENCE]
    metadata = [orjson.dumps({"team": t, "plan": "pro"}).decode() for t in ("a", "b", "c")]
    for start in range(0, count, CHUNK):
        n = min(CHUNK, count - start)
        api_keys = int(n * API_KEY_SHARE)
        values = generate(Kind.API_KEY, api_keys) + generate(Kind.ACCESS_TOKEN, n - api_keys)
        ids = public_ids("key", api_keys) + public_ids("tok", n - api_keys)
        rows = []
        for i, (value, cid) in enumerate(zip(values, ids, strict=True)):
            owner = (start + i) % len(apps)
            client_id = apps[owner]
            fate = rng.random()
            iat = now - rng.randrange(600)
            revoked_at = None
            if i < api_keys:
                kind = "api_key"
                sub = f"user-{rng.randrange(100_000)}" if i % 2 else client_id
                exp = None if i % 4 < 2 else now + 30 * 86_400
                meta = metadata[i % len(metadata)]
            else:
                kind, sub, exp, meta = "access_token", client_id, iat + 3600, None
            if fate < REVOKED_SHARE:
                revoked_at = now - rng.randrange(1, 300)
                seeded.revoked.append(value)
            elif fate < REVOKED_SHARE + EXPIRED_SHARE:
                iat = now - 7200 - rng.randrange(86_400)
                exp = iat + 3600
                seeded.expired.append(value)
            else:
                seeded.active.append(value)
                seeded.active_owner.append(owner)
            rows.append(
                (
                    cid,
                    kind,
                    keyed_hash(key, value),
                    client_id,
                    sub,
                    scopes[i % 2],
                    audiences,
                    iat,
                    iat,
                    exp,
                    revoked_at,
                    meta,
                )
            )
        yield rows


async def _drop_indexes(conn: asyncpg.Connection) -> list[str]:
    """Drop the indexes and keys of `credentials` (and foreign keys to it); the DDL to restore.

    PostgreSQL's own advice for a bulk load ("Populating a Database"): an index
    built once over the loaded rows is many times cheaper than a million
    random-order insertions into it, and so is one foreign-key check for the
    whole table. The definitions are read from the catalog, so whatever the
    migrations made is restored exactly; the caller's transaction makes it
    all or nothing.
    """
    constraints = await conn.fetch(
        "SELECT conrelid::regclass::text AS rel, conname, pg_get_constraintdef(oid) AS def,"
        " contype FROM pg_constraint WHERE contype IN ('p', 'u', 'f')"
        " AND (conrelid = 'credentials'::regclass OR confrelid = 'credentials'::regclass)"
        " ORDER BY contype = 'f', conname"
    )
    indexes = await conn.fetch(
        "SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS def"
        " FROM pg_index i WHERE i.indrelid = 'credentials'::regclass AND NOT EXISTS"
        " (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)"
    )
    for row in reversed(constraints):
        await conn.execute(f'ALTER TABLE {row["rel"]} DROP CONSTRAINT "{row["conname"]}"')
    for row in indexes:
        await conn.execute(f"DROP INDEX {row['name']}")
    restore = [row["def"] for row in indexes]
    restore += [
        f'ALTER TABLE {row["rel"]} ADD CONSTRAINT "{row["conname"]}" {row["def"]}'
        for row in constraints
    ]
    return restore


async def copy_credentials(
    conn: asyncpg.Connection,
    seeded: Seeded,
    key: bytes,
    count: int,
    *,
    bulk: bool,
    on_progress: Callable[[int], None] | None = None,
    seed: int = 7,
) -> None:
    """COPY `count` credentials hashed under `key`; their values go into `seeded`.

    `bulk` (only for the bench's own database, where nothing else runs): drop
    the indexes of `credentials` for the load and build them once after.
    """
    rng = random.Random(seed)
    done = 0
    async with conn.transaction():
        await conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
        restore = await _drop_indexes(conn) if bulk else []
        for rows in _records(seeded, key, count, rng):
            await conn.copy_records_to_table("credentials", records=rows, columns=COLUMNS)
            done += len(rows)
            if on_progress is not None:
                on_progress(done)
        for ddl in restore:
            await conn.execute(ddl)
    await conn.execute("ANALYZE credentials")
    # Shuffle within each class, so that slices taken in order are random picks.
    order = list(range(len(seeded.active)))
    rng.shuffle(order)
    seeded.active = [seeded.active[i] for i in order]
    seeded.active_owner = [seeded.active_owner[i] for i in order]
    rng.shuffle(seeded.revoked)
    rng.shuffle(seeded.expired)
    seeded.unknown = generate(Kind.ACCESS_TOKEN, UNKNOWN)
