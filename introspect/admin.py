"""Admin operations: clients, API keys, admin keys, revocations, listings and the audit log.

The admin HTTP API (`introspect/web/admin.py`) and the CLI call these same
functions with the same JSON-shaped input (a body object, query parameters
as strings), so both validate alike and strictly: a bad or unknown field is
`Invalid` naming it, an unknown id `NotFound`, a change that the target's
state forbids `Conflict`, and in each case nothing is written. Every write
is one transaction through `Authority.change`, with its audit entries in
that same transaction and its cache invalidation announced after the commit.

`actor` is who acts, as the audit log records it: an admin key id, `cli`,
or `client:<id>`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Any, TypeVar, cast

import asyncpg
import orjson

from introspect import access_keys, credentials, jwks, rfc6749, rfc7523, store
from introspect.cache import Invalidation
from introspect.credentials import Kind
from introspect.errors import AdminError, Conflict, Invalid, InvalidClientMetadata, NotFound
from introspect.metrics import METRICS
from introspect.rfc6749 import SCOPE_TOKEN
from introspect.service import Authority, Revoked, new_id, revoke_in
from introspect.store import AdminKey, Client, Credential

T = TypeVar("T")

ACTIONS = frozenset(
    {
        "client.create",
        "client.update",
        "client.delete",
        "client.secret_rotate",
        "api_key.create",
        "api_key.update",
        "api_key.rotate",
        "credential.revoke",
        "admin_key.create",
        "admin_key.revoke",
        "portal.session_create",
        "portal.session_revoke",
    }
)
MAX_TEXT = 256
MAX_KEY_NAME = 100
MAX_TOKEN = 8192
MAX_SCOPE = 128
MAX_ITEMS = 100
MAX_METADATA = 4096
MAX_JWKS = 16384
MAX_DEPTH = 32
MAX_TOKEN_TTL = 366 * 86_400
MAX_LIFETIME = 10 * 366 * 86_400
MAX_GRACE = 30 * 86_400
MAX_EPOCH = 253_402_300_799  # 9999-12-31T23:59:59Z
MAX_BIGINT = 2**63 - 1
# Rotated-out secrets still in their grace period, besides the current one.
KEEP_IN_GRACE = 2
DEFAULT_PAGE = 50
MAX_PAGE = 500
SELECTORS = ("token", "id", "jti", "client_id", "sub")

_ID_BODY = re.compile(r"[0-9A-Za-z]{22}")


# --- validation ----------------------------------------------------------------------------


def _fields(body: object, allowed: Iterable[str]) -> dict[str, Any]:
    """`body` as a JSON object holding only `allowed` fields."""
    if not isinstance(body, dict):
        raise Invalid("the body must be a JSON object")
    known = set(allowed)
    for field in body:
        if field not in known:
            raise Invalid(f"unknown field {field[:40]!r}")
    return body


def _required(body: Mapping[str, Any], field: str) -> Any:
    if field not in body:
        raise Invalid(f"{field}: is required")
    return body[field]


def _text(value: object, field: str, max_length: int = MAX_TEXT) -> str:
    """A non-empty printable string of at most `max_length` characters."""
    if not isinstance(value, str) or not value:
        raise Invalid(f"{field}: must be a non-empty string")
    if len(value) > max_length:
        raise Invalid(f"{field}: must be at most {max_length} characters")
    if not value.isprintable():
        raise Invalid(f"{field}: must not hold control or unprintable characters")
    return value


def _integer(value: object, field: str, minimum: int, maximum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
        raise Invalid(f"{field}: must be an integer from {minimum} to {maximum}")
    return value


def _flag(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"{field}: must be true or false")
    return value


def _list(value: object, field: str, item: Callable[[object, str], str]) -> list[str]:
    """A JSON array of at most MAX_ITEMS valid items, duplicates dropped, order kept."""
    if not isinstance(value, list):
        raise Invalid(f"{field}: must be an array of strings")
    if len(value) > MAX_ITEMS:
        raise Invalid(f"{field}: at most {MAX_ITEMS} entries")
    return list(dict.fromkeys(item(v, field) for v in value))


def _scope(value: object, field: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_SCOPE or not SCOPE_TOKEN.fullmatch(value):
        raise Invalid(f"{field}: each must be an RFC 6749 scope token (no spaces or quotes)")
    return value


def _scopes(value: object, field: str) -> list[str]:
    return _list(value, field, _scope)


def _audiences(value: object, field: str) -> list[str]:
    return _list(value, field, _text)


def _token_ttl(value: object, field: str) -> int:
    return _integer(value, field, 1, MAX_TOKEN_TTL)


def _token_format(value: object, field: str) -> str:
    if value not in ("opaque", "jwt"):
        raise Invalid(f"{field}: must be opaque or jwt")
    return str(value)


def _check_nesting(value: object, field: str) -> None:
    """No string (or key) holds NUL, which Postgres cannot store; nesting stays shallow."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise Invalid(f"{field}: nested more than {MAX_DEPTH} levels deep")
        if isinstance(item, str):
            if "\x00" in item:
                raise Invalid(f"{field}: must not hold NUL characters")
        elif isinstance(item, dict):
            stack.extend((k, depth) for k in item)
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


def _json_object(value: object, field: str, max_bytes: int) -> dict[str, Any] | None:
    """A JSON object (or null) of at most `max_bytes` as compact UTF-8 JSON."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise Invalid(f"{field}: must be a JSON object")
    _check_nesting(value, field)
    if len(orjson.dumps(value)) > max_bytes:
        raise Invalid(f"{field}: must be at most {max_bytes} bytes as compact JSON")
    return value


def _key_name(value: object, field: str) -> str | None:
    """An API key's name (null: none)."""
    return None if value is None else _text(value, field, MAX_KEY_NAME)


def _metadata(value: object, field: str) -> dict[str, Any] | None:
    return _json_object(value, field, MAX_METADATA)


def _jwks(value: object, field: str) -> dict[str, Any] | None:
    """A JWK Set we can verify client assertions with (see `introspect.jwks`), or null."""
    try:
        key_set = _json_object(value, field, MAX_JWKS)
        if key_set is not None:
            jwks.validate(key_set, field)
    except (Invalid, jwks.InvalidKeySet) as exc:
        raise InvalidClientMetadata(str(exc)) from None
    return key_set


def _auth_method(value: object, field: str) -> str:
    methods = rfc6749.REGISTRABLE_AUTH_METHODS
    if value not in methods:
        raise InvalidClientMetadata(f"{field}: must be one of {', '.join(methods)}")
    return str(value)


def _check_auth_method(method: str, key_set: dict[str, Any] | None) -> None:
    if method == rfc7523.PRIVATE_KEY_JWT and key_set is None:
        raise InvalidClientMetadata(
            "token_endpoint_auth_method: private_key_jwt needs a jwks to verify assertions with"
        )


def _grace(body: object) -> int:
    """The `grace_period` of a rotation: seconds, default and null 0."""
    value = _fields(body, ("grace_period",)).get("grace_period")
    return 0 if value is None else _integer(value, "grace_period", 0, MAX_GRACE)


def _known(value: str, prefix: str, what: str) -> str:
    """A path id, which names nothing unless it has the shape `new_id(prefix)` gives."""
    head, sep, tail = value.partition("_")
    if head != prefix or not sep or not _ID_BODY.fullmatch(tail):
        raise NotFound(what)
    return value


def _check_format(token_format: str, audiences: Sequence[str]) -> None:
    if token_format == "jwt" and not audiences:
        raise Invalid("token_format: jwt needs at least one audience (RFC 9068 requires aud)")


def _within(scopes: Sequence[str], client: Client) -> None:
    outside = [s for s in scopes if s not in client.scopes]
    if outside:
        raise Invalid(f"scopes: outside the client's scopes: {' '.join(outside)[:200]}")


# --- pagination ----------------------------------------------------------------------------


def _encode_cursor(position: list[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(position)).rstrip(b"=").decode()


def _cursor_part(value: object, kind: type) -> bool:
    if isinstance(value, bool) or type(value) is not kind:
        return False
    if isinstance(value, int):
        return 0 <= value <= MAX_BIGINT
    return isinstance(value, str) and _printable(value)


def _decode_cursor(raw: str, shape: tuple[type, ...]) -> list[Any]:
    """The position a cursor of this list encodes; anything else is `Invalid`."""
    try:
        position = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError):
        position = None
    valid = (
        isinstance(position, list)
        and len(position) == len(shape)
        and all(_cursor_part(value, kind) for value, kind in zip(position, shape, strict=True))
    )
    if not valid:
        raise Invalid("cursor: not a cursor of this list")
    return cast(list[Any], position)


def _printable(value: str) -> bool:
    return 0 < len(value) <= MAX_TEXT and value.isprintable()


def _query(query: Mapping[str, str], filters: Sequence[str]) -> tuple[int, dict[str, str]]:
    """(limit, filters) of a list request; unknown parameters are `Invalid`."""
    for name in query:
        if name not in filters and name not in ("limit", "cursor"):
            raise Invalid(f"unknown parameter {name[:40]!r}")
    raw = query.get("limit")
    limit = DEFAULT_PAGE
    if raw is not None:
        if not (len(raw) <= 3 and raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_PAGE):
            raise Invalid(f"limit: must be an integer from 1 to {MAX_PAGE}")
        limit = int(raw)
    return limit, {name: _text(query[name], name) for name in filters if name in query}


def _page(
    rows: Sequence[T],
    limit: int,
    render: Callable[[T], dict[str, Any]],
    position: Callable[[T], list[Any]],
) -> dict[str, Any]:
    """One page from up to `limit + 1` rows: the extra row only says that more follow."""
    shown = rows[:limit]
    more = len(rows) > limit
    return {
        "items": [render(row) for row in shown],
        "next_cursor": _encode_cursor(position(shown[-1])) if more else None,
    }


# --- admin keys ----------------------------------------------------------------------------


# `admin` may call every admin route, `auditor` only the ones that read (GET).
ROLES = ("admin", "auditor")


class Refusal(StrEnum):
    """Why an admin API request was refused: a metric label and a log word, never the key."""

    MISSING = "missing"
    MALFORMED = "malformed"
    UNKNOWN = "unknown"
    REVOKED = "revoked"
    EXPIRED = "expired"
    INSUFFICIENT_SCOPE = "insufficient_scope"


async def authenticate(authority: Authority, presented: str) -> AdminKey | Refusal:
    """The live admin key presented, or why not; a malformed one costs no I/O.

    Every call reads Postgres (no worker remembers a verdict), so a revoked
    or expired key is refused at once by every worker of every instance. Its
    use is remembered and written in batches with the API keys' (`flush_usage`).
    """
    if credentials.parse(presented) is not Kind.ADMIN_KEY:
        return Refusal.MALFORMED
    hashes = [credentials.keyed_hash(key, presented) for key in authority.keys]
    METRICS.pg_queries.inc()
    key = await store.find_admin_key(authority.pool, hashes)
    if key is None:
        return Refusal.UNKNOWN
    if key.revoked_at is not None:
        return Refusal.REVOKED
    if not key.live(store.now()):
        return Refusal.EXPIRED
    authority.note_admin_use(key.id)
    return key


def permits(key: AdminKey, *, writes: bool) -> bool:
    """Whether `key`'s role allows a request that may change something (else only reads)."""
    return key.role == "admin" or not writes


def _role(value: object, field: str) -> str:
    if value not in ROLES:
        raise Invalid(f"{field}: must be one of {', '.join(ROLES)}")
    return str(value)


async def create_admin_key(authority: Authority, actor: str, body: object) -> dict[str, Any]:
    """Mint an admin key: its record and `key` (shown once)."""
    fields = _fields(body, ("name", "role", "expires_in"))
    name = _text(_required(fields, "name"), "name")
    role = _role(fields.get("role", "admin"), "role")
    expires_in = fields.get("expires_in")
    lifetime = None if expires_in is None else _integer(expires_in, "expires_in", 1, MAX_LIFETIME)
    key = credentials.generate(Kind.ADMIN_KEY)
    key_id = new_id("adm")

    async def apply(conn: asyncpg.Connection) -> tuple[AdminKey, Invalidation]:
        t = store.now()
        minted = await store.insert_admin_key(
            conn,
            key_id=key_id,
            name=name,
            role=role,
            hash_=credentials.keyed_hash(authority.keys[0], key),
            created_at=t,
            expires_at=None if lifetime is None else t + lifetime,
        )
        await store.audit(
            conn,
            actor=actor,
            action="admin_key.create",
            target_kind="admin_key",
            target_id=key_id,
            details={"name": name, "role": role, "expires_at": minted.expires_at},
        )
        return minted, Invalidation()

    minted, _ = await authority.change(apply)
    return {**minted.public(), "key": key}


async def list_admin_keys(authority: Authority, query: Mapping[str, str]) -> dict[str, Any]:
    """A page of admin keys in creation order (never a key or its hash)."""
    return await _in_creation_order(
        query,
        authority.pool,
        store.list_admin_keys,
        AdminKey.public,
        lambda k: [k.created_at, k.id],
    )


async def revoke_admin_key(authority: Authority, actor: str, key_id: str) -> dict[str, Any]:
    """Revoke an admin key: refused at once by every worker (each request reads Postgres).

    Revoking the last live `admin`-role key is `Conflict`: nobody could mint
    another through the API. The live admin keys are locked first, in one
    order, so concurrent revocations cannot together revoke them all.
    Revoking a revoked key changes nothing.
    """
    _known(key_id, "adm", "admin key")

    async def apply(conn: asyncpg.Connection) -> tuple[AdminKey, Invalidation]:
        t = store.now()
        live_admins = await store.lock_live_admins(conn, t)
        key = await store.lock_admin_key(conn, key_id)
        if key is None:
            raise NotFound("admin key")
        if key.revoked_at is not None:
            return key, Invalidation()
        if live_admins == [key_id]:
            raise Conflict("this is the last live admin-role key: create another one first")
        revoked = await store.revoke_admin_key(conn, key_id, t)
        await store.audit(
            conn,
            actor=actor,
            action="admin_key.revoke",
            target_kind="admin_key",
            target_id=key_id,
            details={"name": key.name, "role": key.role},
        )
        return revoked, Invalidation()

    revoked, _ = await authority.change(apply)
    return revoked.public()


# --- clients -------------------------------------------------------------------------------

_CLIENT_FIELDS: dict[str, Callable[[object, str], Any]] = {
    "name": _text,
    "scopes": _scopes,
    "audiences": _audiences,
    "can_introspect": _flag,
    "token_ttl": _token_ttl,
    "token_format": _token_format,
    "jwks": _jwks,
    "token_endpoint_auth_method": _auth_method,
    "disabled": _flag,
}
_CLIENT_CREATE = tuple(f for f in _CLIENT_FIELDS if f != "disabled")


def _client_fields(body: object, allowed: Iterable[str]) -> dict[str, Any]:
    return {f: _CLIENT_FIELDS[f](v, f) for f, v in _fields(body, allowed).items()}


async def create_client(authority: Authority, actor: str, body: object) -> dict[str, Any]:
    """Register a client: its public record and `client_secret` (shown once), which a
    private_key_jwt client does not get."""
    fields = _client_fields(body, _CLIENT_CREATE)
    name = _required(fields, "name")
    audiences = fields.get("audiences", [])
    token_format = fields.get("token_format", "opaque")
    _check_format(token_format, audiences)
    method = fields.get("token_endpoint_auth_method", rfc6749.CLIENT_SECRET_BASIC)
    _check_auth_method(method, fields.get("jwks"))
    client, secret = await authority.create_client(
        actor=actor,
        name=name,
        scopes=fields.get("scopes", []),
        audiences=audiences,
        can_introspect=fields.get("can_introspect", False),
        token_ttl=fields.get("token_ttl", 3600),
        token_format=token_format,
        jwks=fields.get("jwks"),
        token_endpoint_auth_method=method,
    )
    return client.public() if secret is None else {**client.public(), "client_secret": secret}


async def list_clients(authority: Authority, query: Mapping[str, str]) -> dict[str, Any]:
    """A page of clients in registration order."""
    return await _in_creation_order(
        query,
        authority.pool,
        store.list_clients,
        Client.public,
        lambda c: [c.created_at, c.client_id],
    )


async def _in_creation_order(
    query: Mapping[str, str],
    pool: asyncpg.Pool,
    fetch: Callable[..., Awaitable[list[T]]],
    public: Callable[[T], dict[str, Any]],
    position_of: Callable[[T], list[Any]],
) -> dict[str, Any]:
    """A page of records listed by (created_at, id), `?cursor=` naming the last one seen."""
    limit, _ = _query(query, ())
    after = query.get("cursor")
    position = None if after is None else tuple(_decode_cursor(after, (int, str)))
    rows = await fetch(pool, limit=limit + 1, after=position)
    return _page(rows, limit, public, position_of)


async def read_client(authority: Authority, client_id: str) -> dict[str, Any]:
    """A client's public record."""
    client = await store.get_client(authority.pool, _known(client_id, "client", "client"))
    if client is None:
        raise NotFound("client")
    return client.public()


async def _locked_client(conn: asyncpg.Connection, client_id: str) -> Client:
    client = await store.lock_client(conn, _known(client_id, "client", "client"))
    if client is None:
        raise NotFound("client")
    return client


async def _changed_client(
    conn: asyncpg.Connection,
    actor: str,
    client_id: str,
    changes: dict[str, Any],
    details: dict[str, Any],
) -> tuple[Client, Invalidation]:
    """Apply `changes` to a locked client, audited as `client.update`; its cached record
    (and every authentication remembered against it) must go from every worker."""
    client = await store.update_client(conn, client_id, changes)
    await store.audit(
        conn,
        actor=actor,
        action="client.update",
        target_kind="client",
        target_id=client_id,
        details=details,
    )
    return client, Invalidation(records=[(client_id, client.version)])


async def update_client(
    authority: Authority, actor: str, client_id: str, body: object
) -> dict[str, Any]:
    """Change a client's registered fields; its cached record is dropped everywhere.

    Becoming a private_key_jwt client forgets its secrets: going back to
    client_secret_basic leaves it without one until a rotation makes one.
    """
    changes = _client_fields(body, _CLIENT_FIELDS)
    if not changes:
        raise Invalid("the body names no field to change")

    async def apply(conn: asyncpg.Connection) -> tuple[Client, Invalidation]:
        current = await _locked_client(conn, client_id)
        _check_format(
            changes.get("token_format", current.token_format),
            changes.get("audiences", current.audiences),
        )
        method = changes.get("token_endpoint_auth_method", current.token_endpoint_auth_method)
        if "token_endpoint_auth_method" in changes or "jwks" in changes:
            _check_auth_method(method, changes.get("jwks", current.jwks))
        if (
            method == rfc7523.PRIVATE_KEY_JWT
            and current.token_endpoint_auth_method == rfc6749.CLIENT_SECRET_BASIC
        ):
            await store.delete_client_secrets(conn, client_id)
        return await _changed_client(conn, actor, client_id, changes, changes)

    client, _ = await authority.change(apply)
    return client.public()


async def delete_client(authority: Authority, actor: str, client_id: str) -> Revoked:
    """Disable a client, forget its secrets and its jwks, and revoke every credential it holds.

    Re-enabling it (PATCH) revives no way to authenticate: it needs a new
    secret (rotation) or a new jwks or access key first.
    """

    async def apply(conn: asyncpg.Connection) -> tuple[int, Invalidation]:
        await _locked_client(conn, client_id)
        deleted = await store.update_client(conn, client_id, {"disabled": True, "jwks": None})
        await store.delete_client_secrets(conn, client_id)
        rows = await revoke_in(conn, actor, "client_id = $2", client_id)
        await store.audit(
            conn,
            actor=actor,
            action="client.delete",
            target_kind="client",
            target_id=client_id,
            details={"revoked": len(rows)},
        )
        tombstones = [(key, version) for _id, key, version in rows]
        return len(rows), Invalidation(
            tombstones=tombstones,
            records=[(client_id, deleted.version)],
            clients=[client_id],
            revoked=True,
        )

    count, announced = await authority.change(apply)
    return Revoked(count=count, announced=announced)


async def rotate_client_secret(
    authority: Authority, actor: str, client_id: str, body: object
) -> dict[str, Any]:
    """A new client secret; the current ones keep working for `grace_period` seconds.

    At most KEEP_IN_GRACE rotated-out secrets stay alive: rotating again
    retires the oldest at once.
    """
    grace = _grace(body)
    secret = credentials.generate(Kind.CLIENT_SECRET)

    async def apply(conn: asyncpg.Connection) -> tuple[None, Invalidation]:
        client = await _locked_client(conn, client_id)
        if client.token_endpoint_auth_method != rfc6749.CLIENT_SECRET_BASIC:
            raise Conflict(
                "the client authenticates with private_key_jwt and has no secret; set its"
                " token_endpoint_auth_method to client_secret_basic first"
            )
        version = await store.rotate_client_secret(
            conn,
            client_id,
            secret_hash=credentials.keyed_hash(authority.keys[0], secret),
            grace_until=store.now() + grace,
            keep=KEEP_IN_GRACE,
        )
        await store.audit(
            conn,
            actor=actor,
            action="client.secret_rotate",
            target_kind="client",
            target_id=client_id,
            details={"grace_period": grace},
        )
        return None, Invalidation(records=[(client_id, version)])

    await authority.change(apply)
    return {"client_id": client_id, "client_secret": secret, "grace_period": grace}


# --- service-client access keys ------------------------------------------------------------


def _listed_keys(client: Client) -> list[Any]:
    """The keys of a client's jwks (none without one)."""
    listed = (client.jwks or {}).get("keys", [])
    if not isinstance(listed, list):
        raise Conflict("the client's jwks holds no array of keys: replace it first")
    return listed


async def create_access_key(
    authority: Authority, actor: str, client_id: str, body: object
) -> dict[str, Any]:
    """A new Ed25519 key pair for a client: the public key joins its jwks under a new kid.

    Answers {kid, access_key}: the access key (see `introspect.access_keys`)
    holds the private key, shown once and never stored. A disabled client,
    or one whose jwks holds `jwks.MAX_KEYS` keys already, is a `Conflict`.
    """
    _fields(body, ())
    key = access_keys.generate(_known(client_id, "client", "client"), new_id("ak"))

    async def apply(conn: asyncpg.Connection) -> tuple[Client, Invalidation]:
        client = await _locked_client(conn, client_id)
        if client.disabled:
            raise Conflict("the client is disabled")
        listed = _listed_keys(client)
        if len(listed) >= jwks.MAX_KEYS:
            raise Conflict(f"the client's jwks holds {jwks.MAX_KEYS} keys already: delete one")
        key_set = {**(client.jwks or {}), "keys": [*listed, key.public_jwk()]}
        try:
            jwks.validate(key_set)
        except jwks.InvalidKeySet as exc:
            raise Conflict(f"the client's jwks takes no more keys until fixed ({exc})") from None
        details = {"access_key_created": key.kid}
        return await _changed_client(conn, actor, client_id, {"jwks": key_set}, details)

    await authority.change(apply)
    return {"kid": key.kid, "access_key": key.encode()}


async def delete_access_key(authority: Authority, actor: str, client_id: str, kid: str) -> None:
    """Remove the key `kid` from a client's jwks: assertions it signs fail at once everywhere.

    Removing the last key leaves the client with no jwks.
    """

    async def apply(conn: asyncpg.Connection) -> tuple[Client, Invalidation]:
        client = await _locked_client(conn, client_id)
        listed = _listed_keys(client)
        kept = [k for k in listed if not (isinstance(k, dict) and k.get("kid") == kid)]
        if len(kept) == len(listed):
            raise NotFound("key")
        key_set = {**(client.jwks or {}), "keys": kept} if kept else None
        details = {"access_key_deleted": kid}
        return await _changed_client(conn, actor, client_id, {"jwks": key_set}, details)

    await authority.change(apply)


# --- API keys ------------------------------------------------------------------------------


async def create_api_key(authority: Authority, actor: str, body: object) -> dict[str, Any]:
    """Issue an API key for a client and/or subject: its public record and `key` (shown once)."""
    fields = _fields(
        body, ("client_id", "sub", "scopes", "audiences", "expires_in", "metadata", "name")
    )
    client_id = fields.get("client_id")
    sub = fields.get("sub")
    if client_id is None and sub is None:
        raise Invalid("client_id, sub: at least one is required")
    client_id = None if client_id is None else _text(client_id, "client_id")
    subject = _text(sub, "sub") if sub is not None else _text(client_id, "client_id")
    scopes = _scopes(_required(fields, "scopes"), "scopes")
    audiences = _audiences(fields.get("audiences", []), "audiences")
    expires_in = fields.get("expires_in")
    lifetime = None if expires_in is None else _integer(expires_in, "expires_in", 1, MAX_LIFETIME)
    metadata = _metadata(fields.get("metadata"), "metadata")
    name = _key_name(fields.get("name"), "name")
    key = credentials.generate(Kind.API_KEY)
    key_id = new_id("key")

    async def apply(conn: asyncpg.Connection) -> tuple[Credential, Invalidation]:
        if client_id is not None:
            await _check_bound_client(conn, client_id, scopes)
        iat = store.now()
        await store.insert_credential(
            conn,
            credential_id=key_id,
            kind=Kind.API_KEY.value,
            hash_=credentials.keyed_hash(authority.keys[0], key),
            client_id=client_id,
            sub=subject,
            scopes=scopes,
            audiences=audiences,
            iat=iat,
            exp=None if lifetime is None else iat + lifetime,
            metadata=metadata,
            name=name,
            prefix=credentials.display_prefix(key),
        )
        issued = await _credential(conn, key_id)
        await store.audit(
            conn,
            actor=actor,
            action="api_key.create",
            target_kind="api_key",
            target_id=key_id,
            details={k: v for k, v in issued.public().items() if k in _AUDITED_KEY_FIELDS},
        )
        return issued, Invalidation()

    issued, _ = await authority.change(apply)
    return {**issued.public(), "key": key}


async def _check_bound_client(
    conn: asyncpg.Connection, client_id: str, scopes: Sequence[str]
) -> None:
    """Keys bound to `client_id` may hold `scopes`: it exists (404), is enabled (409) and
    allows them (400)."""
    client = await store.get_client(conn, client_id)
    if client is None:
        raise AdminError(404, "not_found", "client_id: no such client")
    if client.disabled:
        raise Conflict("client_id: the client is disabled")
    _within(scopes, client)


_AUDITED_KEY_FIELDS = frozenset({"client_id", "sub", "scopes", "audiences", "exp", "name"})


async def _credential(conn: asyncpg.Connection, credential_id: str) -> Credential:
    """A credential this transaction has just written."""
    found = await store.get_credential(conn, credential_id)
    if found is None:
        raise LookupError(f"credential {credential_id} vanished inside its own transaction")
    return found


async def _live_key(conn: asyncpg.Connection, key_id: str) -> Credential:
    """The API key `key_id`, locked; 404 when unknown, 409 when revoked or expired."""
    key = await store.get_credential(conn, _known(key_id, "key", "API key"), lock=True)
    if key is None or key.kind != Kind.API_KEY.value:
        raise NotFound("API key")
    if key.revoked_at is not None:
        raise Conflict("the API key is revoked")
    if key.exp is not None and key.exp <= store.now():
        raise Conflict("the API key has expired")
    return key


def _expiry(fields: Mapping[str, Any], now: int) -> int | None:
    """The new `exp` from `expires_in` or `expires_at` (null: never)."""
    if "expires_in" in fields:
        value = fields["expires_in"]
        return None if value is None else now + _integer(value, "expires_in", 1, MAX_LIFETIME)
    value = fields["expires_at"]
    return None if value is None else _integer(value, "expires_at", now + 1, MAX_EPOCH)


async def update_api_key(
    authority: Authority, actor: str, key_id: str, body: object
) -> dict[str, Any]:
    """Change a live key's scopes, audiences, expiry, metadata or name: visible at once
    everywhere."""
    fields = _fields(body, ("scopes", "audiences", "expires_in", "expires_at", "metadata", "name"))
    if not fields:
        raise Invalid("the body names no field to change")
    if "expires_in" in fields and "expires_at" in fields:
        raise Invalid("expires_in, expires_at: send one, not both")
    changes: dict[str, Any] = {}
    if "scopes" in fields:
        changes["scopes"] = _scopes(fields["scopes"], "scopes")
    if "audiences" in fields:
        changes["audiences"] = _audiences(fields["audiences"], "audiences")
    if "expires_in" in fields or "expires_at" in fields:
        changes["exp"] = _expiry(fields, store.now())
    if "metadata" in fields:
        changes["metadata"] = _metadata(fields["metadata"], "metadata")
    if "name" in fields:
        changes["name"] = _key_name(fields["name"], "name")

    async def apply(conn: asyncpg.Connection) -> tuple[Credential, Invalidation]:
        key = await _live_key(conn, key_id)
        if "scopes" in changes and key.client_id is not None:
            # The foreign key guarantees the client; its scopes bound the key's.
            client = await store.get_client(conn, key.client_id)
            if client is not None:
                _within(changes["scopes"], client)
        changed = await store.update_credential(conn, key_id, changes)
        await store.audit(
            conn,
            actor=actor,
            action="api_key.update",
            target_kind="api_key",
            target_id=key_id,
            details=changes,
        )
        return await _credential(conn, key_id), Invalidation.for_credentials([changed])

    updated, _ = await authority.change(apply)
    return updated.public()


async def rotate_api_key(
    authority: Authority, actor: str, key_id: str, body: object
) -> dict[str, Any]:
    """A new key with the same attributes; the old one expires after the grace period.

    The grace period never extends the old key's own expiry, and the new key
    expires when the old one would have.
    """
    grace = _grace(body)
    key = credentials.generate(Kind.API_KEY)
    new_key_id = new_id("key")

    async def apply(conn: asyncpg.Connection) -> tuple[tuple[Credential, int], Invalidation]:
        old = await _live_key(conn, key_id)
        t = store.now()
        ends = t + grace if old.exp is None else min(old.exp, t + grace)
        await store.insert_credential(
            conn,
            credential_id=new_key_id,
            kind=Kind.API_KEY.value,
            hash_=credentials.keyed_hash(authority.keys[0], key),
            client_id=old.client_id,
            sub=old.sub,
            scopes=list(old.scopes),
            audiences=list(old.audiences),
            iat=t,
            exp=old.exp,
            username=old.username,
            metadata=old.metadata,
            name=old.name,
            prefix=credentials.display_prefix(key),
        )
        changed = await store.update_credential(conn, key_id, {"exp": ends})
        await store.audit(
            conn,
            actor=actor,
            action="api_key.rotate",
            target_kind="api_key",
            target_id=key_id,
            details={"new_id": new_key_id, "grace_period": grace, "exp": ends},
        )
        await store.audit(
            conn,
            actor=actor,
            action="api_key.create",
            target_kind="api_key",
            target_id=new_key_id,
            details={"rotated_from": key_id},
        )
        issued = await _credential(conn, new_key_id)
        return (issued, ends), Invalidation.for_credentials([changed])

    (issued, ends), _ = await authority.change(apply)
    return {**issued.public(), "key": key, "replaced": {"id": key_id, "exp": ends}}


# --- revocation and listings ---------------------------------------------------------------


def revoked_answer(revoked: Revoked) -> dict[str, Any]:
    """{"revoked": N, "listeners": M}, and "invalidation": "pending" when Redis was down."""
    out: dict[str, Any] = {"revoked": revoked.count, "listeners": revoked.announced.listeners}
    if revoked.announced.pending:
        out["invalidation"] = "pending"
    return out


async def revoke(authority: Authority, actor: str, body: object) -> Revoked:
    """Revoke by exactly one of token, id, jti, client_id (all it holds) or sub."""
    fields = _fields(body, SELECTORS)
    if len(fields) != 1:
        raise Invalid(f"send exactly one of {', '.join(SELECTORS)}")
    ((selector, raw),) = fields.items()
    value = _text(raw, selector, MAX_TOKEN if selector == "token" else MAX_TEXT)
    if selector == "token":
        return await authority.revoke_presented(value, actor=actor, owner=None)
    if selector == "client_id":
        return await authority.revoke_where(actor, "client_id = $2", value, clients=[value])
    if selector == "sub":
        return await authority.revoke_where(actor, "sub = $2", value, subs=[value])
    return await authority.revoke_where(actor, "id = $2", value)


async def list_tokens(authority: Authority, query: Mapping[str, str]) -> dict[str, Any]:
    """A page of credentials (never their values or hashes), in id order."""
    limit, filters = _query(query, ("client_id", "sub", "kind", "active"))
    kind = filters.get("kind")
    if kind is not None and kind not in (Kind.ACCESS_TOKEN, Kind.API_KEY):
        raise Invalid("kind: must be access_token or api_key")
    active = filters.get("active")
    if active is not None and active not in ("true", "false"):
        raise Invalid("active: must be true or false")
    after = query.get("cursor")
    rows = await store.list_credentials(
        authority.pool,
        client_id=filters.get("client_id"),
        sub=filters.get("sub"),
        kind=kind,
        active=None if active is None else active == "true",
        limit=limit + 1,
        after=None if after is None else _decode_cursor(after, (str,))[0],
    )
    return _page(rows, limit, Credential.public, lambda c: [c.id])


async def list_audit(authority: Authority, query: Mapping[str, str]) -> dict[str, Any]:
    """A page of audit entries, newest first."""
    limit, filters = _query(query, ("action", "target_id", "actor"))
    action = filters.get("action")
    if action is not None and action not in ACTIONS:
        raise Invalid(f"action: must be one of {', '.join(sorted(ACTIONS))}")
    before = query.get("cursor")
    rows = await store.list_audit(
        authority.pool,
        action=action,
        target_id=filters.get("target_id"),
        actor=filters.get("actor"),
        limit=limit + 1,
        before=None if before is None else _decode_cursor(before, (int,))[0],
    )
    return _page(rows, limit, dict, lambda e: [e["id"]])
