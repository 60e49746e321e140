"""Signing keys (`signing_keys`): published, leased by what they sign, retired when unused.

The life of a key is told in `introspect/signing.py`; these are its statements.
"""

from __future__ import annotations

import asyncpg

from introspect.store.records import NewSigningKey, StoredSigningKey

# A transaction-scoped advisory lock: workers starting at once create one first key.
_LOCK_KEY = 9068_7517  # any constant shared by every instance

_LOAD = """
WITH retired AS (
    UPDATE signing_keys k SET retired_at = $1, private_key = NULL
    WHERE k.retired_at IS NULL AND k.signed_until <= $1
      AND EXISTS (SELECT 1 FROM signing_keys n
                  WHERE n.retired_at IS NULL AND n.activates_at <= $1
                    AND (n.activates_at, n.seq) > (k.activates_at, k.seq))
    RETURNING k.kid
)
SELECT kid, seq, alg, public_jwk, private_key, activates_at, signed_until
FROM signing_keys
WHERE retired_at IS NULL AND kid NOT IN (SELECT kid FROM retired)
ORDER BY activates_at, seq
"""

_LEASE = """
UPDATE signing_keys SET signed_until = GREATEST(signed_until, $2)
WHERE kid = $1 AND retired_at IS NULL
RETURNING signed_until
"""


async def load_signing_keys(pool: asyncpg.Pool, at: int) -> list[StoredSigningKey]:
    """Retire the keys superseded and unused at `at`; every key still published, in order of
    activation."""
    rows = await pool.fetch(_LOAD, at)
    return [
        StoredSigningKey(
            kid=r["kid"],
            seq=r["seq"],
            alg=r["alg"],
            public_jwk=r["public_jwk"],
            private_key=bytes(r["private_key"]),
            activates_at=r["activates_at"],
            signed_until=r["signed_until"],
        )
        for r in rows
    ]


async def lease_signing_key(pool: asyncpg.Pool, kid: str, until: int) -> int | None:
    """Raise the key's `signed_until` to at least `until`; the new value, or None when the key
    is retired (it must not sign)."""
    signed_until: int | None = await pool.fetchval(_LEASE, kid, until)
    return signed_until


async def insert_signing_key(
    conn: asyncpg.Pool | asyncpg.Connection,
    key: NewSigningKey,
    *,
    created_at: int,
    activates_at: int,
) -> None:
    """Publish a new key (its private part sealed), to sign from `activates_at`."""
    await conn.execute(
        "INSERT INTO signing_keys (kid, alg, public_jwk, private_key, created_at, activates_at)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        key.kid,
        key.alg,
        key.public_jwk,
        key.sealed,
        created_at,
        activates_at,
    )


async def insert_first_signing_key(pool: asyncpg.Pool, key: NewSigningKey, at: int) -> bool:
    """Publish this key, active at once, unless a key is active at `at` already (checked
    under the advisory lock); whether it was."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        active = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM signing_keys"
            " WHERE retired_at IS NULL AND activates_at <= $1)",
            at,
        )
        if active:
            return False
        await insert_signing_key(conn, key, created_at=at, activates_at=at)
        return True
