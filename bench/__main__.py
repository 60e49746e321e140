"""`python -m bench`: how fast is introspect here, and where does the time go."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

from bench.run import ALL_SCENARIOS, Options, run
from bench.scenarios import MIX_POPULATION

QUICK = {
    "credentials": 100_000,
    "duration": 5.0,
    "warmup": 1.0,
    "revocations": 100,
    "fill_seconds": 15.0,
}


def parse(argv: Sequence[str] | None = None) -> Options:
    """Options from the command line (`--quick` changes the defaults, flags still win)."""
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument(
        "--quick",
        action="store_true",
        help="100k credentials, 5 s per scenario, 100 revocations (about 2.5 minutes)",
    )
    p.add_argument(
        "--cluster",
        action="store_true",
        help="instead: single node beside 2 instances on a 3+3 Valkey Cluster"
        " (the other options: python -m bench.cluster --help)",
    )
    p.add_argument("--workers", type=int, default=2, help="server worker processes (2)")
    p.add_argument("--connections", type=int, default=32, help="closed-loop connections (32)")
    p.add_argument("--duration", type=float, help="seconds per scenario (20; quick 5)")
    p.add_argument("--warmup", type=float, help="warmup seconds before each (2; quick 1)")
    p.add_argument("--credentials", type=int, help="credentials to seed (1,000,000; quick 100,000)")
    p.add_argument("--revocations", type=int, help="revocations to time (1000; quick 100)")
    p.add_argument(
        "--rate", type=float, help="run every load scenario open loop at this offered rate (req/s)"
    )
    p.add_argument(
        "--open-rate",
        type=float,
        help="offered rate of local-hit-open and mix-open (default: half the ceiling's"
        " closed-loop throughput)",
    )
    p.add_argument(
        "--scenarios",
        default=",".join(ALL_SCENARIOS),
        help=f"comma-separated subset of: {', '.join(ALL_SCENARIOS)}",
    )
    p.add_argument(
        "--generator",
        choices=("auto", "wrk", "builtin"),
        default="auto",
        help="auto: closed loop with wrk when installed, open loop (--rate) with"
        " bench/openloop.c (compiled on first use); builtin: the asyncio generator for both",
    )
    p.add_argument(
        "--open-reuse",
        choices=("oldest", "newest"),
        default="oldest",
        help="open loop (bench/openloop.c): send each request on the connection idle the"
        " longest, an even share each (oldest, the default), or on the most recently idle, as"
        " one client's pool does (newest: a few connections carry nearly all the load)",
    )
    p.add_argument("--processes", type=int, default=2, help="built-in generator processes (2)")
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (1)")
    p.add_argument("--database-url", help="use this Postgres instead of an embedded one")
    p.add_argument("--redis-url", help="use this Redis instead of an embedded one")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path(".introspect-bench"),
        help="the bench's own embedded stores (.introspect-bench)",
    )
    p.add_argument(
        "--out", type=Path, default=Path("bench/results"), help="where results go (bench/results)"
    )
    p.add_argument(
        "--fill-seconds",
        type=float,
        help="time bound of the memory phase's cache fill (240; quick 15)",
    )
    p.add_argument(
        "--against",
        type=int,
        help="also seed this many credentials into a second pair of embedded stores, and run"
        " cold and mix in rounds alternating with the same scenario on a server over them"
        " (the 10M against 1M comparison: --credentials 10000000 --against 1000000)",
    )
    p.add_argument(
        "--mix-over",
        type=int,
        default=MIX_POPULATION,
        help=f"credentials the mix draws from, chosen at random among those seeded"
        f" ({MIX_POPULATION:,}; 0: all seeded)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="sample one server worker with py-spy during each scenario",
    )
    p.add_argument(
        "--slices",
        action="store_true",
        help="record the CPU and wall time of every event-loop callback and iteration in the"
        " server workers, run on asyncio's own loop (bench/slices.py)",
    )
    args = p.parse_args(argv)
    # The full run's defaults are Options' own; --quick replaces them; flags win over both.
    defaults = {f.name: f.default for f in fields(Options) if f.name in QUICK}
    defaults |= QUICK if args.quick else {}
    chosen = {
        k: getattr(args, k) if getattr(args, k) is not None else v for k, v in defaults.items()
    }
    names = tuple(n.strip() for n in args.scenarios.split(",") if n.strip())
    unknown = set(names) - set(ALL_SCENARIOS)
    if unknown:
        p.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    return Options(
        data_dir=args.data_dir.absolute(),
        out=args.out.absolute(),
        workers=args.workers,
        connections=args.connections,
        rate=args.rate,
        open_rate=args.open_rate,
        generator=args.generator,
        open_reuse=args.open_reuse,
        processes=args.processes,
        wrk_threads=args.wrk_threads,
        scenarios=names,
        database_url=args.database_url,
        redis_url=args.redis_url,
        profile=args.profile,
        against=args.against,
        mix_over=args.mix_over,
        slices=args.slices,
        quick=args.quick,
        **chosen,
    )


def main() -> int:
    """Entry point of `python -m bench` (`--cluster`: `python -m bench.cluster`)."""
    argv = sys.argv[1:]
    if "--cluster" in argv:
        from bench import cluster

        return cluster.main([a for a in argv if a != "--cluster"])
    return run(parse())


if __name__ == "__main__":
    sys.exit(main())
