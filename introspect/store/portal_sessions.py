"""The portal's queries: its sessions (table `portal_sessions`, migration 0009) and the
consumer's view of their API keys. Links and cookies are found by keyed hash only."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from introspect.store.credentials import CREDENTIAL_COLUMNS, credential_from_record
from introspect.store.records import Credential, now

SESSION_COLUMNS = "id, sub, client_id, scopes, return_url, expires_at, ended_at"
# The most keys a consumer's list shows (newest first): a page, not a bulk export.
MAX_LISTED = 200


@dataclass(frozen=True, slots=True)
class Session:
    """A redeemed portal session: whose keys it shows, what keys made in it may hold."""

    id: str
    sub: str
    client_id: str | None
    scopes: tuple[str, ...]
    return_url: str | None
    expires_at: int
    ended_at: int | None

    def live(self, at: int) -> bool:
        """Neither signed out nor past its lifetime at epoch second `at`."""
        return self.ended_at is None and self.expires_at > at

    @property
    def actor(self) -> str:
        """Who acts, as the audit log records it."""
        return f"portal:{self.sub}"


def _session(record: asyncpg.Record) -> Session:
    return Session(
        id=record["id"],
        sub=record["sub"],
        client_id=record["client_id"],
        scopes=tuple(record["scopes"]),
        return_url=record["return_url"],
        expires_at=record["expires_at"],
        ended_at=record["ended_at"],
    )


async def insert_link(
    conn: asyncpg.Connection,
    *,
    session_id: str,
    sub: str,
    client_id: str | None,
    scopes: list[str],
    return_url: str | None,
    link_hash: bytes,
    created_at: int,
    link_expires_at: int,
) -> None:
    """Store a new one-time link (its hash only), not yet redeemed."""
    await conn.execute(
        "INSERT INTO portal_sessions (id, sub, client_id, scopes, return_url, created_at,"
        " link_hash, link_expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        session_id,
        sub,
        client_id,
        scopes,
        return_url,
        created_at,
        link_hash,
        link_expires_at,
    )


async def redeem_link(
    conn: asyncpg.Pool | asyncpg.Connection,
    link_hashes: list[bytes],
    cookie_hash: bytes,
    at: int,
    ttl: int,
) -> Session | None:
    """Turn an unused, unexpired link into a session with this cookie, in one statement.

    A second redemption of the same link (even a concurrent one) finds it used: None.
    """
    record = await conn.fetchrow(
        "UPDATE portal_sessions SET redeemed_at = $3, cookie_hash = $2, expires_at = $3 + $4"
        " WHERE link_hash = ANY($1::bytea[]) AND redeemed_at IS NULL AND link_expires_at > $3"
        f" RETURNING {SESSION_COLUMNS}",
        link_hashes,
        cookie_hash,
        at,
        ttl,
    )
    return None if record is None else _session(record)


async def find_session(
    conn: asyncpg.Pool | asyncpg.Connection, cookie_hashes: list[bytes]
) -> Session | None:
    """The session whose cookie hashes to one of `cookie_hashes`, live or not."""
    record = await conn.fetchrow(
        f"SELECT {SESSION_COLUMNS} FROM portal_sessions WHERE cookie_hash = ANY($1::bytea[])",
        cookie_hashes,
    )
    return None if record is None else _session(record)


async def end_session(conn: asyncpg.Pool | asyncpg.Connection, session_id: str) -> bool:
    """End a session (sign-out, or an admin's revocation); whether it was live until now.

    A link not yet redeemed dies with it: it can no longer be redeemed either.
    """
    t = now()
    done: str = await conn.execute(
        "UPDATE portal_sessions SET ended_at = $2, link_expires_at = least(link_expires_at, $2)"
        " WHERE id = $1 AND ended_at IS NULL",
        session_id,
        t,
    )
    return done != "UPDATE 0"


async def session_exists(conn: asyncpg.Pool | asyncpg.Connection, session_id: str) -> bool:
    """Whether a session (or link) of this id was ever made."""
    found: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT FROM portal_sessions WHERE id = $1)", session_id
    )
    return found


# The keys a session shows: its subject's, and its client's when it names one.
_OWNED = "kind = 'api_key' AND sub = $1 AND ($2::text IS NULL OR client_id = $2)"


async def list_keys(
    conn: asyncpg.Pool | asyncpg.Connection, sub: str, client_id: str | None
) -> list[Credential]:
    """The API keys a session shows, newest first (at most MAX_LISTED)."""
    records = await conn.fetch(
        f"SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE {_OWNED}"
        " ORDER BY iat DESC, id DESC LIMIT $3",
        sub,
        client_id,
        MAX_LISTED,
    )
    return [credential_from_record(r) for r in records]


async def owned_key(
    conn: asyncpg.Pool | asyncpg.Connection, sub: str, client_id: str | None, key_id: str
) -> Credential | None:
    """The API key `key_id` if the session shows it, else None (unknown or someone else's)."""
    record = await conn.fetchrow(
        f"SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE {_OWNED} AND id = $3",
        sub,
        client_id,
        key_id,
    )
    return None if record is None else credential_from_record(record)
