"""Admin operations: clients, API keys, admin keys, revocations, listings and the audit log.

The admin HTTP API (`introspect/web/admin.py`) and the CLI call these same
functions with the same JSON-shaped input (a body object, query parameters
as strings), so both validate alike and strictly: a bad or unknown field is
`Invalid` naming it, an unknown id `NotFound`, a change that the target's
state forbids `Conflict`, and in each case nothing is written. Every write
is one transaction, through `Authority.change` or, for revocations (a
client delete's included), the one revocation engine (`introspect/revocation.py`),
with its audit entries in that same transaction and its cache invalidation
announced after the commit.

`actor` is who acts, as the audit log records it: an admin key id, `cli`,
or `client:<id>`.

One module per resource: `clients` (with `client_keys`, a service client's
access keys), `api_keys`, `admin_keys` (with the admin API's authentication),
`revocations`, `tokens` (the credential listing) and `audit`. The input
checks they share are in `validation`, the pagination in `cursors`. This
package re-exports the operations, so callers import `introspect.admin`.
"""

from __future__ import annotations

from introspect.admin.admin_keys import (
    ROLES,
    Refusal,
    authenticate,
    create_admin_key,
    list_admin_keys,
    permits,
    revoke_admin_key,
)
from introspect.admin.api_keys import (
    create_api_key,
    read_api_key,
    rotate_api_key,
    update_api_key,
)
from introspect.admin.audit import ACTIONS, list_audit
from introspect.admin.client_keys import create_access_key, delete_access_key
from introspect.admin.clients import (
    create_client,
    delete_client,
    list_clients,
    read_client,
    rotate_client_secret,
    update_client,
)
from introspect.admin.revocations import SELECTORS, revoke, revoked_answer
from introspect.admin.tokens import list_tokens

__all__ = [
    "ACTIONS",
    "ROLES",
    "SELECTORS",
    "Refusal",
    "authenticate",
    "create_access_key",
    "create_admin_key",
    "create_api_key",
    "create_client",
    "delete_access_key",
    "delete_client",
    "list_admin_keys",
    "list_audit",
    "list_clients",
    "list_tokens",
    "permits",
    "read_api_key",
    "read_client",
    "revoke",
    "revoke_admin_key",
    "revoked_answer",
    "rotate_api_key",
    "rotate_client_secret",
    "update_api_key",
    "update_client",
]
