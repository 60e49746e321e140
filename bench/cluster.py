"""`python -m bench.cluster`: the cluster beside the single node, as % of the same-run ceiling.

Forms a 3+3 dev Valkey Cluster (introspect/embedded/cluster.py) and starts
the bench's embedded Postgres and Valkey (`.introspect-bench-cluster/`),
seeds credentials as `python -m bench` does (bench/seed.py), then measures,
in one run:

* the ceiling (bench/ceiling.py: the same server loop answering a fixed body),
  again just before each scenario;
* single node: one `introspect serve --workers W` on the embedded Valkey;
* cluster: two instances x W/2 workers (`--cluster-workers`: the same cores and
  as many workers in all) on the cluster, the load split between them;

each under `python -m bench`'s scenarios (bench/scenarios.py), closed loop,
the same bodies for both: `redis-hit` (in-process cache off: every answer
from Redis), `local-hit` (answers from the in-process cache) and `mix` (the
realistic mix, steady state: each credential of its sequence presented once
before, over the instances); throughput as % of the ceiling, and by CPU
(`cpu %`: the ceiling's server CPU per request as a % of the scenario's,
Postgres and Valkey included, which the neighbours of a shared machine
disturb less), and the Valkey processes' cores. Then revocation, each side
revoking credentials of its own, every worker of every instance holding each
in its in-process cache first: its propagation, from the commit until the last
worker acknowledged dropping it (the server's own histogram,
`introspect_invalidation_seconds`, scraped around the run: bucket bounds),
which is what the target judges; the /revoke call end to end (the fsync'd
commit included); and, as before, from sending /revoke until the last probe
answered inactive (the probes ask once /revoke returned, so this adds a probe
round trip), with the active answers after /revoke returned (must be 0).
`--profile` samples the first worker of each side with py-spy (bench/profile.py).
The targets close the report. The failover figures are the drill's:
`python -m bench.drills cluster_failover`.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import os
import random
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

from bench import loadgen, scenarios, seed
from bench.http import basic_auth
from bench.loadgen import Outcome
from bench.procs import Service, free_port, pids_listening
from bench.profile import Profiler
from bench.report import Target
from bench.run import SCRAPE_SETTLE, Cpu, cpu_us
from bench.scenarios import CONFIGS, Scenario
from bench.scrape import Delta, scrape
from bench.workers import Propagation, revocations
from introspect import embedded
from introspect.config import load_settings
from introspect.embedded.cluster import DevCluster
from introspect.embedded.processes import HOST
from introspect.server import apply_migrations
from introspect.service import open_authority

LOADS = ("redis-hit", "local-hit", "mix")
ALL = (*LOADS, "revocation")
# The targets (issue 15): each load on the cluster within this many points of the ceiling of
# the single node's, and revocation to every worker of 2 instances within this p99.
POINTS = 10.0
REVOCATION_P99_MS = 5.0
# The server's histogram of a change's propagation: from its publication, right after the
# commit, until every listener acknowledged it (introspect/cache/announce.py).
PROPAGATION = "introspect_invalidation_seconds"


@dataclass(frozen=True)
class Options:
    workers: int
    cluster_workers: int
    connections: int
    duration: float
    warmup: float
    credentials: int
    revocations: int
    scenarios: tuple[str, ...]
    data_dir: Path
    profile: bool = False


@dataclass(frozen=True)
class Measured:
    """One load on one side: throughput, CPU per request, and the ceiling next to it."""

    outcome: Outcome
    ceiling_rate: float
    cpu_us: float | None
    ceiling_cpu_us: float | None
    valkey_cores: float | None

    @property
    def ceiling_pct(self) -> float:
        return 100 * self.outcome.rate / self.ceiling_rate if self.ceiling_rate else 0.0

    @property
    def cpu_pct(self) -> float | None:
        if not self.cpu_us or not self.ceiling_cpu_us:
            return None
        return 100 * self.ceiling_cpu_us / self.cpu_us


@dataclass(frozen=True)
class Revocation:
    """Revocation as the client and probes saw it, and as the server timed its propagation."""

    found: Propagation
    acked_ms: dict[str, float]  # quantiles of PROPAGATION, each its bucket's upper bound
    observed: int  # changes the histogram counted


@dataclass
class Instances:
    """Running `introspect serve` instances: their ports and worker pids."""

    services: list[Service]
    ports: list[int]

    def workers(self) -> list[list[int]]:
        return [service.workers() for service in self.services]


@contextlib.contextmanager
def serving(env: dict[str, str], count: int, workers: int, logs: Path) -> Iterator[Instances]:
    """`count` instances of `introspect serve --workers W` with `env`, stopped at the end."""
    ports = [free_port() for _ in range(count)]
    services: list[Service] = []
    try:
        for i, port in enumerate(ports):
            command = [sys.executable, "-m", "introspect.cli", "serve", "--workers", str(workers)]
            services.append(
                Service(f"introspect-{i}", command, {**env, "INTROSPECT_PORT": str(port)}, logs)
            )
        for service, port in zip(services, ports, strict=True):
            service.wait_ready(port, workers, timeout=180)
        yield Instances(services, ports)
    finally:
        for service in services:
            service.stop()


def merged(outcomes: Sequence[Outcome]) -> Outcome:
    """Loads run side by side as one: answers and errors summed, the worst percentiles."""
    errors: dict[str, int] = {}
    for outcome in outcomes:
        for kind, count in outcome.errors.items():
            errors[kind] = errors.get(kind, 0) + count
    return Outcome(
        ok=sum(o.ok for o in outcomes),
        errors=errors,
        duration=max(o.duration for o in outcomes),
        percentiles={
            k: max(o.percentiles.get(k, 0.0) for o in outcomes) for k in outcomes[0].percentiles
        },
        generator_cpu=sum(o.generator_cpu for o in outcomes),
        tool=outcomes[0].tool,
    )


def drive(
    ports: Sequence[int],
    scenario: Scenario,
    bodies: Path,
    duration: float,
    connections: int,
    *,
    wrap: bool = True,
) -> Outcome:
    """Closed-loop load split evenly over `ports` (one generator process each, two for one
    port). Without `wrap` (a prefill), each body is sent once, to one of the ports."""
    headers = {"Authorization": basic_auth(scenario.client.client_id, scenario.client.secret)}
    per_port = 2 if len(ports) == 1 else 1
    files = [bodies] if len(ports) == 1 or wrap else _split(bodies, len(ports))
    loads = [
        loadgen.Load(
            HOST,
            port,
            scenario.path,
            headers,
            files[min(i, len(files) - 1)],
            connections // len(ports),
            duration,
            wrap=wrap,
        )
        for i, port in enumerate(ports)
    ]
    with concurrent.futures.ThreadPoolExecutor(len(loads)) as pool:
        return merged(list(pool.map(lambda load: loadgen.run(load, per_port), loads)))


def _split(bodies: Path, parts: int) -> list[Path]:
    """`bodies` dealt line by line into `parts` files."""
    lines = bodies.read_text().splitlines(keepends=True)
    out = []
    for i in range(parts):
        path = bodies.with_name(f"{bodies.stem}-{i}-of-{parts}{bodies.suffix}")
        path.write_text("".join(lines[i::parts]))
        out.append(path)
    return out


@dataclass
class Run:
    """What one run started and seeded, and where its ceiling is."""

    opts: Options
    logs: Path
    ceiling: Service
    ceiling_port: int
    built: dict[str, Scenario]
    seeded: seed.Seeded
    cut: scenarios.Slices
    postgres: list[int]

    def ceiling_now(self) -> tuple[float, float | None]:
        """The ceiling's throughput and CPU per request, measured now (a shorter run)."""
        cpu = Cpu(self.ceiling.workers(), [])
        duration = max(2.0, round(self.opts.duration / 4))
        ceiling = self.built["ceiling"]
        outcome = drive(
            [self.ceiling_port], ceiling, ceiling.bodies, duration, self.opts.connections
        )
        return outcome.rate, cpu_us(cpu.cores(outcome.generator_cpu), outcome)

    def load(self, up: Instances, scenario: Scenario, valkey: list[int], label: str) -> Measured:
        """Prefill, warm up and drive `scenario` on `up`, beside a fresh ceiling."""
        opts = self.opts
        if scenario.prefill is not None:
            drive(up.ports, scenario, scenario.prefill, 120.0, opts.connections, wrap=False)
        ceiling_rate, ceiling_cpu = self.ceiling_now()
        drive(up.ports, scenario, scenario.warmup, opts.warmup, opts.connections)
        workers = [pid for pids in up.workers() for pid in pids]
        cpu, valkey_cpu = Cpu(workers, [*self.postgres, *valkey]), Cpu([], valkey)
        profiler = Profiler(self.logs) if opts.profile else None
        name = f"{label}-{scenario.name}"
        recording = profiler.start(name, workers[0], opts.duration) if profiler else None
        outcome = drive(up.ports, scenario, scenario.bodies, opts.duration, opts.connections)
        if profiler is not None and recording is not None:
            print(f"{label:<8} {scenario.name:<10} {profiler.finish(recording)}", flush=True)
        return Measured(
            outcome,
            ceiling_rate,
            cpu_us(cpu.cores(outcome.generator_cpu), outcome),
            ceiling_cpu,
            valkey_cpu.cores(0.0)["stores"],
        )

    def revocation(self, up: Instances, share: int) -> Revocation:
        """Revoke the `share`-th slice of `opts.revocations` credentials (each side its own:
        a credential revoked already changes nothing), as seen by the client and probes, and
        by the server that took the /revoke calls (its propagation histogram)."""
        workers = up.workers()
        count = self.opts.revocations
        before = asyncio.run(scrape(HOST, up.ports[0]))
        found = asyncio.run(
            revocations(
                HOST,
                up.ports[0],
                workers[0],
                self.seeded.resource_server,
                self.seeded.apps,
                self.cut.revocation[share * count : (share + 1) * count],
                others=list(zip(up.ports[1:], workers[1:], strict=True)),
            )
        )
        time.sleep(SCRAPE_SETTLE)  # the workers flush their counters once a second
        delta = Delta(before, asyncio.run(scrape(HOST, up.ports[0])))
        acked = {f"p{q:g}": delta.quantile(PROPAGATION, q / 100) or 0.0 for q in (50.0, 90.0, 99.0)}
        return Revocation(found, acked, int(delta.total(PROPAGATION + "_count")))

    def side(
        self,
        label: str,
        env: dict[str, str],
        count: int,
        workers_each: int,
        valkey: list[int],
        share: int,
    ) -> tuple[dict[str, Measured], Revocation | None]:
        """Every wanted scenario on `count` instances with `env`, by configuration."""
        measured: dict[str, Measured] = {}
        found = None
        wanted = [n for n in self.opts.scenarios if n in LOADS]
        for config in dict.fromkeys(self.built[n].config for n in LOADS):
            names = [n for n in wanted if self.built[n].config == config]
            revoking = config == scenarios.DEFAULT and "revocation" in self.opts.scenarios
            if not names and not revoking:
                continue
            log = self.logs / f"{label}-{config}.log"
            with serving({**env, **CONFIGS[config]}, count, workers_each, log) as up:
                for name in names:
                    m = measured[name] = self.load(up, self.built[name], valkey, label)
                    print(_load_line(label, name, m), flush=True)
                if revoking:
                    found = self.revocation(up, share)
                    print(_revocation_lines(label, count, found), flush=True)
        return measured, found


def _load_line(label: str, name: str, m: Measured) -> str:
    o = m.outcome
    cpu = "-" if m.cpu_pct is None else f"{m.cpu_pct:3.0f} %"
    us = "-" if m.cpu_us is None else f"{m.cpu_us:4.0f}"
    valkey = "-" if m.valkey_cores is None else f"{m.valkey_cores:.2f}"
    return (
        f"{label:<8} {name:<10} {o.rate:>9,.0f}/s  {m.ceiling_pct:5.1f} % of the ceiling"
        f" ({m.ceiling_rate:,.0f}/s)  cpu {cpu}  us/req {us} (ceiling {m.ceiling_cpu_us or 0:.0f})"
        f"  valkey {valkey} cores  p99 {o.percentiles.get('p99', 0):6.2f} ms"
        f"  errors {o.error_count}"
    )


def _revocation_lines(label: str, count: int, revoked: Revocation) -> str:
    found = revoked.found
    revoke, probed, acked = found.revoke_ms, found.propagation_ms, revoked.acked_ms
    return (
        f"{label:<8} propagation, commit to the last of {found.workers_probed} workers of"
        f" {count} instance(s) acknowledging ({revoked.observed} changes, bucket bounds):"
        f" p50 <= {acked['p50']:.1f} ms  p90 <= {acked['p90']:.1f} ms"
        f"  p99 <= {acked['p99']:.1f} ms\n"
        f"{label:<8} /revoke call, end to end (fsync'd commit included):"
        f" p50 {revoke.get('p50', 0):.2f} ms  p99 {revoke.get('p99', 0):.2f} ms\n"
        f"{label:<8} from sending /revoke to the last probe's inactive answer (a probe round"
        f" trip after the return): p50 {probed.get('p50', 0):.2f} ms"
        f"  p99 {probed.get('p99', 0):.2f} ms  ({found.revocations} revocations, stale after"
        f" return {found.stale_after_return}, not cached before {found.not_warm},"
        f" errors {found.errors})"
    )


def targets(
    single: dict[str, Measured], cluster: dict[str, Measured], revoked: Revocation | None
) -> list[Target]:
    """Each load on the cluster against the single node, and revocation against its p99."""
    out = []
    for name in LOADS:
        one, many = single.get(name), cluster.get(name)
        figure = f"{name}, cluster vs single node, points of the ceiling"
        target = f">= -{POINTS:g}"
        if one is None or many is None:
            out.append(Target(figure, "-", target, None))
            continue
        points = many.ceiling_pct - one.ceiling_pct
        measured = f"{many.ceiling_pct:.1f} % vs {one.ceiling_pct:.1f} %: {points:+.1f}"
        if many.cpu_pct is not None and one.cpu_pct is not None:
            measured += f" (cpu {many.cpu_pct:.0f} % vs {one.cpu_pct:.0f} %)"
        errors = many.outcome.error_count + one.outcome.error_count
        out.append(Target(figure, measured, target, points >= -POINTS and not errors))
    figure = "revocation to every worker of 2 instances (commit to last ack), p99"
    target = f"< {REVOCATION_P99_MS:g} ms"
    if revoked is None or not revoked.found.revocations or not revoked.observed:
        out.append(Target(figure, "-", target, None))
        return out
    found, p99 = revoked.found, revoked.acked_ms["p99"]
    clean = not (found.stale_after_return or found.errors or found.not_warm)
    out.append(Target(figure, f"<= {p99:.1f} ms", target, p99 <= REVOCATION_P99_MS and clean))
    call = found.revoke_ms.get("p99", 0.0)
    out.append(Target("  the /revoke call, end to end, p99", f"{call:.2f} ms", "-", None))
    return out


async def _seed(env: dict[str, str], count: int) -> seed.Seeded:
    """Clients through the service, `count` credentials by COPY (the bench's own database:
    emptied first, indexes built once)."""
    settings = load_settings(env)
    db, rd = env["INTROSPECT_DATABASE_URL"], env["INTROSPECT_REDIS_URL"]
    await apply_migrations(db)
    conn = await asyncpg.connect(db)
    try:
        await seed.reset(conn)
        async with open_authority(settings, db, rd, listen=False) as authority:
            seeded = await seed.register_clients(authority)
        await seed.copy_credentials(conn, seeded, settings.secrets[0], count, bulk=True)
        await conn.execute("VACUUM (ANALYZE) credentials")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()
    return seeded


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__)
    p.add_argument("--quick", action="store_true", help="5 s per scenario, 100 revocations")
    p.add_argument("--workers", type=int, default=2, help="workers of the single node (2)")
    p.add_argument(
        "--cluster-workers", type=int, help="workers of each cluster instance (half of --workers)"
    )
    p.add_argument("--connections", type=int, default=32, help="closed-loop connections (32)")
    p.add_argument("--credentials", type=int, default=100_000, help="credentials seeded (100,000)")
    p.add_argument(
        "--scenarios", default=",".join(ALL), help=f"comma-separated subset of: {', '.join(ALL)}"
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="sample the first worker of each side with py-spy during each scenario",
    )
    args = p.parse_args(argv)
    names = tuple(n.strip() for n in args.scenarios.split(",") if n.strip())
    if set(names) - set(ALL):
        p.error(f"unknown scenario(s): {', '.join(sorted(set(names) - set(ALL)))}")
    duration = 5.0 if args.quick else 20.0
    opts = Options(
        workers=args.workers,
        cluster_workers=args.cluster_workers or max(1, args.workers // 2),
        connections=args.connections,
        duration=duration,
        warmup=1.0 if args.quick else 2.0,
        credentials=args.credentials,
        revocations=100 if args.quick else 1000,
        scenarios=names,
        data_dir=Path(tempfile.mkdtemp(prefix="introspect-bench-cluster-")),
        profile=args.profile,
    )
    logs = opts.data_dir
    stores_dir = Path(".introspect-bench-cluster").absolute()
    cluster = DevCluster(opts.data_dir / "cluster")
    ceiling_port = free_port()
    ceiling = Service(
        "ceiling",
        [
            sys.executable,
            "-m",
            "bench.ceiling",
            *("--port", str(ceiling_port), "--workers", str(opts.workers)),
        ],
        dict(os.environ),
        logs / "ceiling.log",
    )
    try:
        cluster.start()
        stores = embedded.start(stores_dir)
        ceiling.wait_ready(ceiling_port, opts.workers)
        env = {
            **os.environ,
            "INTROSPECT_DATABASE_URL": stores.database_url,
            "INTROSPECT_REDIS_URL": stores.redis_url,
            "INTROSPECT_SECRET": "bench-" + secrets.token_urlsafe(32),
            "INTROSPECT_DATA_DIR": str(opts.data_dir / "data"),
            "INTROSPECT_HOST": HOST,
        }
        seeded = asyncio.run(_seed(env, opts.credentials))
        cut = scenarios.slices(seeded, 2 * opts.revocations, 0)  # one slice per side
        sequence = max(100_000, int(duration * 20_000))
        workdir = opts.data_dir / "bodies"
        workdir.mkdir()
        built = scenarios.build(seeded, cut, workdir, sequence, random.Random(11))
        postgres = pids_listening(urlsplit(stores.database_url).port or 5432)
        run = Run(opts, logs, ceiling, ceiling_port, built, seeded, cut, postgres)
        rate, cpu = run.ceiling_now()
        print(f"ceiling             {rate:>9,.0f}/s  us/req {cpu or 0:.0f}", flush=True)
        valkey = pids_listening(urlsplit(stores.redis_url).port or 6379)
        single = run.side("single", env, 1, opts.workers, valkey, 0)
        clustered = {**env, "INTROSPECT_REDIS_URL": cluster.url, "INTROSPECT_REDIS_CLUSTER": "true"}
        nodes = [node.process.pid for node in cluster.nodes if node.process is not None]
        many = run.side("cluster", clustered, 2, opts.cluster_workers, nodes, 1)
    finally:
        ceiling.stop()
        cluster.stop()
        embedded.stop(stores_dir)
    print("\ntargets (issue 15):")
    for t in targets(single[0], many[0], many[1]):
        verdict = {True: "PASS", False: "FAIL", None: "n/a" if t.target != "-" else ""}[t.passed]
        print(f"  {t.figure:<58} {t.measured:<44} {t.target:<10} {verdict}")
    print(f"logs: {logs}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
