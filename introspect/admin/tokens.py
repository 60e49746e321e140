"""The listing of credentials (never their values or hashes)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from introspect import store
from introspect.admin import cursors
from introspect.credentials import Kind
from introspect.errors import Invalid
from introspect.service import Authority
from introspect.store import Credential, CredentialFilter


async def list_tokens(authority: Authority, query: Mapping[str, str]) -> dict[str, Any]:
    """A page of credentials (never their values or hashes), in id order."""
    limit, filters = cursors.page_request(query, ("client_id", "sub", "kind", "active"))
    kind = filters.get("kind")
    if kind is not None and kind not in (Kind.ACCESS_TOKEN, Kind.API_KEY):
        raise Invalid("kind: must be access_token or api_key")
    active = filters.get("active")
    if active is not None and active not in ("true", "false"):
        raise Invalid("active: must be true or false")
    after = query.get("cursor")
    matching = CredentialFilter(
        client_id=filters.get("client_id"),
        sub=filters.get("sub"),
        kind=kind,
        active=None if active is None else active == "true",
    )
    rows = await store.list_credentials(
        authority.pool,
        matching,
        limit=limit + 1,
        after=None if after is None else cursors.decode(after, (str,))[0],
    )
    return cursors.page(rows, limit, Credential.public, lambda c: [c.id])
