"""Storage: the asyncpg queries behind every operation, and the records they return.

Postgres is the truth (SPEC consistency promise 1). Only keyed hashes of
credentials and client secrets are stored and every lookup goes by hash.
Every change to a credential, and every change to a client or its secrets,
takes a fresh `version` from the `change_version` sequence, which is what
lets cache writers order their writes (see `introspect/cache.py`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson

CREDENTIAL_COLUMNS = (
    "id, kind, format, hash, client_id, sub, username, scopes, audiences,"
    " iat, nbf, exp, revoked_at, metadata, version, last_used_at, name, prefix"
)
CLIENT_COLUMNS = (
    "client_id, name, scopes, audiences, can_introspect, token_ttl, token_format,"
    " jwks, token_endpoint_auth_method, disabled, created_at, updated_at, version"
)
ADMIN_KEY_COLUMNS = "id, name, role, created_at, expires_at, last_used_at, revoked_at"


def now() -> int:
    """The current time in integer epoch seconds, as stored."""
    return int(time.time())


@dataclass(frozen=True, slots=True)
class Client:
    """A registered client, with the hashes of its live secrets and their expiry."""

    client_id: str
    name: str
    scopes: tuple[str, ...]
    audiences: tuple[str, ...]
    can_introspect: bool
    token_ttl: int
    token_format: str
    jwks: dict[str, Any] | None
    disabled: bool
    created_at: int
    updated_at: int
    # RFC 7591: client_secret_basic (also _post, and jwks if any) or private_key_jwt.
    token_endpoint_auth_method: str = "client_secret_basic"
    secrets: tuple[tuple[bytes, int | None], ...] = field(default=(), repr=False)
    # From `change_version`, taken by every change to the client or to its secrets.
    version: int = 0

    def public(self) -> dict[str, Any]:
        """Every registered field, never a secret or a hash (the admin API's read shape)."""
        return {
            "client_id": self.client_id,
            "name": self.name,
            "scopes": list(self.scopes),
            "audiences": list(self.audiences),
            "can_introspect": self.can_introspect,
            "token_ttl": self.token_ttl,
            "token_format": self.token_format,
            "jwks": self.jwks,
            "token_endpoint_auth_method": self.token_endpoint_auth_method,
            "disabled": self.disabled,
            "created_at": self.created_at,
        }


@dataclass(frozen=True, slots=True)
class Credential:
    """An access token or API key as stored: never its value, only its keyed hash."""

    id: str
    kind: str
    format: str
    hash: bytes = field(repr=False)
    client_id: str | None
    sub: str
    username: str | None
    scopes: tuple[str, ...]
    audiences: tuple[str, ...]
    iat: int
    nbf: int
    exp: int | None
    revoked_at: int | None
    metadata: dict[str, Any] | None
    version: int
    last_used_at: int | None
    # API keys: an optional name, and the first characters of the key (never the whole key).
    name: str | None = None
    prefix: str | None = None

    def public(self) -> dict[str, Any]:
        """The admin listing shape: every field but the hash."""
        t = now()
        return {
            "id": self.id,
            "kind": self.kind,
            "format": self.format,
            "client_id": self.client_id,
            "sub": self.sub,
            "username": self.username,
            "scopes": list(self.scopes),
            "audiences": list(self.audiences),
            "iat": self.iat,
            "nbf": self.nbf,
            "exp": self.exp,
            "revoked_at": self.revoked_at,
            "metadata": self.metadata,
            "last_used_at": self.last_used_at,
            "name": self.name,
            "prefix": self.prefix,
            "active": self.revoked_at is None and (self.exp is None or self.exp > t),
        }


@dataclass(frozen=True, slots=True)
class AdminKey:
    """A key for the admin API as stored (its keyed hash is never read back)."""

    id: str
    name: str
    role: str
    created_at: int
    expires_at: int | None
    last_used_at: int | None
    revoked_at: int | None

    def live(self, at: int) -> bool:
        """Neither revoked nor expired at epoch second `at`."""
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > at)

    def public(self) -> dict[str, Any]:
        """The admin listing shape: every field, and whether the key works now."""
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "last_used_at": self.last_used_at,
            "revoked_at": self.revoked_at,
            "active": self.live(now()),
        }


def admin_key_from_record(record: asyncpg.Record) -> AdminKey:
    """An AdminKey from a row of ADMIN_KEY_COLUMNS."""
    return AdminKey(
        id=record["id"],
        name=record["name"],
        role=record["role"],
        created_at=record["created_at"],
        expires_at=record["expires_at"],
        last_used_at=record["last_used_at"],
        revoked_at=record["revoked_at"],
    )


def _json(value: str | None) -> Any:
    return None if value is None else orjson.loads(value)


def client_from_record(
    record: asyncpg.Record, secrets: tuple[tuple[bytes, int | None], ...]
) -> Client:
    """A Client from a row of CLIENT_COLUMNS and its live secrets."""
    return Client(
        client_id=record["client_id"],
        name=record["name"],
        scopes=tuple(record["scopes"]),
        audiences=tuple(record["audiences"]),
        can_introspect=record["can_introspect"],
        token_ttl=record["token_ttl"],
        token_format=record["token_format"],
        jwks=_json(record["jwks"]),
        token_endpoint_auth_method=record["token_endpoint_auth_method"],
        disabled=record["disabled"],
        created_at=record["created_at"],
        updated_at=record["updated_at"],
        secrets=secrets,
        version=record["version"],
    )


def credential_from_record(record: asyncpg.Record) -> Credential:
    """A Credential from a row of CREDENTIAL_COLUMNS."""
    return Credential(
        id=record["id"],
        kind=record["kind"],
        format=record["format"],
        hash=bytes(record["hash"]),
        client_id=record["client_id"],
        sub=record["sub"],
        username=record["username"],
        scopes=tuple(record["scopes"]),
        audiences=tuple(record["audiences"]),
        iat=record["iat"],
        nbf=record["nbf"],
        exp=record["exp"],
        revoked_at=record["revoked_at"],
        metadata=_json(record["metadata"]),
        version=record["version"],
        last_used_at=record["last_used_at"],
        name=record["name"],
        prefix=record["prefix"],
    )


# Deadlines of every Postgres operation (seconds): a request waits at most about this long
# for a free connection, then as long for its statement, then answers (503 if it failed).
# Point lookups and small writes take milliseconds; a second leaves room for a busy server
# and a slow network, yet a hung server costs a caller about a second, not a stall.
ACQUIRE_TIMEOUT = 1.0
COMMAND_TIMEOUT = 1.0
# New connections (a worker's start, a pool refilling after a failure).
CONNECT_TIMEOUT = 5.0
# A connection released while asyncpg still cancels its timed-out statement (the server
# hung) is closed after this, not waited for: its caller has failed already.
RELEASE_TIMEOUT = 0.1


class DeadlinePool(asyncpg.Pool):  # type: ignore[misc]  # asyncpg ships no type information
    """A pool whose every acquire, its shortcut methods' (`fetchrow`, ...) included, has a
    deadline (ACQUIRE_TIMEOUT), and whose releases do not wait on a hung server."""

    def acquire(self, *, timeout: float | None = None) -> Any:
        """Acquire a connection within `timeout` (default ACQUIRE_TIMEOUT) seconds."""
        return super().acquire(timeout=ACQUIRE_TIMEOUT if timeout is None else timeout)

    async def release(
        self,
        connection: asyncpg.Connection,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (asyncpg's signature, overridden)
    ) -> None:
        """Give a connection back; one still cancelling a statement is closed after a moment."""
        await super().release(connection, timeout=RELEASE_TIMEOUT if timeout is None else timeout)


async def create_pool(
    dsn: str, *, min_size: int = 2, max_size: int = 10, synchronous_commit: bool = True
) -> asyncpg.Pool:
    """A connection pool with deadlines; short statements only, so releases skip the reset query.

    `synchronous_commit=False` makes its commits return before the WAL is on
    disk: for writes whose loss in a crash fails closed (see Authority).
    """

    async def _no_reset(_conn: asyncpg.Connection) -> None:
        return None

    # The arguments asyncpg.create_pool passes, with this module's pool class.
    pool = DeadlinePool(
        dsn,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
        min_size=min_size,
        max_size=max_size,
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        loop=None,
        reset=_no_reset,
        timeout=CONNECT_TIMEOUT,
        command_timeout=COMMAND_TIMEOUT,
        server_settings={
            "application_name": "introspect",
            "synchronous_commit": "on" if synchronous_commit else "off",
        },
    )
    await pool
    return pool


# --- clients -------------------------------------------------------------------------------


async def get_client(conn: asyncpg.Pool | asyncpg.Connection, client_id: str) -> Client | None:
    """A client and its live secrets (current, or rotated out and still in grace)."""
    found = await get_clients(conn, [client_id])
    return found[0] if found else None


async def get_clients(
    conn: asyncpg.Pool | asyncpg.Connection, client_ids: list[str]
) -> list[Client]:
    """The clients of `client_ids` that exist, each with its live secrets, in one query."""
    records = await conn.fetch(
        f"SELECT {CLIENT_COLUMNS},"
        " ARRAY(SELECT secret_hash FROM client_secrets s WHERE s.client_id = clients.client_id"
        "  AND (s.expires_at IS NULL OR s.expires_at > $2) ORDER BY s.id DESC) AS hashes,"
        " ARRAY(SELECT coalesce(expires_at, 0) FROM client_secrets s"
        "  WHERE s.client_id = clients.client_id"
        "  AND (s.expires_at IS NULL OR s.expires_at > $2) ORDER BY s.id DESC) AS expiries"
        " FROM clients WHERE client_id = ANY($1::text[])",
        client_ids,
        now(),
    )
    return [
        client_from_record(
            record,
            tuple(
                (bytes(h), e or None)
                for h, e in zip(record["hashes"], record["expiries"], strict=True)
            ),
        )
        for record in records
    ]


async def insert_client(
    conn: asyncpg.Connection,
    *,
    client_id: str,
    name: str,
    scopes: list[str],
    audiences: list[str],
    can_introspect: bool,
    token_ttl: int,
    token_format: str,
    jwks: dict[str, Any] | None,
    token_endpoint_auth_method: str,
    secret_hash: bytes | None,
) -> Client:
    """Register a client with its first secret (none for a private_key_jwt client)."""
    t = now()
    record = await conn.fetchrow(
        "INSERT INTO clients (client_id, name, scopes, audiences, can_introspect, token_ttl,"
        " token_format, jwks, token_endpoint_auth_method, created_at, updated_at)"
        f" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) RETURNING {CLIENT_COLUMNS}",
        client_id,
        name,
        scopes,
        audiences,
        can_introspect,
        token_ttl,
        token_format,
        None if jwks is None else orjson.dumps(jwks).decode(),
        token_endpoint_auth_method,
        t,
    )
    if secret_hash is None:
        return client_from_record(record, ())
    await conn.execute(
        "INSERT INTO client_secrets (client_id, secret_hash, created_at) VALUES ($1, $2, $3)",
        client_id,
        secret_hash,
        t,
    )
    return client_from_record(record, ((secret_hash, None),))


async def scopes_in_use(conn: asyncpg.Pool | asyncpg.Connection) -> list[str]:
    """Every scope an enabled client may request, sorted (RFC 8414 `scopes_supported`)."""
    scopes: list[str] = await conn.fetchval(
        "SELECT coalesce(array_agg(DISTINCT s ORDER BY s), '{}')"
        " FROM clients, unnest(scopes) AS s WHERE NOT disabled"
    )
    return scopes


# --- credentials ---------------------------------------------------------------------------


async def find_credentials(
    conn: asyncpg.Pool | asyncpg.Connection, hashes: list[bytes]
) -> list[Credential]:
    """The credentials stored under any of `hashes`, in one query."""
    records = await conn.fetch(
        f"SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE hash = ANY($1::bytea[])", hashes
    )
    return [credential_from_record(record) for record in records]


async def rehash(
    conn: asyncpg.Pool | asyncpg.Connection, credential_id: str, old: bytes, new: bytes
) -> None:
    """Move a credential stored under an older server secret to the current one."""
    await conn.execute(
        "UPDATE credentials SET hash = $3 WHERE id = $1 AND hash = $2", credential_id, old, new
    )


async def insert_credential(
    conn: asyncpg.Pool | asyncpg.Connection,
    *,
    credential_id: str,
    kind: str,
    hash_: bytes,
    client_id: str | None,
    sub: str,
    scopes: list[str],
    audiences: list[str],
    iat: int,
    exp: int | None,
    fmt: str = "opaque",
    username: str | None = None,
    metadata: dict[str, Any] | None = None,
    name: str | None = None,
    prefix: str | None = None,
) -> None:
    """Store a new credential (its hash only; an API key's display prefix and name)."""
    await conn.execute(
        "INSERT INTO credentials (id, kind, format, hash, client_id, sub, username, scopes,"
        " audiences, iat, nbf, exp, metadata, name, prefix)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11, $12, $13, $14)",
        credential_id,
        kind,
        fmt,
        hash_,
        client_id,
        sub,
        username,
        scopes,
        audiences,
        iat,
        exp,
        None if metadata is None else orjson.dumps(metadata).decode(),
        name,
        prefix,
    )


ACCESS_TOKEN_COLUMNS = (
    "id",
    "kind",
    "format",
    "hash",
    "client_id",
    "sub",
    "scopes",
    "audiences",
    "iat",
    "nbf",
    "exp",
)


async def copy_access_tokens(
    conn: asyncpg.Pool | asyncpg.Connection, rows: list[tuple[Any, ...]]
) -> None:
    """Store many new access tokens (rows of ACCESS_TOKEN_COLUMNS) with one COPY."""
    await conn.copy_records_to_table("credentials", records=rows, columns=ACCESS_TOKEN_COLUMNS)


async def revoke_credentials(
    conn: asyncpg.Connection, where: str, *args: Any
) -> list[tuple[str, bytes, int]]:
    """Revoke the live credentials matching `where` (SQL over $2...); return (id, hash, version).

    Only credentials neither revoked nor expired before are touched and counted.
    """
    rows = await conn.fetch(
        "UPDATE credentials SET revoked_at = $1, version = nextval('change_version')"
        f" WHERE revoked_at IS NULL AND (exp IS NULL OR exp > $1) AND ({where})"
        " RETURNING id, hash, version",
        now(),
        *args,
    )
    return [(r["id"], bytes(r["hash"]), r["version"]) for r in rows]


async def revoke_recorded(
    conn: asyncpg.Pool | asyncpg.Connection,
    actor: str,
    where: str,
    args: tuple[Any, ...],
    *,
    evict_keys: bool,
    clients: list[str],
    subs: list[str],
) -> tuple[int | None, list[tuple[str, bytes, int]]]:
    """Revoke, audit and record the invalidation in one statement (one round trip, one commit).

    The same effect as `revoke_credentials` + `audit_revoked` + `add_outbox` of
    `Invalidation` for the rows, whose JSON form (see `Invalidation.dumps`) is
    built here by Postgres. Returns the outbox id and the (id, hash, version) rows;
    when nothing matched, nothing is written and the outbox id is None.
    """
    n = len(args) + 2
    rows = await conn.fetch(
        "WITH r AS ("
        "  UPDATE credentials SET revoked_at = $1, version = nextval('change_version')"
        f"  WHERE revoked_at IS NULL AND (exp IS NULL OR exp > $1) AND ({where})"
        "  RETURNING id, kind, hash, version),"
        " a AS (INSERT INTO audit_log (at, actor, action, target_kind, target_id)"
        f"  SELECT $1, ${n}, 'credential.revoke',"
        "   CASE WHEN kind = 'api_key' THEN 'api_key' ELSE 'access_token' END, id"
        "  FROM r ORDER BY id),"
        " o AS (INSERT INTO invalidation_outbox (message, created_at)"
        "  SELECT convert_to(json_build_object("
        "   't', coalesce((SELECT json_agg(json_build_array(encode(hash, 'hex'), version))"
        "    FROM r), '[]'::json),"
        f"   'k', CASE WHEN ${n + 1} THEN coalesce((SELECT json_agg(encode(hash, 'hex'))"
        "    FROM r), '[]'::json) ELSE '[]'::json END,"
        f"   'r', '[]'::json, 'c', ${n + 2}::text::json, 's', ${n + 3}::text::json,"
        "   'all', false, 'x', true)::text, 'UTF8'), $1"
        "  WHERE EXISTS (SELECT FROM r)"
        "  RETURNING id)"
        " SELECT o.id AS outbox_id, r.id, r.hash, r.version FROM r, o",
        now(),
        *args,
        actor,
        evict_keys,
        orjson.dumps(clients).decode(),
        orjson.dumps(subs).decode(),
    )
    revoked = [(r["id"], bytes(r["hash"]), r["version"]) for r in rows]
    return (rows[0]["outbox_id"] if rows else None), revoked


async def touch_credentials(conn: asyncpg.Pool | asyncpg.Connection, used: dict[str, int]) -> None:
    """Record last uses {credential id: epoch seconds} in one statement, never moving back.

    Rows another transaction holds (another worker's batch, a revocation) are
    skipped rather than waited for: workers locking overlapping batches in
    different orders would otherwise deadlock, and a skipped time is only a
    little older than the one written by the holder.
    """
    await conn.execute(
        "WITH u AS (SELECT * FROM unnest($1::text[], $2::bigint[]) AS u(id, at)),"
        " free AS (SELECT c.id FROM credentials c JOIN u USING (id)"
        "  ORDER BY c.id FOR UPDATE OF c SKIP LOCKED)"
        " UPDATE credentials c SET last_used_at = u.at FROM u, free"
        " WHERE c.id = u.id AND c.id = free.id"
        " AND (c.last_used_at IS NULL OR c.last_used_at < u.at)",
        list(used),
        list(used.values()),
    )


# --- the change log (the invalidation outbox, kept) -------------------------------------


async def add_outbox(conn: asyncpg.Connection, message: bytes) -> int:
    """Record an invalidation in the change's own transaction; returns its id."""
    outbox_id: int = await conn.fetchval(
        "INSERT INTO invalidation_outbox (message, created_at) VALUES ($1, $2) RETURNING id",
        message,
        now(),
    )
    return outbox_id


async def mark_published(conn: asyncpg.Pool | asyncpg.Connection, ids: list[int]) -> None:
    """Record that these invalidations were published (the rows stay: see prune_changes)."""
    await conn.execute(
        "UPDATE invalidation_outbox SET published_at = $2"
        " WHERE id = ANY($1::bigint[]) AND published_at IS NULL",
        ids,
        now(),
    )


async def pending_outbox(
    conn: asyncpg.Pool | asyncpg.Connection, older_than: int, limit: int = 100
) -> list[tuple[int, bytes]]:
    """Invalidations still unpublished, oldest first."""
    rows = await conn.fetch(
        "SELECT id, message FROM invalidation_outbox"
        " WHERE published_at IS NULL AND created_at <= $1 ORDER BY id LIMIT $2",
        older_than,
        limit,
    )
    return [(r["id"], bytes(r["message"])) for r in rows]


async def changes_since(conn: asyncpg.Pool | asyncpg.Connection, since: int) -> list[bytes]:
    """Every change recorded at or after `since`, published or not, oldest first."""
    rows = await conn.fetch(
        "SELECT message FROM invalidation_outbox WHERE created_at >= $1 ORDER BY id", since
    )
    return [bytes(r["message"]) for r in rows]


async def prune_changes(conn: asyncpg.Pool | asyncpg.Connection, before: int) -> int:
    """Forget published changes recorded before `before`; how many."""
    done: str = await conn.execute(
        "DELETE FROM invalidation_outbox WHERE published_at IS NOT NULL AND created_at < $1",
        before,
    )
    return int(done.rsplit(" ", 1)[-1])


async def start_redis_history(conn: asyncpg.Pool | asyncpg.Connection, started_at: int) -> bool:
    """Record a Redis history whose replay started at `started_at`; whether one came before."""
    earlier: bool = await conn.fetchval(
        "WITH earlier AS (SELECT EXISTS (SELECT 1 FROM redis_histories) AS found),"
        " added AS (INSERT INTO redis_histories (started_at) VALUES ($1))"
        " SELECT found FROM earlier",
        started_at,
    )
    return earlier


# --- audit ---------------------------------------------------------------------------------


async def audit(
    conn: asyncpg.Connection,
    *,
    actor: str,
    action: str,
    target_kind: str,
    target_id: str,
    details: dict[str, Any] | None = None,
) -> None:
    """Append one audit entry (in the caller's transaction)."""
    await conn.execute(
        "INSERT INTO audit_log (at, actor, action, target_kind, target_id, details)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        now(),
        actor,
        action,
        target_kind,
        target_id,
        orjson.dumps(details or {}).decode(),
    )


# --- admin ---------------------------------------------------------------------------------

AUDIT_COLUMNS = "id, at, actor, action, target_kind, target_id, details"
# The columns an admin change may set; values are always bound parameters.
CLIENT_MUTABLE = frozenset(CLIENT_COLUMNS.split(", ")) - {
    "client_id",
    "created_at",
    "updated_at",
    "version",
}
CREDENTIAL_MUTABLE = frozenset({"scopes", "audiences", "exp", "metadata", "name"})
_JSON_COLUMNS = frozenset({"jwks", "metadata"})


def _assignments(
    changes: dict[str, Any], allowed: frozenset[str], first: int
) -> tuple[str, list[Any]]:
    """`col = $n, ...` for `changes` (column names checked against `allowed`), and the values."""
    parts, values = [], []
    for n, (column, value) in enumerate(changes.items(), start=first):
        if column not in allowed:
            raise ValueError(f"not a mutable column: {column}")
        parts.append(f"{column} = ${n}")
        dumped = column in _JSON_COLUMNS and value is not None
        values.append(orjson.dumps(value).decode() if dumped else value)
    return ", ".join(parts), values


def _where(filters: list[tuple[str, Any]]) -> tuple[str, list[Any]]:
    """` WHERE a AND b` from (condition with `{}` for its one parameter, value) pairs."""
    parts, values = [], []
    for condition, value in filters:
        values.append(value)
        parts.append(condition.format(f"${len(values)}"))
    return (" WHERE " + " AND ".join(parts) if parts else ""), values


async def insert_admin_key(
    conn: asyncpg.Connection,
    *,
    key_id: str,
    name: str,
    role: str,
    hash_: bytes,
    created_at: int,
    expires_at: int | None,
) -> AdminKey:
    """Store a new admin key (its hash only)."""
    record = await conn.fetchrow(
        "INSERT INTO admin_keys (id, name, role, hash, created_at, expires_at)"
        f" VALUES ($1, $2, $3, $4, $5, $6) RETURNING {ADMIN_KEY_COLUMNS}",
        key_id,
        name,
        role,
        hash_,
        created_at,
        expires_at,
    )
    return admin_key_from_record(record)


async def find_admin_key(
    conn: asyncpg.Pool | asyncpg.Connection, hashes: list[bytes]
) -> AdminKey | None:
    """The admin key stored under any of `hashes`, live or not, or None."""
    record = await conn.fetchrow(
        f"SELECT {ADMIN_KEY_COLUMNS} FROM admin_keys WHERE hash = ANY($1::bytea[])", hashes
    )
    return None if record is None else admin_key_from_record(record)


async def list_admin_keys(
    conn: asyncpg.Pool | asyncpg.Connection, *, limit: int, after: tuple[int, str] | None
) -> list[AdminKey]:
    """Admin keys in creation order, after the (created_at, id) of the previous page."""
    position = after or (-1, "")
    records = await conn.fetch(
        f"SELECT {ADMIN_KEY_COLUMNS} FROM admin_keys WHERE (created_at, id) > ($1, $2)"
        " ORDER BY created_at, id LIMIT $3",
        *position,
        limit,
    )
    return [admin_key_from_record(r) for r in records]


async def lock_live_admins(conn: asyncpg.Connection, at: int) -> list[str]:
    """The ids of the live `admin`-role keys, locked (in id order) for the transaction.

    Every revocation takes these locks first, so two revocations of the last
    two admin keys serialize: the second sees the first's and leaves one.
    """
    records = await conn.fetch(
        "SELECT id FROM admin_keys WHERE role = 'admin' AND revoked_at IS NULL"
        " AND (expires_at IS NULL OR expires_at > $1) ORDER BY id FOR UPDATE",
        at,
    )
    return [r["id"] for r in records]


async def lock_admin_key(conn: asyncpg.Connection, key_id: str) -> AdminKey | None:
    """An admin key, locked for the rest of the transaction."""
    record = await conn.fetchrow(
        f"SELECT {ADMIN_KEY_COLUMNS} FROM admin_keys WHERE id = $1 FOR UPDATE", key_id
    )
    return None if record is None else admin_key_from_record(record)


async def revoke_admin_key(conn: asyncpg.Connection, key_id: str, at: int) -> AdminKey:
    """Mark an admin key revoked at `at`."""
    record = await conn.fetchrow(
        f"UPDATE admin_keys SET revoked_at = $2 WHERE id = $1 RETURNING {ADMIN_KEY_COLUMNS}",
        key_id,
        at,
    )
    return admin_key_from_record(record)


async def touch_admin_keys(conn: asyncpg.Pool | asyncpg.Connection, used: dict[str, int]) -> None:
    """Record last uses {admin key id: epoch seconds} in one statement, never moving back.

    Locked rows (a revocation in progress, another worker's batch) are
    skipped, as in `touch_credentials`.
    """
    await conn.execute(
        "WITH u AS (SELECT * FROM unnest($1::text[], $2::bigint[]) AS u(id, at)),"
        " free AS (SELECT k.id FROM admin_keys k JOIN u USING (id)"
        "  ORDER BY k.id FOR UPDATE OF k SKIP LOCKED)"
        " UPDATE admin_keys k SET last_used_at = u.at FROM u, free"
        " WHERE k.id = u.id AND k.id = free.id"
        " AND (k.last_used_at IS NULL OR k.last_used_at < u.at)",
        list(used),
        list(used.values()),
    )


async def list_clients(
    conn: asyncpg.Pool | asyncpg.Connection, *, limit: int, after: tuple[int, str] | None
) -> list[Client]:
    """Clients in creation order, after the (created_at, client_id) of the previous page."""
    position = after or (-1, "")
    records = await conn.fetch(
        f"SELECT {CLIENT_COLUMNS} FROM clients WHERE (created_at, client_id) > ($1, $2)"
        " ORDER BY created_at, client_id LIMIT $3",
        *position,
        limit,
    )
    return [client_from_record(r, ()) for r in records]


async def lock_client(conn: asyncpg.Connection, client_id: str) -> Client | None:
    """A client's row, locked for the rest of the transaction (its secrets are not read)."""
    record = await conn.fetchrow(
        f"SELECT {CLIENT_COLUMNS} FROM clients WHERE client_id = $1 FOR UPDATE", client_id
    )
    return None if record is None else client_from_record(record, ())


async def update_client(
    conn: asyncpg.Connection, client_id: str, changes: dict[str, Any]
) -> Client:
    """Apply `changes` (column: value) to a client, with a new version; returns it without
    its secrets."""
    sets, values = _assignments(changes, CLIENT_MUTABLE, first=3)
    record = await conn.fetchrow(
        f"UPDATE clients SET {sets}, updated_at = $2, version = nextval('change_version')"
        " WHERE client_id = $1"
        f" RETURNING {CLIENT_COLUMNS}",
        client_id,
        now(),
        *values,
    )
    return client_from_record(record, ())


async def new_client_version(conn: asyncpg.Connection, client_id: str) -> int:
    """Give a client a new version (its secrets changed); returns it."""
    version: int = await conn.fetchval(
        "UPDATE clients SET version = nextval('change_version') WHERE client_id = $1"
        " RETURNING version",
        client_id,
    )
    return version


async def rotate_client_secret(
    conn: asyncpg.Connection, client_id: str, *, secret_hash: bytes, grace_until: int, keep: int
) -> int:
    """Add a new current secret; the current ones live on until `grace_until`. Returns the
    client's new version.

    At most `keep` secrets stay in grace (the newest); dead ones are deleted.
    """
    t = now()
    await conn.execute(
        "UPDATE client_secrets SET expires_at = $2 WHERE client_id = $1 AND expires_at IS NULL",
        client_id,
        grace_until,
    )
    await conn.execute(
        "INSERT INTO client_secrets (client_id, secret_hash, created_at) VALUES ($1, $2, $3)",
        client_id,
        secret_hash,
        t,
    )
    await conn.execute(
        "DELETE FROM client_secrets WHERE client_id = $1 AND expires_at IS NOT NULL"
        " AND (expires_at <= $2 OR id NOT IN (SELECT id FROM client_secrets"
        "  WHERE client_id = $1 AND expires_at > $2 ORDER BY id DESC LIMIT $3))",
        client_id,
        t,
        keep,
    )
    return await new_client_version(conn, client_id)


async def delete_client_secrets(conn: asyncpg.Connection, client_id: str) -> None:
    """Forget every secret of a client (it is being deleted, or now has no secret); the
    caller's transaction gives the client a new version (`update_client`)."""
    await conn.execute("DELETE FROM client_secrets WHERE client_id = $1", client_id)


async def get_credential(
    conn: asyncpg.Pool | asyncpg.Connection, credential_id: str, *, lock: bool = False
) -> Credential | None:
    """A credential by id, optionally locked for the rest of the transaction."""
    record = await conn.fetchrow(
        f"SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE id = $1"
        + (" FOR UPDATE" if lock else ""),
        credential_id,
    )
    return None if record is None else credential_from_record(record)


async def update_credential(
    conn: asyncpg.Connection, credential_id: str, changes: dict[str, Any]
) -> tuple[str, bytes, int]:
    """Apply `changes` to a credential under a fresh version; returns (id, hash, version)."""
    sets, values = _assignments(changes, CREDENTIAL_MUTABLE, first=2)
    record = await conn.fetchrow(
        f"UPDATE credentials SET {sets}, version = nextval('change_version') WHERE id = $1"
        " RETURNING id, hash, version",
        credential_id,
        *values,
    )
    return record["id"], bytes(record["hash"]), record["version"]


async def list_credentials(
    conn: asyncpg.Pool | asyncpg.Connection,
    *,
    client_id: str | None,
    sub: str | None,
    kind: str | None,
    active: bool | None,
    limit: int,
    after: str | None,
) -> list[Credential]:
    """Credentials in id order after `after`, filtered by each criterion given."""
    live = "(revoked_at IS NULL AND (exp IS NULL OR exp > {}))"
    filters: list[tuple[str, Any]] = [
        (condition, value)
        for condition, value in (
            ("client_id = {}", client_id),
            ("sub = {}", sub),
            ("kind = {}", kind),
            ("id > {}", after),
        )
        if value is not None
    ]
    if active is not None:
        filters.append((live if active else f"NOT {live}", now()))
    where, values = _where(filters)
    records = await conn.fetch(
        f"SELECT {CREDENTIAL_COLUMNS} FROM credentials{where} ORDER BY id LIMIT ${len(values) + 1}",
        *values,
        limit,
    )
    return [credential_from_record(r) for r in records]


async def list_audit(
    conn: asyncpg.Pool | asyncpg.Connection,
    *,
    action: str | None,
    target_id: str | None,
    actor: str | None,
    limit: int,
    before: int | None,
) -> list[dict[str, Any]]:
    """Audit entries, newest first, older than the id `before`, filtered by each criterion."""
    where, values = _where(
        [
            (condition, value)
            for condition, value in (
                ("action = {}", action),
                ("target_id = {}", target_id),
                ("actor = {}", actor),
                ("id < {}", before),
            )
            if value is not None
        ]
    )
    records = await conn.fetch(
        f"SELECT {AUDIT_COLUMNS} FROM audit_log{where} ORDER BY id DESC LIMIT ${len(values) + 1}",
        *values,
        limit,
    )
    return [{**dict(r), "details": orjson.loads(r["details"])} for r in records]


async def audit_revoked(
    conn: asyncpg.Connection, actor: str, revoked: list[tuple[str, bytes, int]]
) -> None:
    """One `credential.revoke` entry per revoked (id, hash, version), in one statement."""
    if not revoked:
        return
    ids = [credential_id for credential_id, _hash, _version in revoked]
    await conn.execute(
        "INSERT INTO audit_log (at, actor, action, target_kind, target_id)"
        " SELECT $1, $2, 'credential.revoke',"
        "  CASE WHEN c.kind = 'api_key' THEN 'api_key' ELSE 'access_token' END, c.id"
        " FROM credentials c WHERE c.id = ANY($3::text[]) ORDER BY c.id",
        now(),
        actor,
        ids,
    )
