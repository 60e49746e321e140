"""The store's Protocols: one small async Protocol per domain, composed into one `Store`.

Each method takes the executor first: the pool (its own transaction) or a
connection inside the caller's transaction, so several domains' writes
commit together (a client delete: clients, credentials, audit and change
log in one). The asyncpg implementation of each Protocol is the module
named in its docstring; `introspect.store.POSTGRES` composes them, and mypy
checks every module against its Protocol there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias

import asyncpg

from introspect.store import records

# The pool (each statement its own transaction) or a connection in the caller's transaction.
Executor: TypeAlias = asyncpg.Pool | asyncpg.Connection


class Clients(Protocol):
    """Clients and their secrets (asyncpg: `clients.py`)."""

    async def get_client(self, conn: Executor, client_id: str) -> records.Client | None:
        """A client and its live secrets (current, or rotated out and still in grace)."""

    async def get_clients(self, conn: Executor, client_ids: list[str]) -> list[records.Client]:
        """The clients of `client_ids` that exist, each with its live secrets, in one query."""

    async def insert_client(
        self, conn: asyncpg.Connection, new: records.NewClient
    ) -> records.Client:
        """Register a client with its first secret (none for a private_key_jwt client)."""

    async def scopes_in_use(self, conn: Executor) -> list[str]:
        """Every scope an enabled client may request, sorted (RFC 8414 `scopes_supported`)."""

    async def list_clients(
        self, conn: Executor, *, limit: int, after: tuple[int, str] | None
    ) -> list[records.Client]:
        """Clients in creation order, after the (created_at, client_id) of the previous page."""

    async def lock_client(self, conn: asyncpg.Connection, client_id: str) -> records.Client | None:
        """A client's row, locked for the rest of the transaction (its secrets are not read)."""

    async def update_client(
        self, conn: asyncpg.Connection, client_id: str, changes: dict[str, Any]
    ) -> records.Client:
        """Apply `changes` (column: value) to a client, with a new version; returns it without its
        secrets."""

    async def new_client_version(self, conn: asyncpg.Connection, client_id: str) -> int:
        """Give a client a new version (its secrets changed); returns it."""

    async def rotate_client_secret(
        self,
        conn: asyncpg.Connection,
        client_id: str,
        *,
        secret_hash: bytes,
        grace_until: int,
        keep: int,
    ) -> int:
        """Add a new current secret; the current ones live on until `grace_until`. Returns the
        client's new version."""

    async def delete_client_secrets(self, conn: asyncpg.Connection, client_id: str) -> None:
        """Forget every secret of a client (it is being deleted, or now has no secret); the caller's
        transaction gives the client a new version (`update_client`)."""


class Credentials(Protocol):
    """Access tokens and API keys, looked up by keyed hash (asyncpg: `credentials.py`)."""

    async def find_credentials(
        self, conn: Executor, hashes: list[bytes]
    ) -> list[records.Credential]:
        """The credentials stored under any of `hashes`, in one query."""

    async def rehash(self, conn: Executor, credential_id: str, old: bytes, new: bytes) -> None:
        """Move a credential stored under an older server secret to the current one."""

    async def insert_credential(self, conn: Executor, new: records.NewCredential) -> None:
        """Store a new credential (its hash only; an API key's display prefix and name)."""

    async def copy_access_tokens(self, conn: Executor, rows: list[tuple[Any, ...]]) -> None:
        """Store many new access tokens (rows of ACCESS_TOKEN_COLUMNS) with one COPY."""

    async def touch_credentials(self, conn: Executor, used: dict[str, int]) -> None:
        """Record last uses {credential id: epoch seconds} in one statement, never moving back."""

    async def get_credential(
        self, conn: Executor, credential_id: str, *, lock: bool = False
    ) -> records.Credential | None:
        """A credential by id, optionally locked for the rest of the transaction."""

    async def update_credential(
        self, conn: asyncpg.Connection, credential_id: str, changes: dict[str, Any]
    ) -> tuple[str, bytes, int]:
        """Apply `changes` to a credential under a fresh version; returns (id, hash, version)."""

    async def list_credentials(
        self, conn: Executor, matching: records.CredentialFilter, *, limit: int, after: str | None
    ) -> list[records.Credential]:
        """Credentials in id order after `after`, filtered by each criterion of `matching` given."""


class Revocations(Protocol):
    """The one revoking statement, audited and recorded (asyncpg: `revocations.py`)."""

    async def revoke_recorded(
        self,
        conn: Executor,
        actor: str,
        selection: records.Selection,
        *,
        records: Sequence[tuple[str, int]] = (),
    ) -> tuple[int | None, list[tuple[str, bytes, int]]]:
        """Revoke the live credentials `selection` names, audit each and record the invalidation, in
        one statement (one round trip; on a pool, one commit)."""


class ChangeLog(Protocol):
    """The change log: the outbox, kept for replay; Redis histories (asyncpg: `changes.py`)."""

    async def add_outbox(self, conn: asyncpg.Connection, message: bytes) -> int:
        """Record an invalidation in the change's own transaction; returns its id."""

    async def mark_published(self, conn: Executor, ids: list[int]) -> None:
        """Record that these invalidations were published (the rows stay: see prune_changes)."""

    async def pending_outbox(
        self, conn: Executor, older_than: int, limit: int = 100
    ) -> list[tuple[int, bytes]]:
        """Invalidations still unpublished, oldest first."""

    async def changes_since(self, conn: Executor, since: int) -> list[bytes]:
        """Every change recorded at or after `since`, published or not, oldest first."""

    async def prune_changes(self, conn: Executor, before: int) -> int:
        """Forget published changes recorded before `before`; how many."""

    async def start_redis_history(self, conn: Executor, started_at: int) -> bool:
        """Record a Redis history whose replay started at `started_at`; whether one came before."""


class Feed(Protocol):
    """The revocation feed's events and receivers (asyncpg: `feed.py`)."""

    async def add_feed_event(
        self,
        conn: asyncpg.Connection,
        event_type: str,
        subject: dict[str, Any],
        audiences: Sequence[str],
    ) -> None:
        """Record an event seen by callers sharing one of `audiences` (and those without any)."""

    async def add_client_event(
        self, conn: asyncpg.Connection, event_type: str, client_id: str
    ) -> None:
        """Record an event about a client, seen by the callers that may see one of its live
        credentials (by their audiences, as /introspect decides)."""

    async def reset_receivers(self, conn: asyncpg.Connection, client_id: str) -> None:
        """Give every receiver of `client_id` a gap at its position."""

    async def poll_feed(
        self,
        conn: asyncpg.Connection,
        client_id: str,
        receiver: str,
        audiences: Sequence[str],
        *,
        acks: Sequence[int],
        gap_acked: int | None,
        limit: int,
    ) -> records.FeedPage:
        """Apply a receiver's acknowledgements, then read the events it may see and has not
        acknowledged, oldest first, and move its position past everything acknowledged."""

    async def prune_feed(self, conn: Executor, before: float, idle_before: int) -> int:
        """Forget the events written before `before`, and receivers idle since `idle_before`."""


class AuditLog(Protocol):
    """The append-only audit log (asyncpg: `audit_log.py`)."""

    async def audit(self, conn: asyncpg.Connection, entry: records.AuditEntry) -> None:
        """Append one audit entry, at the current time (in the caller's transaction)."""

    async def list_audit(
        self, conn: Executor, matching: records.AuditFilter, *, limit: int, before: int | None
    ) -> list[dict[str, Any]]:
        """Audit entries, newest first, older than the id `before`, filtered by each criterion of
        `matching` given."""


class AdminKeys(Protocol):
    """Keys for the admin API, stored and looked up by keyed hash (asyncpg: `admin_keys.py`)."""

    async def insert_admin_key(
        self, conn: asyncpg.Connection, new: records.NewAdminKey
    ) -> records.AdminKey:
        """Store a new admin key (its hash only)."""

    async def find_admin_key(self, conn: Executor, hashes: list[bytes]) -> records.AdminKey | None:
        """The admin key stored under any of `hashes`, live or not, or None."""

    async def list_admin_keys(
        self, conn: Executor, *, limit: int, after: tuple[int, str] | None
    ) -> list[records.AdminKey]:
        """Admin keys in creation order, after the (created_at, id) of the previous page."""

    async def lock_live_admins(self, conn: asyncpg.Connection, at: int) -> list[str]:
        """The ids of the live `admin`-role keys, locked (in id order) for the transaction."""

    async def lock_admin_key(
        self, conn: asyncpg.Connection, key_id: str
    ) -> records.AdminKey | None:
        """An admin key, locked for the rest of the transaction."""

    async def revoke_admin_key(
        self, conn: asyncpg.Connection, key_id: str, at: int
    ) -> records.AdminKey:
        """Mark an admin key revoked at `at`."""

    async def touch_admin_keys(self, conn: Executor, used: dict[str, int]) -> None:
        """Record last uses {admin key id: epoch seconds} in one statement, never moving back."""


class SigningKeys(Protocol):
    """The published signing keys, their leases and retirement (asyncpg: `signing_keys.py`)."""

    async def load_signing_keys(
        self, pool: asyncpg.Pool, at: int
    ) -> list[records.StoredSigningKey]:
        """Retire the keys superseded and unused at `at`; every key still published, in order of
        activation."""

    async def lease_signing_key(self, pool: asyncpg.Pool, kid: str, until: int) -> int | None:
        """Raise the key's `signed_until` to at least `until`; the new value, or None when the key
        is retired (it must not sign)."""

    async def insert_signing_key(
        self, conn: Executor, key: records.NewSigningKey, *, created_at: int, activates_at: int
    ) -> None:
        """Publish a new key (its private part sealed), to sign from `activates_at`."""

    async def insert_first_signing_key(
        self, pool: asyncpg.Pool, key: records.NewSigningKey, at: int
    ) -> bool:
        """Publish this key, active at once, unless a key is active at `at` already (checked under
        the advisory lock); whether it was."""


@dataclass(frozen=True, slots=True)
class Store:
    """Every domain's storage, composed."""

    clients: Clients
    credentials: Credentials
    revocations: Revocations
    changes: ChangeLog
    feed: Feed
    audit: AuditLog
    admin_keys: AdminKeys
    signing_keys: SigningKeys
