"""`python -m bench.cluster`: the cluster beside the single node, as % of the same-run ceiling.

Forms a 3+3 dev Valkey Cluster (introspect/embedded/cluster.py) and starts
the bench's embedded Postgres and Valkey (`.introspect-bench-cluster/`), then
measures, in one run:

* the ceiling (bench/ceiling.py: the same server loop answering a fixed body);
* single node: one `introspect serve --workers W` on the embedded Valkey;
* cluster: two instances x W/2 workers (`--cluster-workers`: the same cores and
  as many workers in all) on the cluster, the load split between them;

each under two scenarios, closed loop over the same tokens: `redis-hit`
(in-process cache off: every answer from Redis) and `local-hit` (the
default: answers from the in-process cache); throughput as % of the ceiling.
Then revocation propagation: per revocation, the time from sending /revoke
until every worker of every instance answers inactive (p50, p99), and the
active answers after /revoke returned (must be 0). The failover figures are
the drill's: `python -m bench.drills cluster_failover`.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import os
import secrets
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import loadgen
from bench.http import Connection, basic_auth, form_request, request_head
from bench.procs import Service, cli, free_port
from bench.seed import Registered
from bench.workers import revocations
from introspect import embedded
from introspect.embedded.cluster import DevCluster
from introspect.embedded.processes import HOST

SCENARIOS = {"redis-hit": {"INTROSPECT_LOCAL_CACHE_SIZE": "0"}, "local-hit": {}}


@dataclass(frozen=True)
class Options:
    workers: int
    cluster_workers: int
    connections: int
    duration: float
    tokens: int
    revocations: int
    data_dir: Path


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


def _register(env: dict[str, str], *args: str) -> Registered:
    created = cli(env, *args)
    return Registered(created["client_id"], created["client_secret"])


async def _tokens(port: int, app: Registered, count: int) -> list[str]:
    conn = await Connection.open(HOST, port)
    head = request_head(
        "POST", HOST, port, "/token", {"Authorization": basic_auth(app.client_id, app.secret)}
    )
    tokens = []
    try:
        for _ in range(count):
            status, body = await conn.send(form_request(head, b"grant_type=client_credentials"))
            assert status == 200, body
            tokens.append(json.loads(body)["access_token"])
    finally:
        conn.close()
    return tokens


def throughput(
    ports: Sequence[int], path: str, headers: dict[str, str], bodies: Path, opts: Options
) -> tuple[float, float, int]:
    """Closed-loop load split evenly over `ports` (one generator process each, two for one
    port); answers per second, p99 (ms) and errors."""
    per_port = 2 if len(ports) == 1 else 1
    loads = [
        loadgen.Load(
            HOST, port, path, headers, bodies, opts.connections // len(ports), opts.duration
        )
        for port in ports
    ]
    with concurrent.futures.ThreadPoolExecutor(len(loads)) as pool:
        outcomes = list(pool.map(lambda load: loadgen.run(load, per_port), loads))
    p99 = max(outcome.percentiles.get("p99", 0.0) for outcome in outcomes)
    errors = sum(outcome.error_count for outcome in outcomes)
    return sum(outcome.rate for outcome in outcomes), p99, errors


def measure(
    label: str,
    env: dict[str, str],
    count: int,
    workers_each: int,
    opts: Options,
    logs: Path,
    ceiling: float,
) -> None:
    """Every scenario, then revocation propagation, on `count` instances with `env`."""
    rs: Registered | None = None
    for scenario, extra in SCENARIOS.items():
        log = logs / f"{label}-{scenario}.log"
        with serving({**env, **extra}, count, workers_each, log) as up:
            app = _register(env, "client", "create", "--name", "bench-app", "--scope", "read")
            rs = rs or _register(env, "client", "create", "--name", "bench-rs", "--introspect")
            tokens = asyncio.run(_tokens(up.ports[0], app, opts.tokens))
            bodies = opts.data_dir / f"{label}-{scenario}.txt"
            bodies.write_text("".join(f"token={t}\n" for t in tokens))
            auth = {"Authorization": basic_auth(rs.client_id, rs.secret)}
            throughput(up.ports, "/introspect", auth, bodies, opts)  # warm every cache
            rate, p99, errors = throughput(up.ports, "/introspect", auth, bodies, opts)
            print(
                f"{label:<8} {scenario:<10} {rate:>9,.0f}/s  {100 * rate / ceiling:5.1f} % of"
                f" the ceiling  p99 {p99:6.2f} ms  errors {errors}",
                flush=True,
            )
            if scenario != "local-hit":
                continue
            revoked = asyncio.run(_tokens(up.ports[0], app, opts.revocations))
            workers = up.workers()
            found = asyncio.run(
                revocations(
                    HOST,
                    up.ports[0],
                    workers[0],
                    rs,
                    [app],
                    [(token, 0) for token in revoked],
                    others=list(zip(up.ports[1:], workers[1:], strict=True)),
                )
            )
            ms = found.propagation_ms
            print(
                f"{label:<8} revocation to all {found.workers_probed} workers of {count}"
                f" instance(s): p50 {ms.get('p50', 0):.2f} ms  p99 {ms.get('p99', 0):.2f} ms"
                f"  ({found.revocations} revocations, stale after return"
                f" {found.stale_after_return}, errors {found.errors})",
                flush=True,
            )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__)
    p.add_argument("--quick", action="store_true", help="5 s per scenario, 100 revocations")
    p.add_argument("--workers", type=int, default=2, help="workers of the single node (2)")
    p.add_argument(
        "--cluster-workers", type=int, help="workers of each cluster instance (half of --workers)"
    )
    p.add_argument("--connections", type=int, default=32, help="closed-loop connections (32)")
    args = p.parse_args(argv)
    opts = Options(
        workers=args.workers,
        cluster_workers=args.cluster_workers or max(1, args.workers // 2),
        connections=args.connections,
        duration=5.0 if args.quick else 20.0,
        tokens=1000,
        revocations=100 if args.quick else 1000,
        data_dir=Path(tempfile.mkdtemp(prefix="introspect-bench-cluster-")),
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
            "--port",
            str(ceiling_port),
            "--workers",
            str(opts.workers),
        ],
        dict(os.environ),
        logs / "ceiling.log",
    )
    try:
        cluster.start()
        stores = embedded.start(stores_dir)
        ceiling.wait_ready(ceiling_port, opts.workers)
        body = opts.data_dir / "ceiling.txt"
        body.write_text("token=x\n")
        top, _, _ = throughput([ceiling_port], "/introspect", {}, body, opts)
        print(f"ceiling             {top:>9,.0f}/s", flush=True)
        env = {
            **os.environ,
            "INTROSPECT_DATABASE_URL": stores.database_url,
            "INTROSPECT_SECRET": "bench-" + secrets.token_urlsafe(32),
            "INTROSPECT_DATA_DIR": str(opts.data_dir / "data"),
            "INTROSPECT_HOST": HOST,
        }
        single = {**env, "INTROSPECT_REDIS_URL": stores.redis_url}
        measure("single", single, 1, opts.workers, opts, logs, top)
        clustered = {**env, "INTROSPECT_REDIS_URL": cluster.url, "INTROSPECT_REDIS_CLUSTER": "true"}
        measure("cluster", clustered, 2, opts.cluster_workers, opts, logs, top)
    finally:
        ceiling.stop()
        cluster.stop()
        embedded.stop(stores_dir)
    print(f"logs: {logs}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
