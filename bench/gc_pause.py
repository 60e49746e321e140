"""`python -m bench.gc_pause`: what a full in-process cache costs CPython's cyclic GC.

No server: the Authority of bench.hot_path (with the modules of a worker's web
stack imported, whose objects a worker holds too), whose in-process cache and memo
of keyed hashes are filled to their configured size (INTROSPECT_LOCAL_CACHE_SIZE,
100,000) with entries made as the server makes them (`rfc7662.entry_for`,
`LocalCache.put`), in the proportions of the `mix` scenario (88 % live
access tokens of 100 clients, 5 % revoked, 2 % expired, 5 % unknown).

It prints the objects the collector tracks (`gc.get_objects()`) before and
after the fill, the bytes the fill keeps per credential (`tracemalloc`: the
presented value, its keyed hash, its entry and answer, and their slots in the
cache and the memo), and the time of `gc.collect(0)`, `(1)` and `(2)` with the
cache full (best and median of `--repeat`). A full collection (generation 2)
walks every tracked object, so its pause grows with them; the server runs
one whenever the objects that survived younger collections reach a quarter
of the old ones (CPython 3.11/3.12), and nothing else runs meanwhile: that
pause is an introspection's latency. The counts are exact, the times vary
with the machine's load (compare runs made side by side).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import tracemalloc
from collections.abc import Sequence
from dataclasses import replace

import introspect.app  # noqa: F401 - a worker's web stack is among what start-up made
from bench.hot_path import prepared
from introspect import credentials, rfc7662
from introspect.cache import Entry
from introspect.credentials import Kind
from introspect.server import freeze_startup
from introspect.service import Authority
from introspect.store import Credential, now

CLIENTS = 100
# Of every 100 entries, as in the mix scenario (bench/scenarios.py).
REVOKED, EXPIRED, UNKNOWN = 5, 2, 5


def tracked() -> int:
    """Objects the cyclic GC tracks now (after a full collection, so only live ones; frozen
    ones apart)."""
    gc.collect()
    return len(gc.get_objects())


def served(authority: Authority, count: int, first: int = 0) -> list[tuple[str, bytes, Entry]]:
    """`count` credentials as serving them would cache them, in the mix's proportions: each
    one's value, keyed hash and entry (`first`: the number of the first, for distinct ids)."""
    secret, issuer = authority.server_secrets[0], authority.issuer
    t = now()
    out = []
    for i in range(first, first + count):
        token = credentials.generate(Kind.ACCESS_TOKEN)
        key = credentials.keyed_hash(secret, token)
        share = i % 100
        owner = f"client_{i % CLIENTS:022d}"
        credential = Credential(f"tok_{i:022d}", "access_token", "opaque", key, owner, owner,
                                None, ("read",), ("https://api",), t, t, t + 3600,
                                t if share < REVOKED else None, None, i + 1, None)  # fmt: skip
        if share < UNKNOWN:
            entry = rfc7662.entry_for(None, issuer)
        elif share < UNKNOWN + EXPIRED:
            entry = rfc7662.entry_for(replace(credential, exp=t - 1), issuer)
        else:
            entry = rfc7662.entry_for(credential, issuer)
        out.append((token, key, entry))
    return out


def fill(authority: Authority, size: int) -> int:
    """Fill the in-process cache and the memo with `size` credentials, as serving them would;
    the bytes this keeps allocated."""
    local, t = authority.local, now()
    tracemalloc.start()
    for token, key, entry in served(authority, size):
        local.put(key, entry, local.epoch, t)
        authority.hashed[token] = key
    kept = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return kept


def timed(generation: int, repeat: int) -> tuple[float, float]:
    """(best, median) milliseconds of `gc.collect(generation)`."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        gc.collect(generation)
        times.append((time.perf_counter() - start) * 1000)
    return min(times), statistics.median(times)


def main(argv: Sequence[str] | None = None) -> None:
    """Print tracked objects before and after the fill, and collection times when full."""
    p = argparse.ArgumentParser(prog="python -m bench.gc_pause", description=__doc__)
    p.add_argument("--size", type=int, help="entries (the configured cache size, 100,000)")
    p.add_argument(
        "--freeze",
        action="store_true",
        help="freeze what start-up made before the fill, as a worker does (server.freeze_startup)",
    )
    p.add_argument("--repeat", type=int, default=7, help="collections timed per generation (7)")
    args = p.parse_args(argv)
    authority, _authorization, _forms = prepared()
    size = authority.local.size if args.size is None else args.size
    authority.local.size = authority.lookups.memo_size = size
    if args.freeze:
        freeze_startup()
    before = tracked()
    kept = fill(authority, size)
    after = tracked()
    print(f"live entries cached: {len(authority.local):,} (the rest final answers, keys only),"
          f" memo: {len(authority.hashed):,}")  # fmt: skip
    per_entry = f" ({(after - before) / size:.2f} per entry)" if size else ""
    print(f"GC-tracked objects: {before:,} before the fill, {after:,} after{per_entry}")
    if size:
        print(f"bytes kept: {kept / 2**20:.1f} MiB, {kept / size:.0f} per credential")
    for generation in (0, 1, 2):
        best, median = timed(generation, args.repeat)
        print(f"gc.collect({generation}): best {best:.2f} ms, median {median:.2f} ms"
              f" (of {args.repeat})")  # fmt: skip


if __name__ == "__main__":
    main()
