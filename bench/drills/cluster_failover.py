"""Cluster failover drill: SIGKILL the primary holding the hot credentials, under load, again.

`python -m bench.drills cluster_failover` forms a 3+3 dev Valkey Cluster
(introspect/embedded/cluster.py), starts an embedded Postgres, and two
`introspect serve --workers 2` instances sharing both (standing in for two
hosts). A closed-loop load introspects tokens over both instances on
kept-alive connections. Each round picks a token, SIGKILLs the primary that
holds its cache entry, revokes it at once (during the failover) and another
token of that primary 1 s later, waits until the replica is promoted and
every worker of both instances uses the cluster again (`/readyz`), revokes a
third, then starts the killed node again (it rejoins as a replica).

Per round it prints the requests, the stale answers (an answer active for a
token whose revocation had returned when it was sent: must be 0), the 5xx
and I/O errors (must be 0: Postgres answers meanwhile), p99 and max latency,
and the seconds from the kill to a promoted replica and to full recovery, and
the share of introspections answered from Postgres from the kill to recovery
(from /metrics: in-process misses Redis did not answer; only the killed
primary's slots should, about a third of the tokens).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from redis.crc import key_slot

from bench.http import Connection, HttpError, basic_auth, form_request, request_head
from bench.procs import Service, cli, free_port
from introspect import credentials, embedded
from introspect.cache import KEY_PREFIX
from introspect.embedded.cluster import DevCluster, Node

HOST = "127.0.0.1"
INSTANCES = 2
WORKERS = 2
CONNECTIONS = 8
ROUNDS = 3
TOKENS_PER_ROUND = 3
REQUEST_TIMEOUT = 30.0
RECOVERY_TIMEOUT = 60.0
# Past every worker's flush of its counters into /metrics (introspect/metrics.py).
FLUSHED = 1.2


@dataclass(frozen=True, slots=True)
class Answer:
    """One introspection: when sent and answered (monotonic), its token, status, activity."""

    sent: float
    done: float
    token: str
    status: int
    active: bool | None


@dataclass
class Load:
    answers: list[Answer] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    running: bool = True


async def _introspect_loop(port: int, auth: dict[str, str], load: Load, offset: int) -> None:
    """Introspect the load's tokens in turn on one kept-alive connection until it stops."""
    head = request_head("POST", HOST, port, "/introspect", auth)
    conn: Connection | None = None
    index = offset
    while load.running:
        token = load.tokens[index % len(load.tokens)]
        index += 1
        sent = time.monotonic()
        status, active = 0, None
        try:
            if conn is None or conn.closed:
                conn = await Connection.open(HOST, port)
            request = form_request(head, f"token={token}".encode())
            status, body = await asyncio.wait_for(conn.send(request), REQUEST_TIMEOUT)
            if status == 200:
                active = bool(json.loads(body)["active"])
        except (HttpError, OSError, TimeoutError):
            if conn is not None:
                conn.close()
            conn = None
            await asyncio.sleep(0.01)
        load.answers.append(Answer(sent, time.monotonic(), token, status, active))


async def _post(port: int, path: str, auth: dict[str, str], body: bytes) -> tuple[int, bytes]:
    conn = await Connection.open(HOST, port)
    try:
        request = form_request(request_head("POST", HOST, port, path, auth), body)
        return await asyncio.wait_for(conn.send(request), REQUEST_TIMEOUT)
    finally:
        conn.close()


async def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = await Connection.open(HOST, port)
    try:
        return await conn.send(request_head("GET", HOST, port, path, {}) + b"\r\n")
    finally:
        conn.close()


async def _redis_ok(ports: list[int]) -> bool:
    """Every worker of every instance (asked a few times each) uses Redis again."""
    for port in ports * 2 * WORKERS:
        status, body = await _get(port, "/readyz")
        if status != 200 or json.loads(body)["redis"] != "ok":
            return False
    return True


async def _layers(ports: list[int]) -> dict[str, float]:
    """Every instance's cache hits and misses by layer so far (`hits local`...), from /metrics
    (each worker's counters lag by at most a second: introspect/metrics.py)."""
    found: dict[str, float] = {}
    for port in ports:
        _status, body = await _get(port, "/metrics")
        for line in body.decode().splitlines():
            for kind in ("hits", "misses"):
                for layer in ("local", "redis"):
                    if line.startswith(f'introspect_cache_{kind}_total{{layer="{layer}"}} '):
                        name = f"{kind} {layer}"
                        found[name] = found.get(name, 0.0) + float(line.split()[-1])
    return found


def _postgres_share(before: dict[str, float], after: dict[str, float]) -> tuple[float, float]:
    """Introspections between two `_layers` readings, and the share answered from Postgres:
    every one misses the in-process layer or hits it; a miss that Redis does not answer is
    read from Postgres."""
    delta = {name: after.get(name, 0.0) - before.get(name, 0.0) for name in after}
    total = delta.get("hits local", 0.0) + delta.get("misses local", 0.0)
    from_postgres = delta.get("misses local", 0.0) - delta.get("hits redis", 0.0)
    return total, from_postgres / total if total else 0.0


async def _until(check: Callable[[], Awaitable[bool]], what: str) -> float:
    """Wait until `check()` is true; when it became true."""
    deadline = time.monotonic() + RECOVERY_TIMEOUT
    while True:
        if await check():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {RECOVERY_TIMEOUT:.0f} s")
        await asyncio.sleep(0.05)


@dataclass
class Drill:
    cluster: DevCluster
    ports: list[int]
    secret: bytes
    app: dict[str, str]
    rs: dict[str, str]

    async def token(self) -> str:
        status, body = await _post(
            self.ports[0], "/token", self.app, b"grant_type=client_credentials"
        )
        assert status == 200, body
        return str(json.loads(body)["access_token"])

    def node_of(self, token: str) -> Node:
        key = KEY_PREFIX + credentials.keyed_hash(self.secret, token)
        return self.cluster.primary_of_slot(key_slot(key))

    async def revoke(self, port: int, token: str) -> float:
        status, body = await _post(port, "/revoke", self.app, f"token={token}".encode())
        assert status == 200, body
        return time.monotonic()

    async def round(self, load: Load) -> bool:
        hot = await self.token()
        node = await asyncio.to_thread(self.node_of, hot)
        same = [hot]
        while len(same) < TOKENS_PER_ROUND:
            token = await self.token()
            if await asyncio.to_thread(self.node_of, token) is node:
                same.append(token)
        load.tokens.extend(same)
        await asyncio.sleep(1.0)  # the new tokens cached everywhere
        began = len(load.answers)
        revoked: dict[str, float] = {}
        layers = await _layers(self.ports)
        killed = time.monotonic()
        await asyncio.to_thread(self.cluster.kill, node)
        revoked[same[0]] = await self.revoke(self.ports[1], same[0])
        await asyncio.sleep(1.0)
        revoked[same[1]] = await self.revoke(self.ports[0], same[1])
        promoted = await _until(lambda: asyncio.to_thread(self.cluster.healthy), "promotion")
        recovered = await _until(lambda: _redis_ok(self.ports), "recovery")
        await asyncio.sleep(FLUSHED)
        introspections, share = _postgres_share(layers, await _layers(self.ports))
        revoked[same[2]] = await self.revoke(self.ports[1], same[2])
        await asyncio.sleep(1.0)
        answers = load.answers[began:]
        await asyncio.to_thread(self.cluster.start_node, node)
        await _until(lambda: asyncio.to_thread(self.cluster.healthy), "rejoin")
        stale = [
            a for a in answers if a.token in revoked and a.sent > revoked[a.token] and a.active
        ]
        errors = [a for a in answers if a.status != 200]
        took = sorted(a.done - a.sent for a in answers)
        print(
            f"  killed {node.address}: requests {len(answers)}  stale {len(stale)}"
            f"  5xx/errors {len(errors)}  p99 {took[int(0.99 * (len(took) - 1))] * 1000:.1f} ms"
            f"  max {took[-1] * 1000:.1f} ms  promoted after {promoted - killed:.2f} s"
            f"  recovered after {recovered - killed:.2f} s"
            f"  from postgres {share:.0%} of {introspections:.0f} meanwhile",
            flush=True,
        )
        return not stale and not errors


async def _drill(cluster: DevCluster, ports: list[int], env: dict[str, str]) -> bool:
    app = cli(env, "client", "create", "--name", "drill-app", "--scope", "read")
    rs = cli(env, "client", "create", "--name", "drill-rs", "--introspect")
    drill = Drill(
        cluster,
        ports,
        env["INTROSPECT_SECRET"].encode(),
        {"Authorization": basic_auth(app["client_id"], app["client_secret"])},
        {"Authorization": basic_auth(rs["client_id"], rs["client_secret"])},
    )
    load = Load(tokens=[await drill.token() for _ in range(20)])
    tasks = [
        asyncio.create_task(_introspect_loop(ports[i % len(ports)], drill.rs, load, i))
        for i in range(CONNECTIONS)
    ]
    passed = True
    try:
        for _ in range(ROUNDS):
            passed = await drill.round(load) and passed
    finally:
        load.running = False
        await asyncio.gather(*tasks)
    return passed


def run() -> bool:
    """Fail over the hot primary ROUNDS times under load; True when no round served a stale
    answer or an error."""
    parent = Path(tempfile.mkdtemp(prefix="introspect-cluster-drill-"))
    cluster = DevCluster(parent / "cluster")
    services: list[Service] = []
    passed = False
    try:
        cluster.start()
        stores = embedded.start(parent / "stores")
        env = {
            **os.environ,
            "INTROSPECT_DATABASE_URL": stores.database_url,
            "INTROSPECT_REDIS_URL": cluster.url,
            "INTROSPECT_REDIS_CLUSTER": "true",
            "INTROSPECT_SECRET": secrets.token_urlsafe(32),
            "INTROSPECT_DATA_DIR": str(parent / "data"),
        }
        ports = [free_port() for _ in range(INSTANCES)]
        for i, port in enumerate(ports):
            services.append(
                Service(
                    f"introspect-{i}",
                    [sys.executable, "-m", "introspect.cli", "serve", "--workers", str(WORKERS)],
                    {**env, "INTROSPECT_PORT": str(port)},
                    parent / f"serve-{i}.log",
                )
            )
        for service, port in zip(services, ports, strict=True):
            service.wait_ready(port, WORKERS, timeout=180)
        passed = asyncio.run(_drill(cluster, ports, env))
    except Exception as exc:  # a drill reports, whatever broke
        print(f"VERDICT cluster_failover: FAIL {type(exc).__name__}: {exc} (logs: {parent})")
        return False
    finally:
        for service in services:
            service.stop()
        cluster.stop()
        embedded.stop(parent / "stores")
    shutil.rmtree(parent, ignore_errors=True)
    print(f"VERDICT cluster_failover: {'PASS' if passed else 'FAIL'} (rounds above)")
    return passed
