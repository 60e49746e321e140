"""`python -m bench.churn`: what a worker's bounded memories cost once they are full.

No server: the Authority of bench.hot_path. A worker keeps three bounded
memories, each evicting its oldest insertion to make room: the in-process
cache's live entries and its final answers (`LocalCache`), and the memo of
keyed hashes (`CredentialLookup`). Once a worker has seen more credentials
than they hold (a day of traffic over millions of credentials, or a flood of
unknown values), every new credential costs an eviction from each.

It times, in microseconds per credential, putting `--count` new credentials
(made as serving them would, in the mix's proportions: bench.gc_pause) into
the memories twice: once empty and large enough to hold them all (no
eviction), then full to their configured size (each put evicts), best of
`--repeat`. The ratio full / empty is the figure: an eviction should cost
next to nothing, so about 1. Both are measured in the same run, side by side.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from bench.gc_pause import fill, served
from bench.hot_path import prepared
from introspect.cache import Entry
from introspect.service import Authority
from introspect.store import now


def timed_puts(authority: Authority, made: list[tuple[str, bytes, Entry]]) -> float:
    """Microseconds per credential to put `made` in the cache and the memo, as a read through
    the stores does (`LocalCache.put`, `CredentialLookup.remember`)."""
    local, lookups, t = authority.local, authority.lookups, now()
    start = time.perf_counter()
    for token, key, entry in made:
        local.put(key, entry, local.epoch, t)
        lookups.remember(token, key)
    return (time.perf_counter() - start) / len(made) * 1e6


def main(argv: Sequence[str] | None = None) -> None:
    """Print microseconds per put into empty and into full memories, and their ratio."""
    p = argparse.ArgumentParser(prog="python -m bench.churn", description=__doc__)
    p.add_argument("--size", type=int, help="entries (the configured cache size, 100,000)")
    p.add_argument("--count", type=int, default=200_000, help="new credentials put (200,000)")
    p.add_argument("--repeat", type=int, default=3, help="times each is measured (3)")
    args = p.parse_args(argv)
    empty_times, full_times = [], []
    size = None
    for _ in range(args.repeat):
        authority, _authorization, _forms = prepared()
        size = authority.local.size if args.size is None else args.size
        made = served(authority, args.count, first=size)
        authority.local.size = authority.lookups.memo_size = args.count
        empty_times.append(timed_puts(authority, made))
        authority, _authorization, _forms = prepared()
        authority.local.size = authority.lookups.memo_size = size
        fill(authority, size)
        full_times.append(timed_puts(authority, made))
    empty, full = min(empty_times), min(full_times)
    print(f"{args.count:,} new credentials put into the in-process cache and the memo,"
          f" best of {args.repeat}:")  # fmt: skip
    print(f"  empty, room for all: {empty:.2f} us each")
    print(f"  full at {size:,}, each put evicts: {full:.2f} us each ({full / empty:.1f}x)")


if __name__ == "__main__":
    main()
