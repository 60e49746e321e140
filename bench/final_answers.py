"""`python -m bench.final_answers`: what presenting credentials again costs, in round trips.

The mix presents revoked, expired and unknown credentials again and again,
minutes apart. This runs one worker's read path (an Authority listening for
invalidations, over embedded Postgres and Valkey under `--data-dir`) with
every cache lifetime set to one second (INTROSPECT_LOCAL_CACHE_TTL and
INTROSPECT_NEGATIVE_CACHE_TTL), so that "minutes apart" takes seconds: it
seeds `--credentials` access tokens as the bench does (bench.seed), presents
`--sample` of each state once, waits past every lifetime, and presents them
again. It prints the Redis calls and Postgres queries per presentation of
the second pass, by state. Counts, not times: the machine's load does not
change them.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import asyncpg

from bench.seed import copy_credentials, register_clients
from introspect import embedded
from introspect.config import Settings
from introspect.metrics import METRICS
from introspect.service import Authority, open_authority
from introspect.store.migrate import migrate

LIFETIME = 1
# Waited for the listener to make the in-process cache usable.
READY_WITHIN = 10.0


async def presented(authority: Authority, tokens: list[str]) -> tuple[float, float]:
    """(Redis calls, Postgres queries) per presentation of `tokens`, one after another."""
    redis, pg = METRICS.redis_calls.value(), METRICS.pg_queries.value()
    for token in tokens:
        await authority.lookups.lookup(token)
    count = max(len(tokens), 1)
    return (
        (METRICS.redis_calls.value() - redis) / count,
        (METRICS.pg_queries.value() - pg) / count,
    )


async def measure(data_dir: Path, credentials: int, sample: int) -> None:
    """Seed, present each state's sample twice, print the second pass's round trips."""
    stores = embedded.start(data_dir)
    conn = await asyncpg.connect(stores.database_url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    settings = Settings(
        database_url=stores.database_url,
        redis_url=stores.redis_url,
        data_dir=data_dir,
        secrets=(secrets.token_hex(16).encode(),),
        local_cache_ttl=LIFETIME,
        negative_cache_ttl=LIFETIME,
    )
    async with open_authority(
        settings, stores.database_url, stores.redis_url, listen=True
    ) as authority:
        seeded = await register_clients(authority, apps=10)
        conn = await asyncpg.connect(stores.database_url)  # no command timeout: a long COPY
        try:
            await copy_credentials(conn, seeded, settings.secrets[0], credentials, bulk=False)
        finally:
            await conn.close()
        deadline = time.monotonic() + READY_WITHIN
        while not authority.local.usable:
            if time.monotonic() > deadline:
                raise SystemExit("the in-process cache never became usable")
            await asyncio.sleep(0.1)
        states = {
            "live": seeded.active[:sample],
            "revoked": seeded.revoked[:sample],
            "expired": seeded.expired[:sample],
            "unknown": seeded.unknown[:sample],
        }
        for tokens in states.values():
            await presented(authority, tokens)
        await asyncio.sleep(LIFETIME * 2.5)
        print(f"presented again after {LIFETIME * 2.5:.1f} s (every cache lifetime {LIFETIME} s):")
        for state, tokens in states.items():
            redis, pg = await presented(authority, tokens)
            print(f"  {state:8} {len(tokens):6,}: {redis:.2f} Redis calls, {pg:.2f} Postgres"
                  " queries per presentation")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the options and measure."""
    p = argparse.ArgumentParser(prog="python -m bench.final_answers", description=__doc__)
    p.add_argument("--credentials", type=int, default=20_000, help="to seed (20,000)")
    p.add_argument("--sample", type=int, default=500, help="presented per state (500)")
    p.add_argument("--data-dir", type=Path, help="embedded stores (a fresh temp dir, removed)")
    args = p.parse_args(argv)
    if args.data_dir is not None:
        asyncio.run(measure(args.data_dir, args.credentials, args.sample))
        return
    with tempfile.TemporaryDirectory(prefix="introspect-final-") as tmp:
        try:
            asyncio.run(measure(Path(tmp), args.credentials, args.sample))
        finally:
            embedded.stop(Path(tmp))


if __name__ == "__main__":
    main()
