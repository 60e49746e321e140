"""Revocation: the one engine behind every revoking operation.

RFC 7009's `/revoke` (`introspect/rfc7009.py` decides what a presented token
names), the admin API's and the CLI's revocations and a client delete all
revoke through `record`: one statement (`store.revoke_recorded`) revokes the
live credentials a `Selection` names, appends an audit entry for each and
records the invalidation in the outbox and the revocation feed's events, so no
revocation commits without its invalidation and its events. After the commit,
`announce` publishes it: the one place where cache invalidations are
published (`CredentialCache.announce`), so that when the call returns no
worker answers the old state (SPEC promise 2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from introspect import store
from introspect.cache import Announced, CredentialCache, Invalidation
from introspect.metrics import METRICS
from introspect.store import Selection


@dataclass(frozen=True, slots=True)
class Revoked:
    """The outcome of a revocation: how many credentials, and how it was announced."""

    count: int
    announced: Announced


# A revocation that matched nothing changed nothing: it has nothing to announce either.
NOTHING_REVOKED = Revoked(count=0, announced=Announced(listeners=0, pending=False))


@dataclass(frozen=True, slots=True)
class Recorded:
    """A revocation written (committed, or with the caller's transaction), not yet announced.

    `outbox_id` is None when nothing was written: then there is nothing to announce.
    """

    outbox_id: int | None
    rows: list[tuple[str, bytes, int]]
    invalidation: Invalidation


def invalidation(
    selection: Selection, rows: list[tuple[str, bytes, int]], records: Sequence[tuple[str, int]]
) -> Invalidation:
    """The invalidation `store.revoke_recorded` recorded for these (id, hash, version) rows."""
    clients, subs = selection.dropped()
    return Invalidation(
        tombstones=[(key, version) for _id, key, version in rows],
        keys=[] if clients or subs else [key for _id, key, _version in rows],
        records=list(records),
        clients=clients,
        subs=subs,
        revoked=True,
    )


async def record(
    db: asyncpg.Pool | asyncpg.Connection,
    actor: str,
    selection: Selection,
    records: Sequence[tuple[str, int]] = (),
) -> Recorded:
    """Revoke what `selection` names, audited and recorded, in one statement.

    On a pool it commits at once; on a connection it joins the caller's
    transaction (a client delete: `records` names the client record that
    transaction changed, tombstoned by the same invalidation).
    """
    outbox_id, rows = await store.revoke_recorded(db, actor, selection, records=records)
    clients, subs = selection.dropped()
    METRICS.events_published.inc((1 if rows else 0) if clients or subs else len(rows))
    return Recorded(outbox_id, rows, invalidation(selection, rows, records))


async def announce(cache: CredentialCache, recorded: Recorded) -> Revoked:
    """Publish a committed revocation's invalidation; how many it revoked, and to whom."""
    if recorded.outbox_id is None:
        return NOTHING_REVOKED
    announced = await cache.announce(recorded.invalidation, recorded.outbox_id)
    return Revoked(count=len(recorded.rows), announced=announced)
