"""Storage: the asyncpg queries behind every operation, and the records they take and return.

Postgres is the truth (SPEC consistency promise 1). Only keyed hashes of
credentials and client secrets are stored and every lookup goes by hash.
Every change to a credential, and every change to a client or its secrets,
takes a fresh `version` from the `change_version` sequence, which is what
lets cache writers order their writes (see `introspect.cache`).

One module per domain: `clients`, `credentials`, `revocations`, `changes`
(the change log), `audit_log`, `admin_keys`, `signing_keys`; each
implements its Protocol (`protocols`), and `POSTGRES` composes them into one
`Store`. The records they return, and the records their writes and listings
take (one frozen record, not a long list of keywords), are in `records`; the
pool in `pool`, the migration runner in `migrate` (the SQL files in
`introspect/sql/`). Every statement the product sends to Postgres is in this
package; every name is re-exported here.
"""

from __future__ import annotations

from introspect.store import (
    admin_keys,
    audit_log,
    changes,
    clients,
    credentials,
    feed,
    revocations,
    signing_keys,
)
from introspect.store.admin_keys import (
    ADMIN_KEY_COLUMNS,
    admin_key_from_record,
    find_admin_key,
    insert_admin_key,
    list_admin_keys,
    lock_admin_key,
    lock_live_admins,
    revoke_admin_key,
    touch_admin_keys,
)
from introspect.store.audit_log import AUDIT_COLUMNS, audit, list_audit
from introspect.store.changes import (
    add_outbox,
    changes_since,
    mark_published,
    pending_outbox,
    prune_changes,
    start_redis_history,
)
from introspect.store.clients import (
    CLIENT_COLUMNS,
    CLIENT_MUTABLE,
    client_from_record,
    delete_client_secrets,
    get_client,
    get_clients,
    insert_client,
    list_clients,
    lock_client,
    new_client_version,
    rotate_client_secret,
    scopes_in_use,
    update_client,
)
from introspect.store.credentials import (
    ACCESS_TOKEN_COLUMNS,
    CREDENTIAL_COLUMNS,
    CREDENTIAL_MUTABLE,
    copy_access_tokens,
    credential_from_record,
    find_credentials,
    get_credential,
    insert_credential,
    list_credentials,
    rehash,
    touch_credentials,
    update_credential,
)
from introspect.store.feed import (
    add_client_event,
    add_feed_event,
    poll_feed,
    prune_feed,
    reset_receivers,
)
from introspect.store.pool import (
    ACQUIRE_TIMEOUT,
    COMMAND_TIMEOUT,
    CONNECT_TIMEOUT,
    RELEASE_TIMEOUT,
    DeadlinePool,
    create_pool,
    ping,
)
from introspect.store.protocols import Store
from introspect.store.records import (
    AdminKey,
    AuditEntry,
    AuditFilter,
    Client,
    Credential,
    CredentialFilter,
    FeedEvent,
    FeedPage,
    NewAdminKey,
    NewClient,
    NewCredential,
    NewSigningKey,
    Selection,
    StoredSigningKey,
    now,
)
from introspect.store.revocations import revoke_recorded
from introspect.store.signing_keys import (
    insert_first_signing_key,
    insert_signing_key,
    lease_signing_key,
    load_signing_keys,
)

# The asyncpg implementation of every domain's Protocol (mypy checks each module against it).
POSTGRES = Store(
    clients=clients,
    credentials=credentials,
    revocations=revocations,
    changes=changes,
    feed=feed,
    audit=audit_log,
    admin_keys=admin_keys,
    signing_keys=signing_keys,
)

__all__ = [
    "ACCESS_TOKEN_COLUMNS",
    "ACQUIRE_TIMEOUT",
    "ADMIN_KEY_COLUMNS",
    "AUDIT_COLUMNS",
    "CLIENT_COLUMNS",
    "CLIENT_MUTABLE",
    "COMMAND_TIMEOUT",
    "CONNECT_TIMEOUT",
    "CREDENTIAL_COLUMNS",
    "CREDENTIAL_MUTABLE",
    "POSTGRES",
    "RELEASE_TIMEOUT",
    "AdminKey",
    "AuditEntry",
    "AuditFilter",
    "Client",
    "Credential",
    "CredentialFilter",
    "DeadlinePool",
    "FeedEvent",
    "FeedPage",
    "NewAdminKey",
    "NewClient",
    "NewCredential",
    "NewSigningKey",
    "Selection",
    "Store",
    "StoredSigningKey",
    "add_client_event",
    "add_feed_event",
    "add_outbox",
    "admin_key_from_record",
    "audit",
    "changes_since",
    "client_from_record",
    "copy_access_tokens",
    "create_pool",
    "credential_from_record",
    "delete_client_secrets",
    "find_admin_key",
    "find_credentials",
    "get_client",
    "get_clients",
    "get_credential",
    "insert_admin_key",
    "insert_client",
    "insert_credential",
    "insert_first_signing_key",
    "insert_signing_key",
    "lease_signing_key",
    "list_admin_keys",
    "list_audit",
    "list_clients",
    "list_credentials",
    "load_signing_keys",
    "lock_admin_key",
    "lock_client",
    "lock_live_admins",
    "mark_published",
    "new_client_version",
    "now",
    "pending_outbox",
    "ping",
    "poll_feed",
    "prune_changes",
    "prune_feed",
    "rehash",
    "reset_receivers",
    "revoke_admin_key",
    "revoke_recorded",
    "rotate_client_secret",
    "scopes_in_use",
    "start_redis_history",
    "touch_admin_keys",
    "touch_credentials",
    "update_client",
    "update_credential",
]
