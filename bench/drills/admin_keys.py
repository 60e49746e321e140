"""Drill admin_keys: an admin key revoked while every worker is busy with it, then floods of
forged admin keys.

`introspect serve --workers 4 --admin-port P` runs on embedded stores under a
temporary data dir (loopback only); two admin keys are minted with the CLI.

1. Revocation under load: four kept-alive connections pinned to each worker
   send `GET /admin/clients?limit=1` with the victim key back to back; after
   REVOKE_AFTER seconds the other key revokes it (`DELETE
   /admin/admin-keys/{id}`) and the storm goes on for AFTER seconds. Any 200
   to a request sent after the DELETE returned breaks the promise (must be 0);
   every worker must refuse the key.
2. Forged keys: FLOOD requests with malformed keys (checksum wrong) and FLOOD
   with checksum-valid unknown ones, at CONCURRENCY connections: throughput,
   latency and Postgres queries per request (malformed must cost none).

Then /metrics (summed over the workers) must count exactly the refusals
sent, by reason, and the server's log must hold no 8-character fragment of
any presented key. The fault's short tests live in
`tests/integration/test_admin_keys.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench import procs
from bench.http import Connection, request_head
from bench.loadgen import percentiles_ms
from bench.workers import pinned_connections
from introspect import credentials
from introspect.credentials import Kind

NAME = "admin_keys"
HOST = "127.0.0.1"
WORKERS = 4
PER_WORKER = 4
REVOKE_AFTER = 3.0
AFTER = 3.0
FLOOD = 5_000
CONCURRENCY = 64
SAMPLED = 500  # forged keys whose every 8-character fragment is looked for in the log
LIST = "/admin/clients?limit=1"


@dataclass
class Server:
    """The served drill: its ports, workers, log and environment."""

    port: int
    admin_port: int
    workers: list[int]
    log: Path
    env: dict[str, str]


@contextlib.contextmanager
def served() -> Iterator[Server]:
    """`introspect serve` with an admin port on embedded stores in a temporary data dir."""
    data_dir = Path(tempfile.mkdtemp(prefix="drill-admin-keys-"))
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("INTROSPECT_DATABASE_URL", "INTROSPECT_REDIS_URL", "INTROSPECT_SECRET")
    }
    env.update(INTROSPECT_DATA_DIR=str(data_dir), INTROSPECT_HOST=HOST)
    port, admin_port = procs.free_port(), procs.free_port()
    command = [sys.executable, "-m", "introspect.cli", "serve", "--port", str(port)]
    command += ["--admin-port", str(admin_port), "--workers", str(WORKERS)]
    log = data_dir / "serve.log"
    service = procs.Service(NAME, command, env, log)
    try:
        service.wait_ready(port, WORKERS)
        service.wait_ready(admin_port, WORKERS)
        yield Server(port, admin_port, service.workers(), log, env)
    finally:
        service.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def mint(server: Server, name: str) -> dict[str, str]:
    """`introspect admin-key create --name NAME --json`: {id, key}."""
    return procs.cli(server.env, "admin-key", "create", "--name", name)


def get_request(server: Server, key: str) -> bytes:
    """A GET of the client list on the admin port, presenting `key`."""
    head = request_head("GET", HOST, server.admin_port, LIST, {"Authorization": f"Bearer {key}"})
    return head + b"\r\n"


@dataclass
class Storm:
    """What the revocation storm saw: (sent, status) per worker, and the DELETE's timing."""

    answers: dict[int, list[tuple[float, int]]] = field(default_factory=dict)
    delete_sent: float = 0.0
    delete_returned: float = 0.0
    delete_status: int = 0


async def revocation_storm(server: Server, ops: dict[str, str], victim: dict[str, str]) -> Storm:
    """Keep every worker busy with the victim key; revoke it midway; record every answer."""
    pinned = await pinned_connections(HOST, server.admin_port, server.workers, PER_WORKER)
    storm = Storm(answers={pid: [] for pid in pinned})
    ask = get_request(server, victim["key"])
    stop = asyncio.Event()

    async def hammer(pid: int, conn: Connection) -> None:
        while not stop.is_set():
            sent = time.perf_counter()
            status, _body = await conn.send(ask)
            storm.answers[pid].append((sent, status))

    tasks = [
        asyncio.create_task(hammer(pid, conn)) for pid, conns in pinned.items() for conn in conns
    ]
    try:
        await asyncio.sleep(REVOKE_AFTER)
        url = f"http://{HOST}:{server.admin_port}/admin/admin-keys/{victim['id']}"
        async with aiohttp.ClientSession() as http:
            storm.delete_sent = time.perf_counter()
            async with http.delete(url, headers={"Authorization": f"Bearer {ops['key']}"}) as resp:
                storm.delete_status = resp.status
            storm.delete_returned = time.perf_counter()
        await asyncio.sleep(AFTER)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for conns in pinned.values():
            for conn in conns:
                conn.close()
    return storm


def forged(kind: str) -> str:
    """A fresh admin-key-shaped value: `malformed` (checksum wrong) or `unknown` (valid)."""
    key = credentials.generate(Kind.ADMIN_KEY)
    if kind == "malformed":
        key = key[:-1] + ("A" if key[-1] != "A" else "B")
    return key


async def flood(server: Server, keys: list[str]) -> tuple[float, list[int], int]:
    """GET with each key once over CONCURRENCY connections: seconds, latencies (us), refusals."""
    todo = iter(keys)
    latencies: list[int] = []
    refused = 0

    async def client() -> None:
        nonlocal refused
        conn = await Connection.open(HOST, server.admin_port)
        try:
            for key in todo:
                started = time.perf_counter()
                status, _body = await conn.send(get_request(server, key))
                latencies.append(int((time.perf_counter() - started) * 1e6))
                refused += status == 401
        finally:
            conn.close()

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
    return time.perf_counter() - began, latencies, refused


def refusals(reason: str) -> str:
    """The sample counting admin requests refused for `reason`."""
    return f'introspect_admin_auth_failures_total{{reason="{reason}"}}'


def sample(text: str, name: str) -> float:
    """The value of one sample of the Prometheus exposition (0 when absent)."""
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def metrics(server: Server) -> str:
    """The /metrics text, summed over the workers."""
    _status, body = await procs.get(HOST, server.port, "/metrics")
    return body.decode()


async def settled_metrics(server: Server, expected: dict[str, int]) -> str:
    """/metrics once the refusal counters reach `expected` (workers flush every second)."""
    deadline = time.monotonic() + 10
    while True:
        text = await metrics(server)
        if all(sample(text, refusals(r)) >= n for r, n in expected.items()):
            return text
        if time.monotonic() > deadline:
            return text
        await asyncio.sleep(0.2)


def fragments(value: str) -> set[str]:
    """Every 8-character fragment of a presented value."""
    return {value[i : i + 8] for i in range(len(value) - 7)}


async def drill(server: Server) -> bool:
    """Run both phases against the served drill; print figures and the verdict."""
    ops, victim = mint(server, "drill-ops"), mint(server, "drill-victim")
    storm = await revocation_storm(server, ops, victim)
    returned = storm.delete_returned
    before = sum(1 for a in storm.answers.values() for s, st in a if st == 200)
    admitted_after = sum(
        1 for a in storm.answers.values() for sent, st in a if sent > returned and st == 200
    )
    revoked_refusals = sum(1 for a in storm.answers.values() for _s, st in a if st == 401)
    odd = sum(1 for a in storm.answers.values() for _s, st in a if st not in (200, 401))
    first_refusal_ms = {}
    for pid, answers in storm.answers.items():
        refused_at = [sent for sent, st in answers if st == 401]
        if refused_at:
            first_refusal_ms[pid] = (min(refused_at) - storm.delete_sent) * 1000
    print(
        f"revocation storm: {WORKERS} workers x {PER_WORKER} connections;"
        f" {before:,} admitted before ({before / REVOKE_AFTER:,.0f}/s);"
        f" DELETE {storm.delete_status} in {(returned - storm.delete_sent) * 1000:.1f} ms;"
        f" admitted after it returned: {admitted_after}; refused: {revoked_refusals:,};"
        f" other answers: {odd}"
    )
    print(
        "first refusal per worker after DELETE was sent (ms): "
        + ", ".join(f"{pid}: {ms:.1f}" for pid, ms in sorted(first_refusal_ms.items()))
    )

    expected = {"revoked": revoked_refusals, "malformed": 0, "unknown": 0}
    queries_per_request = {}
    sampled: list[str] = []
    text = await settled_metrics(server, expected)
    for kind in ("malformed", "unknown"):
        keys = [forged(kind) for _ in range(FLOOD)]
        sampled += keys[:SAMPLED]
        queries_before = sample(text, "introspect_pg_queries_total")
        seconds, latencies, refused = await flood(server, keys)
        expected[kind] = refused
        text = await settled_metrics(server, expected)
        queries = sample(text, "introspect_pg_queries_total") - queries_before
        queries_per_request[kind] = queries / FLOOD
        pct = percentiles_ms(latencies)
        print(
            f"{kind} keys: {FLOOD:,} at concurrency {CONCURRENCY} in {seconds:.1f} s"
            f" ({FLOOD / seconds:,.0f}/s), p50 {pct['p50']:.2f} ms, p99 {pct['p99']:.2f} ms,"
            f" {refused:,} refused 401, Postgres queries per request {queries / FLOOD:.3f}"
        )
    counted = {r: int(sample(text, refusals(r))) for r in expected}
    print(f"refusals counted in /metrics: {counted}; sent: {expected}")

    log = server.log.read_text(errors="replace")
    logged = log.count("admin request refused")
    leaked = {"iadm_"} if "iadm_" in log else set()
    for value in (ops["key"], victim["key"], *sampled):
        leaked |= {f for f in fragments(value) if f in log}
    print(f"server log: {logged:,} refusal lines, {len(log):,} bytes, key fragments: {len(leaked)}")

    ok = (
        storm.delete_status == 204
        and before > 0
        and admitted_after == 0
        and odd == 0
        and len(first_refusal_ms) == WORKERS
        and counted == expected
        and expected["malformed"] == FLOOD
        and expected["unknown"] == FLOOD
        # Background work (signing keys, outbox) may add a query or two; a lookup per
        # malformed key would add one per request.
        and queries_per_request["malformed"] < 0.01
        and not leaked
    )
    verdict = "PASS" if ok else "FAIL"
    print(
        f"VERDICT {NAME}: {verdict} revoked key admitted {admitted_after} times after DELETE"
        f" returned, refused by {len(first_refusal_ms)}/{WORKERS} workers; refusals counted"
        f" exactly: {counted == expected}; Postgres queries per malformed key"
        f" {queries_per_request['malformed']:.3f}; key fragments in the log: {len(leaked)}"
    )
    return ok


def run() -> bool:
    """The drill, bounded in time (a few minutes at most on two busy cores)."""
    with served() as server:
        return asyncio.run(drill(server))
