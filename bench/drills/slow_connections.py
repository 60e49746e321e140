"""Drill: 2,000 slow connections (one byte every 5 s) held for 60 s while a client introspects.

`introspect serve` (2 workers, embedded stores under a temp data dir) on
loopback. An attacker keeps 2,000 connections open, each sending one byte of
a request head every 5 s and reopening any connection the server closes;
meanwhile a well-behaved resource server introspects a hot token over one
keep-alive connection, back to back. PASS when the server closes the slow
connections (none outlives the 10 s head timeout by more than one byte
interval) and the normal client is answered throughout: no error, p99 under
100 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.http import Connection, HttpError, basic_auth, form_request, request_head
from bench.loadgen import percentiles_ms
from bench.procs import Service, cli, free_port
from introspect.web.protocol import HEAD_TIMEOUT

HOST = "127.0.0.1"
SLOW = 2_000
BYTE_EVERY = 5.0
HOLD = 60.0
P99_LIMIT_MS = 100.0
# A slow connection is closed by the head timeout; it may be noticed one byte interval late.
LIFETIME_LIMIT = HEAD_TIMEOUT + BYTE_EVERY
HEAD = b"POST /introspect HTTP/1.1\r\nHost: drill\r\nContent-Type: text/plain\r\nX-Pad: aaaa\r\n"


class _Slow(asyncio.Protocol):
    """One slow connection: when it opened and, once the server closed it, its lifetime."""

    def __init__(self, ended: list[float]) -> None:
        self.opened = time.monotonic()
        self.sent = 0
        self.dropped = False  # closed by the drill itself at the end
        self.transport: asyncio.Transport | None = None
        self._ended = ended

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.dropped:
            self._ended.append(time.monotonic() - self.opened)

    def drip(self) -> None:
        """Send the next byte of the head."""
        if self.transport is not None:
            self.transport.write(HEAD[self.sent % len(HEAD) : self.sent % len(HEAD) + 1])
            self.sent += 1


async def _attack(port: int, until: float, lifetimes: list[float]) -> int:
    """Keep SLOW slow connections open until `until`; how many were opened in all."""
    loop = asyncio.get_running_loop()
    live: list[_Slow] = []
    opened = 0
    while time.monotonic() < until:
        live = [conn for conn in live if conn.transport is not None]
        # Open what is missing, spread over the first byte interval, then drip one byte each.
        missing = SLOW - len(live)
        for _ in range(min(missing, SLOW // 10)):
            with contextlib.suppress(OSError):
                _, conn = await loop.create_connection(lambda: _Slow(lifetimes), HOST, port)
                live.append(conn)
                opened += 1
        for conn in live:
            if time.monotonic() - conn.opened >= BYTE_EVERY * conn.sent:
                conn.drip()
        await asyncio.sleep(0.5)
    for conn in live:
        if conn.transport is not None:
            conn.dropped = True
            conn.transport.abort()
    return opened


async def _introspect(port: int, until: float, request: bytes) -> tuple[list[int], int, int]:
    """Introspect back to back until `until`: latencies (us), errors, inactive answers."""
    latencies: list[int] = []
    errors = inactive = 0
    conn = await Connection.open(HOST, port)
    while time.monotonic() < until:
        began = time.perf_counter_ns()
        try:
            status, body = await conn.send(request)
        except HttpError:
            errors += 1
            conn = await Connection.open(HOST, port)
            continue
        latencies.append((time.perf_counter_ns() - began) // 1000)
        if status != 200:
            errors += 1
        elif b'"active":true' not in body:
            inactive += 1
        await asyncio.sleep(0.001)
    conn.close()
    return latencies, errors, inactive


def _post(url: str, data: bytes, authorization: str) -> dict[str, str]:
    headers = {"Authorization": authorization, "Content-Type": "application/x-www-form-urlencoded"}
    request = urllib.request.Request(url, data=data, headers=headers)  # noqa: S310 - loopback
    with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - loopback
        answer: dict[str, str] = json.loads(resp.read())
        return answer


def _wait_ready(base: str, service: Service, within: float = 120.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if service.proc.poll() is not None:
            raise RuntimeError(f"the server exited; see {service.log}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{base}/readyz", timeout=1) as resp,  # noqa: S310 - loopback
        ):
            if resp.status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"the server was not ready in {within:g} s; see {service.log}")


async def _drill(port: int, request: bytes) -> tuple[list[int], int, int, list[float], int]:
    until = time.monotonic() + HOLD
    lifetimes: list[float] = []
    (latencies, errors, inactive), opened = await asyncio.gather(
        _introspect(port, until, request), _attack(port, until, lifetimes)
    )
    return latencies, errors, inactive, lifetimes, opened


def run() -> bool:
    """Run the drill; True when it passed."""
    with tempfile.TemporaryDirectory(prefix="drill-slow-") as tmp:
        data_dir = Path(tmp)  # itself the data dir: as root, the postgres user passes only it
        port = free_port()
        base = f"http://{HOST}:{port}"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("INTROSPECT_")},
            "INTROSPECT_DATA_DIR": str(data_dir),
            "INTROSPECT_PORT": str(port),
        }
        service = Service(
            "server",
            [sys.executable, "-m", "introspect.cli", "serve", "--workers", "2"],
            env,
            data_dir / "server.log",
        )
        try:
            _wait_ready(base, service)
            rs = cli(env, "client", "create", "--name", "rs", "--introspect")
            app = cli(env, "client", "create", "--name", "app", "--scope", "read")
            token = _post(
                f"{base}/token",
                b"grant_type=client_credentials",
                basic_auth(app["client_id"], app["client_secret"]),
            )["access_token"]
            head = request_head(
                "POST",
                HOST,
                port,
                "/introspect",
                {"Authorization": basic_auth(rs["client_id"], rs["client_secret"])},
            )
            request = form_request(head, b"token=" + token.encode())
            print(
                f"{SLOW:,} slow connections, one byte every {BYTE_EVERY:g} s, for {HOLD:g} s;"
                " a resource server introspecting a hot token meanwhile",
                flush=True,
            )
            latencies, errors, inactive, lifetimes, opened = asyncio.run(_drill(port, request))
        finally:
            service.stop()
    figures = percentiles_ms(latencies)
    longest = max(lifetimes, default=0.0)
    print(
        f"slow connections: {opened:,} opened, {len(lifetimes):,} closed by the server,"
        f" longest lived {longest:.1f} s (head timeout {HEAD_TIMEOUT:g} s)"
    )
    print(
        f"normal client: {len(latencies):,} answers, p50 {figures.get('p50', 0):.2f} ms,"
        f" p99 {figures.get('p99', 0):.2f} ms, max {figures.get('max', 0):.2f} ms,"
        f" {errors} errors, {inactive} not active"
    )
    closed = opened >= SLOW and len(lifetimes) >= SLOW and longest <= LIFETIME_LIMIT
    answered = bool(latencies) and errors == 0 and inactive == 0
    fast = figures.get("p99", float("inf")) < P99_LIMIT_MS
    ok = closed and answered and fast
    print(
        f"VERDICT slow_connections: {'PASS' if ok else 'FAIL'}"
        f" {len(lifetimes):,} slow connections closed (longest {longest:.1f} s),"
        f" normal client p99 {figures.get('p99', 0):.2f} ms with {errors} errors",
        flush=True,
    )
    return ok
