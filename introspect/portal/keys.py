"""What a consumer may do to their own API keys, through the same operations as the admin API.

Creating, rolling and changing a key call `introspect.admin` (the one
issuance, rotation and update code, audited with actor `portal:<sub>`);
revoking goes through `Authority.revoke`, the one revocation path,
whose single statement also checks the key is the session's: dead at once
on every worker of every instance, like every revocation. A key id the
session does not show is `NotFound`, exactly like an id that exists nowhere.
"""

from __future__ import annotations

from typing import Any

from introspect import admin, store
from introspect.admin import limits
from introspect.errors import Conflict, NotFound
from introspect.ids import has_id_shape
from introspect.portal import forms
from introspect.service import Authority
from introspect.store import Credential, Selection
from introspect.store import portal_sessions as portal_store
from introspect.store.portal_sessions import Session


async def listed(authority: Authority, session: Session) -> list[Credential]:
    """The session's keys, newest first."""
    return await portal_store.list_keys(authority.pool, session.sub, session.client_id)


async def owned(authority: Authority, session: Session, key_id: str) -> Credential:
    """One of the session's keys; any other id is `NotFound`."""
    if not has_id_shape(key_id, "key"):
        raise NotFound("API key")
    key = await portal_store.owned_key(authority.pool, session.sub, session.client_id, key_id)
    if key is None:
        raise NotFound("API key")
    return key


async def create(authority: Authority, session: Session, form: forms.Form) -> dict[str, Any]:
    """A new key for the session's subject (and client): its record and `key`, shown once."""
    body = forms.create_body(form, session.scopes, store.now())
    owner: dict[str, Any] = {"sub": session.sub}
    if session.client_id is not None:
        owner["client_id"] = session.client_id
    return await admin.create_api_key(authority, session.actor, {**owner, **body})


async def update(
    authority: Authority, session: Session, key_id: str, form: forms.Form
) -> dict[str, Any]:
    """Rename a key of the session, or change its expiry."""
    await owned(authority, session, key_id)
    body = forms.update_body(form, store.now())
    return await admin.update_api_key(authority, session.actor, key_id, body)


async def roll(
    authority: Authority, session: Session, key_id: str, form: forms.Form
) -> dict[str, Any]:
    """A new key like one of the session's; the old one works for the grace period chosen
    (never past its own expiry). Answers the new key and `replaced` {id, exp}."""
    await owned(authority, session, key_id)
    grace = forms.grace_field(form)
    return await admin.rotate_api_key(authority, session.actor, key_id, {"grace_period": grace})


async def revoke(authority: Authority, session: Session, key_id: str) -> None:
    """Revoke one of the session's keys, at once everywhere; a dead one is `Conflict`."""
    await owned(authority, session, key_id)
    # `owned` found an API key of the session; the statement checks its owner again.
    revoked = await authority.revoke(
        session.actor, Selection(id=key_id, sub=session.sub, client_id=session.client_id)
    )
    if revoked.count == 0:
        raise Conflict("the key is already revoked or expired")


def status(key: Credential, at: int) -> str:
    """`active`, `expired` or `revoked`, as the list shows it."""
    if key.revoked_at is not None:
        return "revoked"
    if key.exp is not None and key.exp <= at:
        return "expired"
    return "active"


async def usage(authority: Authority, listed: list[Credential], at: int) -> dict[str, list[str]]:
    """For each live key with limits of its own: its remaining credits and its use in each
    rate limit's current window, as lines the list shows."""
    shown: dict[str, list[str]] = {}
    for key in listed:
        if key.limits is None or status(key, at) != "active":
            continue
        state = await limits.state(authority, key.limits)
        lines = []
        if state["credits"] is not None:
            lines.append(f"{state['credits']['remaining']} credits left")
        for window in state["rate_limits"]:
            if window["remaining"] is not None:
                used = window["limit"] - window["remaining"]
                lines.append(f"{used} of {window['limit']} uses in {window['window']} s")
        shown[key.id] = lines
    return shown
