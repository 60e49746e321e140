"""The audit log: its actions, the entries admin operations append, the listing newest first."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg

from introspect import store
from introspect.admin import cursors
from introspect.errors import Invalid
from introspect.service import Authority
from introspect.store import AuditEntry, AuditFilter

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


async def list_audit(authority: Authority, query: Mapping[str, str]) -> dict[str, Any]:
    """A page of audit entries, newest first."""
    limit, filters = cursors.page_request(query, ("action", "target_id", "actor"))
    action = filters.get("action")
    if action is not None and action not in ACTIONS:
        raise Invalid(f"action: must be one of {', '.join(sorted(ACTIONS))}")
    before = query.get("cursor")
    matching = AuditFilter(
        action=action, target_id=filters.get("target_id"), actor=filters.get("actor")
    )
    rows = await store.list_audit(
        authority.pool,
        matching,
        limit=limit + 1,
        before=None if before is None else cursors.decode(before, (int,))[0],
    )
    return cursors.page(rows, limit, dict, lambda e: [e["id"]])


async def record(
    conn: asyncpg.Connection, actor: str, action: str, target_id: str, details: dict[str, Any]
) -> None:
    """Append the entry of an admin `action` on `target_id` in `conn`'s transaction.

    The target's kind is the action's first part: `client` for `client.update`.
    """
    target_kind, _, _ = action.partition(".")
    await store.audit(
        conn,
        AuditEntry(
            actor=actor,
            action=action,
            target_kind=target_kind,
            target_id=target_id,
            details=details,
        ),
    )
