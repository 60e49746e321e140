"""The audit log: its actions, and its listing newest first."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from introspect import store
from introspect.admin import cursors
from introspect.errors import Invalid
from introspect.service import Authority

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
    }
)


async def list_audit(authority: Authority, query: Mapping[str, str]) -> dict[str, Any]:
    """A page of audit entries, newest first."""
    limit, filters = cursors.page_request(query, ("action", "target_id", "actor"))
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
        before=None if before is None else cursors.decode(before, (int,))[0],
    )
    return cursors.page(rows, limit, dict, lambda e: [e["id"]])
