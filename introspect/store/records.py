"""The records the store returns (clients, credentials, admin keys, signing keys) and the
records it takes: what its writes store (`NewClient`, `NewCredential`, `NewAdminKey`,
`NewSigningKey`, `AuditEntry`), the usage limits set on API keys and clients (`Limits`),
what its listings filter by (`CredentialFilter`,
`AuditFilter`) and what a revocation names (`Selection`); no I/O.

Every protocol module imports these; none of them touches a database.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


def now() -> int:
    """The current time in integer epoch seconds, as stored."""
    return int(time.time())


@dataclass(frozen=True, slots=True)
class Window:
    """A rate limit: at most `limit` uses per window of `window` seconds."""

    name: str
    limit: int
    window: int


@dataclass(frozen=True, slots=True)
class Refill:
    """Credits set back to `amount` every `interval` seconds."""

    amount: int
    interval: int


@dataclass(frozen=True, slots=True)
class Limits:
    """The usage limits of an API key or of a client (SPEC "Rate limits and credits").

    `owner` names what they count (`api_key:<id>` or `client:<client_id>`). The
    credits' balance is not here: it lives in Postgres (`credit_accounts`),
    `generation` names the balance these settings go with.
    """

    owner: str
    windows: tuple[Window, ...] = ()
    credits: bool = False
    generation: int = 0
    refill: Refill | None = None

    def stored(self) -> dict[str, Any]:
        """The JSON kept in Postgres and Redis (with `owner`: a rotated key's new row keeps
        counting on the old key's windows and balance)."""
        return {
            "owner": self.owner,
            "rate_limits": [[w.name, w.limit, w.window] for w in self.windows],
            "credits": None
            if not self.credits
            else {
                "generation": self.generation,
                "refill": None
                if self.refill is None
                else [self.refill.amount, self.refill.interval],
            },
        }

    @classmethod
    def from_stored(cls, owner: str, value: Any) -> Limits | None:
        """The limits `stored()` wrote, on the row of `owner` (None stays None)."""
        if value is None:
            return None
        credits = value["credits"]
        refill = None if credits is None else credits["refill"]
        return cls(
            owner=value.get("owner", owner),
            windows=tuple(Window(n, limit, w) for n, limit, w in value["rate_limits"]),
            credits=credits is not None,
            generation=0 if credits is None else credits["generation"],
            refill=None if refill is None else Refill(*refill),
        )

    def public(self) -> dict[str, Any]:
        """The settings as the admin API shows them (reads add the current state)."""
        return {
            "rate_limits": [
                {"name": w.name, "limit": w.limit, "window": w.window} for w in self.windows
            ],
            "credits": None
            if not self.credits
            else {
                "refill": None
                if self.refill is None
                else {"amount": self.refill.amount, "interval": self.refill.interval}
            },
        }


NO_LIMITS: dict[str, Any] = {"rate_limits": [], "credits": None}


@dataclass(frozen=True, slots=True)
class Registration:
    """What registering a client sets (RFC 7591 metadata as SPEC has it), shared by the
    client to register and the client as stored."""

    client_id: str
    name: str
    scopes: tuple[str, ...]
    audiences: tuple[str, ...]
    can_introspect: bool
    token_ttl: int
    token_format: str
    jwks: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Client(Registration):
    """A registered client, with the hashes of its live secrets and their expiry."""

    disabled: bool
    created_at: int
    updated_at: int
    # RFC 7591: client_secret_basic (also _post, and jwks if any) or private_key_jwt.
    token_endpoint_auth_method: str = "client_secret_basic"
    secrets: tuple[tuple[bytes, int | None], ...] = field(default=(), repr=False)
    # From `change_version`, taken by every change to the client or to its secrets.
    version: int = 0
    # Client-wide rate limits and credits: every credential of the client counts.
    limits: Limits | None = None

    def public(self) -> dict[str, Any]:
        """Every registered field, never a secret or a hash (the admin API's read shape)."""
        return {
            **(NO_LIMITS if self.limits is None else self.limits.public()),
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
class NewClient(Registration):
    """A client to register, with the keyed hash of its first secret (None for a
    private_key_jwt client, which has none)."""

    token_endpoint_auth_method: str
    secret_hash: bytes | None = field(repr=False)


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
    # An API key's own rate limits and credits.
    limits: Limits | None = None

    def public(self) -> dict[str, Any]:
        """The admin listing shape: every field but the hash."""
        t = now()
        return {
            **(NO_LIMITS if self.limits is None else self.limits.public()),
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
class NewCredential:
    """An access token or API key to store: its keyed hash, never its value (its `nbf` is its
    `iat`; an API key also has a display prefix and an optional name)."""

    id: str
    kind: str
    hash: bytes = field(repr=False)
    client_id: str | None
    sub: str
    scopes: tuple[str, ...]
    audiences: tuple[str, ...]
    iat: int
    exp: int | None
    format: str = "opaque"
    username: str | None = None
    metadata: dict[str, Any] | None = None
    name: str | None = None
    prefix: str | None = None
    limits: Limits | None = None


@dataclass(frozen=True, slots=True)
class CredentialFilter:
    """Which credentials a listing shows: those matching every criterion given."""

    client_id: str | None = None
    sub: str | None = None
    kind: str | None = None
    # Neither revoked nor expired now (True), or revoked or expired (False).
    active: bool | None = None


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


@dataclass(frozen=True, slots=True)
class NewAdminKey:
    """An admin key to store: its keyed hash, never its value."""

    id: str
    name: str
    role: str
    hash: bytes = field(repr=False)
    created_at: int
    expires_at: int | None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One entry of the audit log: who did what to which target (its time is the store's)."""

    actor: str
    action: str
    target_kind: str
    target_id: str
    details: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which audit entries a listing shows: those matching every criterion given."""

    action: str | None = None
    target_id: str | None = None
    actor: str | None = None


@dataclass(frozen=True, slots=True)
class Selection:
    """Which credentials a revocation names: those matching every field given (at least one).

    A selection of every credential of one client, or of one subject, is
    invalidated by one message naming it (dropped in O(1) on every worker);
    any other, key by key (see `dropped`).
    """

    # Stored under any of these keyed hashes (one per server secret) of a presented credential.
    hashes: tuple[bytes, ...] | None = field(default=None, repr=False)
    id: str | None = None
    client_id: str | None = None
    sub: str | None = None

    def dropped(self) -> tuple[list[str], list[str]]:
        """The clients and the subjects all of whose credentials this selection names."""
        narrowed = self.hashes is not None or self.id is not None
        clients = [self.client_id] if self.client_id and not (narrowed or self.sub) else []
        subs = [self.sub] if self.sub and not (narrowed or self.client_id) else []
        return clients, subs


@dataclass(frozen=True, slots=True)
class FeedEvent:
    """An event of the revocation feed as stored: its id, when it was written (epoch seconds),
    its type URI and its payload."""

    id: int
    created_at: float
    type: str
    subject: dict[str, Any]


@dataclass(frozen=True, slots=True)
class FeedPage:
    """What one poll reads for a receiver: the events (oldest first), whether more wait, and
    the number of the gap it is owed and has not acknowledged (it may have missed events),
    if any."""

    events: list[FeedEvent]
    more: bool
    gap: int | None


@dataclass(frozen=True, slots=True)
class StoredSigningKey:
    """A published signing key as stored: its private part sealed (see introspect/signing.py)."""

    kid: str
    seq: int
    alg: str
    public_jwk: str
    private_key: bytes = field(repr=False)
    activates_at: int
    signed_until: int


@dataclass(frozen=True, slots=True)
class NewSigningKey:
    """A signing key to publish: its public JWK (JSON text) and its sealed private part."""

    kid: str
    alg: str
    public_jwk: str
    sealed: bytes = field(repr=False)
