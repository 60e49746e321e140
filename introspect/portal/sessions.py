"""Portal sessions: one-time links minted by the operator, the cookies they become, CSRF.

The operator's product calls `POST /admin/portal-sessions` (or `introspect
portal-link`) for its signed-in user and sends them to the link. The link
works once, for LINK_TTL seconds; redeeming it makes a session cookie that
lasts at most `Settings.portal_session_ttl` and ends on sign-out or when an
admin revokes the session. Links and cookies are random secrets of which
only keyed hashes are stored, like every credential; each portal request
reads its session from Postgres, so an ended session is refused at once by
every worker. The CSRF token of a session is a keyed hash of its cookie:
nothing to store, and nothing a page of another site can know.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from introspect import credentials, store
from introspect.admin import validation
from introspect.admin.api_keys import check_bound_client
from introspect.cache import Invalidation
from introspect.errors import Invalid, NotFound
from introspect.ids import has_id_shape, new_id
from introspect.service import Authority
from introspect.store import AuditEntry
from introspect.store import portal_sessions as portal_store
from introspect.store.portal_sessions import Session

LINK_TTL = 300
# Links and cookies: 43 base62 characters, about 256 bits from the OS's CSPRNG.
SECRET_LENGTH = 43
MAX_RETURN_URL = 2048
LOOPBACK_NAMES = frozenset({"localhost"})


def _secret_shaped(value: str) -> bool:
    """Whether `value` could be a link or cookie we made: decided with no I/O."""
    return len(value) == SECRET_LENGTH and value.isascii() and value.isalnum()


def _hashes(authority: Authority, secret: str) -> list[bytes]:
    """The keyed hashes of a link or cookie under every server secret (the first is current)."""
    return [credentials.keyed_hash(key, secret) for key in authority.server_secrets]


def return_url(value: object, field: str = "return_url") -> str | None:
    """A link back to the operator's product: an absolute https URL, or http on loopback."""
    if value is None:
        return None
    url = validation.text(value, field, MAX_RETURN_URL)
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError:
        raise Invalid(f"{field}: not a valid URL") from None
    if not host or parts.username is not None or parts.password is not None:
        raise Invalid(f"{field}: must be an absolute URL with a host and no user or password")
    if parts.scheme == "https":
        return url
    if parts.scheme == "http" and _loopback(host):
        return url
    raise Invalid(f"{field}: must be an https URL (http only on a loopback host)")


def _loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def mint_link(authority: Authority, actor: str, body: object) -> dict[str, Any]:
    """A one-time portal link for a consumer: {"id", "url", "expires_at"}; audited.

    `sub` names whose keys the session shows; `client_id` (optional) binds it
    to that client's keys, and the keys it makes to that client; `scopes`
    (required, not empty) bound what keys made in it may hold (within the
    client's, when it names one).
    """
    fields = validation.fields(body, ("sub", "client_id", "scopes", "return_url"))
    sub = validation.text(validation.required(fields, "sub"), "sub")
    client_id = fields.get("client_id")
    client_id = None if client_id is None else validation.text(client_id, "client_id")
    scopes = validation.scopes(validation.required(fields, "scopes"), "scopes")
    if not scopes:
        raise Invalid("scopes: at least one is required")
    back = return_url(fields.get("return_url"))
    link = credentials.random_base62(SECRET_LENGTH)
    session_id = new_id("psn")

    async def apply(conn: asyncpg.Connection) -> tuple[int, Invalidation]:
        if client_id is not None:
            await check_bound_client(conn, client_id, scopes)
        t = store.now()
        await portal_store.insert_link(
            conn,
            session_id=session_id,
            sub=sub,
            client_id=client_id,
            scopes=scopes,
            return_url=back,
            link_hash=credentials.keyed_hash(authority.server_secrets[0], link),
            created_at=t,
            link_expires_at=t + LINK_TTL,
        )
        await store.audit(
            conn,
            AuditEntry(
                actor=actor,
                action="portal.session_create",
                target_kind="portal_session",
                target_id=session_id,
                details={"sub": sub, "client_id": client_id, "scopes": scopes},
            ),
        )
        return t + LINK_TTL, Invalidation()

    expires_at, _ = await authority.change(apply)
    url = f"{authority.issuer}/portal/enter/{link}"
    return {"id": session_id, "url": url, "expires_at": expires_at}


async def revoke_session(authority: Authority, actor: str, session_id: str) -> None:
    """End a portal session (or an unredeemed link) at once; 404 for an unknown id.

    Ending an ended session changes nothing.
    """
    if not has_id_shape(session_id, "psn"):
        raise NotFound("portal session")

    async def apply(conn: asyncpg.Connection) -> tuple[None, Invalidation]:
        if not await portal_store.session_exists(conn, session_id):
            raise NotFound("portal session")
        if await portal_store.end_session(conn, session_id):
            await store.audit(
                conn,
                AuditEntry(
                    actor=actor,
                    action="portal.session_revoke",
                    target_kind="portal_session",
                    target_id=session_id,
                ),
            )
        return None, Invalidation()

    await authority.change(apply)


async def redeem(authority: Authority, link: str, ttl: int) -> tuple[str, Session] | None:
    """A new session cookie and its session for an unused, unexpired link; else None."""
    if not _secret_shaped(link):
        return None
    cookie = credentials.random_base62(SECRET_LENGTH)
    session = await portal_store.redeem_link(
        authority.pool,
        _hashes(authority, link),
        credentials.keyed_hash(authority.server_secrets[0], cookie),
        store.now(),
        ttl,
    )
    return None if session is None else (cookie, session)


async def authenticate(authority: Authority, cookie: str) -> Session | None:
    """The live session of a cookie, or None (unknown, signed out, revoked or expired)."""
    if not _secret_shaped(cookie):
        return None
    session = await portal_store.find_session(authority.pool, _hashes(authority, cookie))
    if session is None or not session.live(store.now()):
        return None
    return session


async def sign_out(authority: Authority, session: Session) -> None:
    """End the session: its cookie no longer works anywhere."""
    await portal_store.end_session(authority.pool, session.id)


def csrf_token(authority: Authority, cookie: str) -> str:
    """The CSRF token of the session whose cookie this is (hex of a keyed hash of it)."""
    return credentials.keyed_hash(authority.server_secrets[0], "portal-csrf\x00" + cookie).hex()


def csrf_valid(authority: Authority, cookie: str, presented: str | None) -> bool:
    """Whether a form carried its session's CSRF token (compared in constant time)."""
    if presented is None:
        return False
    return hmac.compare_digest(csrf_token(authority, cookie).encode(), presented.encode())
