"""`python -m bench.resource_server`: the resource-server SDK's example aiohttp app
(sdk/examples/aiohttp_app.py) under load, in front of `introspect serve`.

1. Throughput: closed-loop `POST /items` (scope `write`) with one bearer token,
   by the built-in generator (bench/loadgen.py), against the app with its SDK
   cache on and warm (`cached`: answers from the app's memory while it follows
   the revocation feed), then with it off (`uncached`: every request
   introspects). Requests/s and latency of each, the ratio, and the SDK's own
   hit and miss counters (from the app's /healthz) as proof of which it was.
2. Revocation-to-401 at the app, REPETITIONS times: a fresh token, cached at
   the app, hammered by CONCURRENCY loops; then `/revoke`. Measured from the
   moment /revoke returned to the first 401 the app answered (0 when one came
   before), and any 200 to a request sent after that first 401 (must be 0).
   Target: p99 < 250 ms.

Everything runs on loopback on embedded stores in a temporary data dir; the
machine is shared, so the figures hold for the run that printed them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench import loadgen, procs
from bench.http import basic_auth
from bench.loadgen import Load

HOST = "127.0.0.1"
EXAMPLE = Path(__file__).resolve().parents[1] / "sdk" / "examples" / "aiohttp_app.py"
REPETITIONS = 50
CONCURRENCY = 8
TARGET_P99_MS = 250.0
BOUND = 5.0  # seconds a revocation may take at the app before the run calls it a failure


@dataclass(frozen=True)
class Stack:
    """introspect serving, and the clients the bench uses."""

    url: str
    env: dict[str, str]
    rs: dict[str, str]  # the resource server's client (may introspect)
    svc: dict[str, str]  # the service client presenting tokens (read write)
    data_dir: Path


@contextlib.contextmanager
def served(workers: int) -> Iterator[Stack]:
    """`introspect serve` on embedded stores, its issuer its own URL, and two clients."""
    data_dir = Path(tempfile.mkdtemp(prefix="bench-rs-"))
    port = procs.free_port()
    url = f"http://{HOST}:{port}"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("INTROSPECT_DATABASE_URL", "INTROSPECT_REDIS_URL", "INTROSPECT_SECRET")
    }
    env.update(INTROSPECT_DATA_DIR=str(data_dir), INTROSPECT_HOST=HOST, INTROSPECT_ISSUER=url)
    command = [sys.executable, "-m", "introspect.cli", "serve", "--port", str(port)]
    service = procs.Service(
        "introspect", [*command, "--workers", str(workers)], env, data_dir / "serve.log"
    )
    try:
        service.wait_ready(port, workers)
        rs = procs.cli(env, "client", "create", "--name", "bench-rs", "--introspect")
        svc = procs.cli(env, "client", "create", "--name", "bench-svc", "--scope", "read write")
        yield Stack(url, env, rs, svc, data_dir)
    finally:
        service.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@contextlib.contextmanager
def example_app(stack: Stack, *, cached: bool) -> Iterator[int]:
    """The example app, its SDK cache on or off, until it answers; yield its port."""
    port = procs.free_port()
    env = {
        **stack.env,
        "INTROSPECT_ISSUER": stack.url,
        "INTROSPECT_CLIENT_ID": stack.rs["client_id"],
        "INTROSPECT_CLIENT_SECRET": stack.rs["client_secret"],
        "EXAMPLE_PORT": str(port),
        **({} if cached else {"EXAMPLE_NO_CACHE": "1"}),
    }
    name = "cached" if cached else "uncached"
    app = procs.Service(name, [sys.executable, str(EXAMPLE)], env, stack.data_dir / f"{name}.log")
    try:
        deadline = time.monotonic() + 30
        while asyncio.run(_status(port)) != 200:
            if time.monotonic() > deadline or app.proc.poll() is not None:
                raise RuntimeError(f"the example app did not start; see {app.log}")
            time.sleep(0.1)
        yield port
    finally:
        app.stop()


async def _status(port: int) -> int:
    with contextlib.suppress(OSError, RuntimeError):
        return (await procs.get(HOST, port, "/healthz"))[0]
    return 0


async def sdk_counters(http: aiohttp.ClientSession, port: int) -> dict[str, float]:
    """The SDK's counters, from the example app's /healthz."""
    async with http.get(f"http://{HOST}:{port}/healthz") as resp:
        counters: dict[str, float] = (await resp.json())["sdk"]
        return counters


def svc_auth(stack: Stack) -> dict[str, str]:
    """The service client's client_secret_basic header."""
    return {"Authorization": basic_auth(stack.svc["client_id"], stack.svc["client_secret"])}


async def token(http: aiohttp.ClientSession, stack: Stack) -> str:
    """A fresh access token of the service client."""
    form = {"grant_type": "client_credentials"}
    async with http.post(f"{stack.url}/token", data=form, headers=svc_auth(stack)) as resp:
        assert resp.status == 200, await resp.text()
        value: str = (await resp.json())["access_token"]
        return value


async def warm(http: aiohttp.ClientSession, port: int, bearer: str, cached: bool) -> None:
    """Ask until the app answers `bearer` from its cache (cached) or at least once (not)."""
    deadline = time.monotonic() + 30
    headers = {"Authorization": f"Bearer {bearer}"}
    while True:
        before = (await sdk_counters(http, port))["hits"]
        async with http.post(f"http://{HOST}:{port}/items", headers=headers) as resp:
            assert resp.status == 201, resp.status
        if not cached or (await sdk_counters(http, port))["hits"] > before:
            return
        if time.monotonic() > deadline:
            raise RuntimeError("the app never answered from its cache: is the feed followed?")
        await asyncio.sleep(0.05)


@dataclass(frozen=True)
class Run:
    """One load run at the app."""

    rate: float
    errors: int
    percentiles: dict[str, float]
    hits: float
    misses: float


def throughput(stack: Stack, args: argparse.Namespace, cached: bool) -> Run:
    """Closed-loop load on the app: req/s, latency, and the SDK's counters over the run."""

    async def prepare(port: int) -> tuple[str, dict[str, float]]:
        async with aiohttp.ClientSession() as http:
            bearer = await token(http, stack)
            await warm(http, port, bearer, cached)
            return bearer, await sdk_counters(http, port)

    async def counters(port: int) -> dict[str, float]:
        async with aiohttp.ClientSession() as http:
            return await sdk_counters(http, port)

    with example_app(stack, cached=cached) as port:
        bearer, before = asyncio.run(prepare(port))
        bodies = stack.data_dir / "bodies.txt"
        bodies.write_text("item=1\n")
        load = Load(
            host=HOST,
            port=port,
            path="/items",
            headers={"Authorization": f"Bearer {bearer}"},
            bodies=bodies,
            connections=args.connections,
            duration=args.duration,
        )
        outcome = loadgen.run(load, args.processes)
        after = asyncio.run(counters(port))
    return Run(
        outcome.rate,
        outcome.error_count,
        outcome.percentiles,
        after["hits"] - before["hits"],
        after["misses"] - before["misses"],
    )


async def revocation_once(
    http: aiohttp.ClientSession, stack: Stack, port: int
) -> tuple[float, int]:
    """One revocation under load: (ms from /revoke returning to the app's first 401, 200s to
    requests sent after /revoke returned)."""
    bearer = await token(http, stack)
    await warm(http, port, bearer, cached=True)
    seen: list[tuple[float, float, int]] = []  # (sent, answered, status)
    stop = asyncio.Event()
    headers = {"Authorization": f"Bearer {bearer}"}

    async def hammer() -> None:
        while not stop.is_set():
            sent = time.perf_counter()
            async with http.post(f"http://{HOST}:{port}/items", headers=headers) as resp:
                await resp.read()
                seen.append((sent, time.perf_counter(), resp.status))

    tasks = [asyncio.create_task(hammer()) for _ in range(CONCURRENCY)]
    try:
        await asyncio.sleep(0.1)
        form = {"token": bearer}
        async with http.post(f"{stack.url}/revoke", data=form, headers=svc_auth(stack)) as resp:
            assert resp.status == 200, resp.status
        returned = time.perf_counter()
        deadline = returned + BOUND
        while not any(s == 401 for _, _, s in seen):
            if time.perf_counter() > deadline:
                raise RuntimeError(f"no 401 within {BOUND} s of the revocation")
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.05)  # a few more answers, to look for a stale 200
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    first = min(answered for _, answered, s in seen if s == 401)
    stale = sum(1 for sent, _, s in seen if s != 401 and sent > first)
    return max(0.0, first - returned) * 1000, stale


def revocations(stack: Stack, repetitions: int) -> tuple[list[float], int]:
    """`repetitions` revocations at the cached app: the delays (ms) and stale 200s."""

    async def all_of(port: int) -> tuple[list[float], int]:
        delays, stale = [], 0
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            for n in range(repetitions):
                delay, late = await revocation_once(http, stack, port)
                delays.append(delay)
                stale += late
                print(f"  revocation {n + 1}/{repetitions}: {delay:.1f} ms", flush=True)
        return delays, stale

    with example_app(stack, cached=True) as port:
        return asyncio.run(all_of(port))


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile (nearest rank) of `values`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: Sequence[str] | None = None) -> int:
    """Run both parts; exit 1 when the revocation target or promise is missed."""
    p = argparse.ArgumentParser(prog="python -m bench.resource_server", description=__doc__)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per load run (10)")
    p.add_argument("--connections", type=int, default=16, help="closed-loop connections (16)")
    p.add_argument("--processes", type=int, default=1, help="generator processes (1)")
    p.add_argument("--workers", type=int, default=1, help="introspect worker processes (1)")
    p.add_argument("--repetitions", type=int, default=REPETITIONS, help="revocations (50)")
    args = p.parse_args(argv)
    with served(args.workers) as stack:
        runs = {name: throughput(stack, args, name == "cached") for name in ("cached", "uncached")}
        for name, run in runs.items():
            pct = run.percentiles
            print(
                f"{name:9} {run.rate:8.0f} req/s  p50 {pct.get('p50', 0):6.2f} ms"
                f"  p99 {pct.get('p99', 0):6.2f} ms  errors {run.errors}"
                f"  sdk hits {run.hits:.0f} misses {run.misses:.0f}"
            )
        ratio = runs["cached"].rate / max(runs["uncached"].rate, 1e-9)
        print(f"cached / uncached: {ratio:.2f}x")
        delays, stale = revocations(stack, args.repetitions)
    p50, p99 = statistics.median(delays), quantile(delays, 0.99)
    print(
        f"revocation-to-401 at the app over {len(delays)}: p50 {p50:.1f} ms, p99 {p99:.1f} ms,"
        f" max {max(delays):.1f} ms (target p99 < {TARGET_P99_MS:g} ms); stale 200s: {stale}"
    )
    return 0 if p99 < TARGET_P99_MS and stale == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
