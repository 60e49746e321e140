"""Revocation by one selector, and how its answer reads."""

from __future__ import annotations

from typing import Any

from introspect.admin import validation
from introspect.errors import Invalid
from introspect.revocation import Revoked
from introspect.service import Authority
from introspect.store import Selection

MAX_TOKEN = 8192
SELECTORS = ("token", "id", "jti", "client_id", "sub")


def revoked_answer(revoked: Revoked) -> dict[str, Any]:
    """{"revoked": N, "listeners": M}, and "invalidation": "pending" when Redis was down."""
    out: dict[str, Any] = {"revoked": revoked.count, "listeners": revoked.announced.listeners}
    if revoked.announced.pending:
        out["invalidation"] = "pending"
    return out


async def revoke(authority: Authority, actor: str, body: object) -> Revoked:
    """Revoke by exactly one of token, id, jti, client_id (all it holds) or sub."""
    fields = validation.fields(body, SELECTORS)
    if len(fields) != 1:
        raise Invalid(f"send exactly one of {', '.join(SELECTORS)}")
    ((selector, raw),) = fields.items()
    value = validation.text(
        raw, selector, MAX_TOKEN if selector == "token" else validation.MAX_TEXT
    )
    if selector == "token":
        return await authority.revoke_presented(value, actor=actor, owner=None)
    if selector == "client_id":
        return await authority.revoke(actor, Selection(client_id=value))
    if selector == "sub":
        return await authority.revoke(actor, Selection(sub=value))
    return await authority.revoke(actor, Selection(id=value))
