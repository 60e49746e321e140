"""Revocation: the one statement that revokes credentials, audits them and records the change.

Every revoking operation (RFC 7009, the admin API and CLI, a client delete)
goes through `revoke_recorded`; `introspect.revocation` announces what it
recorded.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import orjson

from introspect import rfc8417
from introspect.store.credentials import LIVE
from introspect.store.query import where_clause
from introspect.store.records import Selection, now

# The parameters before the selection's own (see revoke_recorded).
_FIXED = 10


def _conditions(selection: Selection) -> list[tuple[str, object]]:
    """The selection's conditions, each with `{}` for its one parameter."""
    conditions: list[tuple[str, object]] = []
    if selection.hashes is not None:
        conditions.append(("hash = ANY({}::bytea[])", list(selection.hashes)))
    for column in ("id", "client_id", "sub"):
        value = getattr(selection, column)
        if value is not None:
            conditions.append((f"{column} = {{}}", value))
    if not conditions:
        raise ValueError("a revocation must name the credentials it revokes")
    return conditions


async def revoke_recorded(
    conn: asyncpg.Pool | asyncpg.Connection,
    actor: str,
    selection: Selection,
    *,
    records: Sequence[tuple[str, int]] = (),
) -> tuple[int | None, list[tuple[str, bytes, int]]]:
    """Revoke the live credentials `selection` names, audit each and record the invalidation,
    in one statement (one round trip; on a pool, one commit).

    Only credentials neither revoked nor expired before are touched and
    counted. The outbox row is the `Invalidation.dumps` form of the change,
    built here by Postgres: the tombstones of the revoked credentials (and
    their keys to evict, unless the selection names every credential of its
    clients or subjects: see `Selection.dropped`), and the tombstones of the
    client `records` (id, version) changed in the caller's transaction.
    The revocation feed's events go in too (`feed_event`): one naming the
    client or the subject for a selection of all its credentials, else one
    per credential revoked, each seen by the callers sharing an audience with
    what it revoked.
    Returns the outbox id and the (id, hash, version) rows; when nothing
    matched and no record is named, nothing is written and the id is None.
    """
    clients, subs = selection.dropped()
    where, values = where_clause(_conditions(selection), first=_FIXED + 1)
    rows = await conn.fetch(
        "WITH r AS ("
        "  UPDATE credentials SET revoked_at = $1, version = nextval('change_version')"
        f"  {where} AND {LIVE.format('$1')}"
        "  RETURNING id, kind, hash, version, audiences),"
        " a AS (INSERT INTO audit_log (at, actor, action, target_kind, target_id)"
        "  SELECT $1, $2, 'credential.revoke',"
        "   CASE WHEN kind = 'api_key' THEN 'api_key' ELSE 'access_token' END, id"
        "  FROM r ORDER BY id),"
        " o AS (INSERT INTO invalidation_outbox (message, created_at)"
        "  SELECT convert_to(json_build_object("
        "   't', coalesce((SELECT json_agg(json_build_array(encode(hash, 'hex'), version))"
        "    FROM r), '[]'::json),"
        "   'k', CASE WHEN $3 THEN coalesce((SELECT json_agg(encode(hash, 'hex'))"
        "    FROM r), '[]'::json) ELSE '[]'::json END,"
        "   'r', $6::text::json, 'rv', $7::text::json,"
        "   'c', $4::text::json, 's', $5::text::json,"
        "   'all', false, 'x', true)::text, 'UTF8'), $1"
        "  WHERE EXISTS (SELECT FROM r) OR json_array_length($6::text::json) > 0"
        "  RETURNING id),"
        " f AS (INSERT INTO feed_events (type, subject, audiences)"
        "  SELECT $8::text, $9::text::jsonb, coalesce((SELECT array_agg(DISTINCT a)"
        "   FROM r, unnest(r.audiences) a), '{}')"
        "  WHERE $8::text IS NOT NULL AND EXISTS (SELECT FROM r)"
        "  UNION ALL"
        "  SELECT * FROM (SELECT $10::text, jsonb_build_object('jti', id), audiences FROM r"
        "   WHERE $8::text IS NULL ORDER BY id) per_credential)"
        " SELECT o.id AS outbox_id, r.id, r.hash, r.version FROM o LEFT JOIN r ON true",
        now(),
        actor,
        not (clients or subs),
        orjson.dumps(clients).decode(),
        orjson.dumps(subs).decode(),
        orjson.dumps([client_id for client_id, _version in records]).decode(),
        orjson.dumps([version for _client_id, version in records]).decode(),
        *_feed_event(clients, subs),
        *values,
    )
    revoked = [(r["id"], bytes(r["hash"]), r["version"]) for r in rows if r["id"] is not None]
    return (rows[0]["outbox_id"] if rows else None), revoked


def _feed_event(clients: list[str], subs: list[str]) -> tuple[str | None, str | None, str]:
    """The statement's parameters for the feed: the type and subject of one event naming
    the client or the subject (None, None: one event per credential), and the type of those."""
    if clients:
        return (
            rfc8417.CLIENT_CREDENTIALS_REVOKED,
            orjson.dumps({"client_id": clients[0]}).decode(),
            rfc8417.CREDENTIAL_REVOKED,
        )
    if subs:
        return (
            rfc8417.SUBJECT_CREDENTIALS_REVOKED,
            orjson.dumps({"sub": subs[0]}).decode(),
            rfc8417.CREDENTIAL_REVOKED,
        )
    return None, None, rfc8417.CREDENTIAL_REVOKED
