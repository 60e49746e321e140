"""Resilience drill: worker deaths, store outages and a rolling restart, each under load.

`python -m bench.drills resilience` starts `introspect serve --workers 2`
over embedded stores under a temporary data dir, keeps a closed-loop load
of introspections (tokens answered from the caches) on kept-alive
connections, plus a probe that asks `/token` (always Postgres) every 0.2 s,
and runs five phases:

* kill: SIGKILL one worker (as the OOM killer would);
* postgres stopped: `pg_ctl stop` for 30 s, then started again on its port;
* postgres hung: every Postgres process SIGSTOPped for 30 s;
* redis hung: Valkey SIGSTOPped for 10 s;
* sighup: a rolling restart of every worker.

For each it prints the failed requests, p99 and max latency, the longest
time without any successful answer, how long answers kept coming into the
fault, the seconds to recover after it ended, and a verdict against what
README's "Production: when a store fails" promises. Through a Postgres
outage every introspection of the load is of a cached token, by a caller
whose record and the token owner's are in Redis: each must keep answering,
with no error and no second without an answer.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.http import Connection, HttpError, basic_auth, form_request, request_head
from bench.procs import Service, cli, free_port, listening, pids_listening
from introspect.service import REDIS_TIMEOUT
from introspect.store import ACQUIRE_TIMEOUT, COMMAND_TIMEOUT

HOST = "127.0.0.1"
WORKERS = 2
CONNECTIONS = 8
TOKENS = 50
REQUEST_TIMEOUT = 30.0
PG_OUTAGE = 30.0
REDIS_OUTAGE = 10.0
BASELINE = 2.0
AFTER = 6.0
# Scheduling noise on a busy machine, beyond a deadline.
MARGIN = 0.5
# The longest a request may wait on a failed Postgres: a free connection, then its statement.
PG_DEADLINE = ACQUIRE_TIMEOUT + COMMAND_TIMEOUT + MARGIN


@dataclass(frozen=True, slots=True)
class Sample:
    """One request: when it was answered (monotonic), how long it took, its status (0: I/O)."""

    done: float
    took: float
    status: int


@dataclass
class Traffic:
    """What the load and the /token probe saw."""

    load: list[Sample] = field(default_factory=list)
    token: list[Sample] = field(default_factory=list)
    running: bool = True


async def _send(
    port: int, conn: Connection | None, request: bytes
) -> tuple[Connection | None, int]:
    """Send on `conn` (a new connection if none or closed); the connection to keep, the status."""
    try:
        if conn is None or conn.closed:
            conn = await Connection.open(HOST, port)
        status, _ = await asyncio.wait_for(conn.send(request), REQUEST_TIMEOUT)
    except (HttpError, OSError, TimeoutError):
        if conn is not None:
            conn.close()
        return None, 0
    return conn, status


async def _loop(
    port: int, requests: list[bytes], into: list[Sample], traffic: Traffic, pause: float
) -> None:
    """Send `requests` in turn on one kept-alive connection until the traffic stops."""
    conn: Connection | None = None
    index = 0
    while traffic.running:
        began = time.monotonic()
        conn, status = await _send(port, conn, requests[index % len(requests)])
        into.append(Sample(time.monotonic(), time.monotonic() - began, status))
        index += 1
        if status == 0 or pause:
            await asyncio.sleep(pause or 0.01)  # no busy loop while the port is closed


def _figures(
    samples: list[Sample], start: float, end: float, fault: tuple[float, float]
) -> dict[str, float]:
    """errors, p99, max, longest gap without a success, how long answers kept coming after
    the fault began, and recovery after it ended (seconds)."""
    fault_start, fault_end = fault
    window = [s for s in samples if start <= s.done < end]
    failed = [s for s in window if not 200 <= s.status < 300]
    first_failure = min((s.done for s in failed if s.done >= fault_start), default=fault_end)
    took = sorted(s.took for s in window)
    ok_times = [start, *sorted(s.done for s in window if 200 <= s.status < 300), end]
    late_failures = [s.done for s in failed if s.done >= fault_end]
    return {
        "requests": len(window),
        "errors": len(failed),
        "p99": took[int(0.99 * (len(took) - 1))] if took else 0.0,
        "max": took[-1] if took else 0.0,
        "gap": max(b - a for a, b in itertools.pairwise(ok_times)),
        "served": max(0.0, first_failure - fault_start),
        "recover": max(late_failures) - fault_end if late_failures else 0.0,
    }


def _print(name: str, label: str, f: dict[str, float]) -> None:
    print(
        f"  {name:<16} {label:<12} requests {f['requests']:>7.0f}  errors {f['errors']:>6.0f}"
        f"  p99 {f['p99'] * 1000:>7.1f} ms  max {f['max'] * 1000:>7.1f} ms"
        f"  no answer {f['gap']:.2f} s  answered {f['served']:.2f} s into the fault"
        f"  recovered {f['recover']:.2f} s after it",
        flush=True,
    )


@dataclass
class Stack:
    """The server under test and its embedded stores."""

    service: Service
    data_dir: Path
    port: int

    def postgres_pids(self) -> list[int]:
        postmaster = int((self.data_dir / "pg" / "postmaster.pid").read_text().split()[0])
        children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()
        return [postmaster, *(int(pid) for pid in children)]

    def valkey_pid(self) -> int:
        return int(json.loads((self.data_dir / "embedded.json").read_text())["valkey"]["pid"])

    def pg_ctl(self, *args: str) -> None:
        """Run pg_ctl on the embedded cluster, as the account that owns it."""
        pgdata = self.data_dir / "pg"
        opts = shlex.split((pgdata / "postmaster.opts").read_text())
        command = [str(Path(opts[0]).with_name("pg_ctl")), "-D", str(pgdata), "-w", *args]
        owner = pgdata.stat().st_uid
        if owner != os.geteuid():
            command = ["runuser", "-u", pwd.getpwuid(owner).pw_name, "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def pg_start_again(self) -> None:
        """Start the cluster again with the options (port) it had."""
        opts = shlex.split((self.data_dir / "pg" / "postmaster.opts").read_text())
        log = str(self.data_dir / "pg" / "postgres.log")
        self.pg_ctl("start", "-l", log, "-o", shlex.join(opts[1:]))


Fault = Callable[[Stack], Awaitable[float]]  # injects, waits, restores; returns the end time


def _stopped(pids: list[int], seconds: float) -> Fault:
    async def fault(_stack: Stack) -> float:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(seconds)
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        return time.monotonic()

    return fault


async def _kill_worker(stack: Stack) -> float:
    victim = stack.service.workers()[0]
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    while True:  # until a replacement listens
        holders = pids_listening(stack.port)
        if len(holders) >= WORKERS and victim not in holders:
            break
        await asyncio.sleep(0.05)
    print(f"  kill: a replacement listened {time.monotonic() - killed:.2f} s after the SIGKILL")
    return killed


async def _pg_stopped(stack: Stack) -> float:
    await asyncio.to_thread(stack.pg_ctl, "stop", "-m", "fast")
    await asyncio.sleep(PG_OUTAGE)
    await asyncio.to_thread(stack.pg_start_again)
    return time.monotonic()


async def _pg_hung(stack: Stack) -> float:
    return await _stopped(stack.postgres_pids(), PG_OUTAGE)(stack)


async def _redis_hung(stack: Stack) -> float:
    return await _stopped([stack.valkey_pid()], REDIS_OUTAGE)(stack)


async def _sighup(stack: Stack) -> float:
    old = set(stack.service.workers())
    stack.service.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        now = set(stack.service.workers())
        if len(now) == WORKERS and not now & old and listening(stack.port) == WORKERS:
            break
        await asyncio.sleep(0.1)
    return time.monotonic()


@dataclass(frozen=True)
class Phase:
    """A fault and what passing means for the load (`check`) and the /token probe."""

    name: str
    fault: Fault
    check: Callable[[dict[str, float], dict[str, float]], str | None]


def _kill_check(load: dict[str, float], _token: dict[str, float]) -> str | None:
    if load["errors"] > CONNECTIONS:
        return f"{load['errors']:.0f} errors: more than the connections the worker held"
    if load["gap"] > 1.0:
        return f"{load['gap']:.2f} s without an answer"
    return None


def _pg_check(load: dict[str, float], token: dict[str, float]) -> str | None:
    if load["errors"] or load["gap"] > 1.0:
        return (
            f"cached introspections: {load['errors']:.0f} errors,"
            f" {load['gap']:.2f} s without an answer"
        )
    if max(load["max"], token["max"]) > PG_DEADLINE:
        return f"a request waited {max(load['max'], token['max']):.2f} s > {PG_DEADLINE:.1f} s"
    if token["recover"] > 5.0:
        return f"/token recovered {token['recover']:.1f} s after postgres"
    return None


def _redis_check(load: dict[str, float], _token: dict[str, float]) -> str | None:
    if load["errors"]:
        return f"{load['errors']:.0f} errors"
    if load["p99"] > REDIS_TIMEOUT + MARGIN:
        return f"p99 {load['p99']:.2f} s > {REDIS_TIMEOUT + MARGIN:.1f} s"
    if load["gap"] > 1.0:
        return f"{load['gap']:.2f} s without an answer"
    return None


def _hup_check(load: dict[str, float], token: dict[str, float]) -> str | None:
    if load["errors"] or token["errors"]:
        return f"{load['errors'] + token['errors']:.0f} failed requests"
    return None


PHASES = [
    Phase("kill", _kill_worker, _kill_check),
    Phase("postgres stopped", _pg_stopped, _pg_check),
    Phase("postgres hung", _pg_hung, _pg_check),
    Phase("redis hung", _redis_hung, _redis_check),
    Phase("sighup", _sighup, _hup_check),
]


async def _drill(stack: Stack, env: dict[str, str]) -> bool:
    port = stack.port
    app = cli(env, "client", "create", "--name", "drill-app", "--scope", "read")
    rs = cli(env, "client", "create", "--name", "drill-rs", "--introspect")
    app_auth = {"Authorization": basic_auth(app["client_id"], app["client_secret"])}
    rs_auth = {"Authorization": basic_auth(rs["client_id"], rs["client_secret"])}
    token_request = form_request(
        request_head("POST", HOST, port, "/token", app_auth), b"grant_type=client_credentials"
    )
    tokens = []
    conn: Connection | None = None
    while len(tokens) < TOKENS:
        conn = conn if conn is not None and not conn.closed else await Connection.open(HOST, port)
        status, body = await conn.send(token_request)
        assert status == 200, body
        tokens.append(json.loads(body)["access_token"])
    head = request_head("POST", HOST, port, "/introspect", rs_auth)
    introspections = [form_request(head, f"token={t}".encode()) for t in tokens]
    traffic = Traffic()
    tasks = [
        asyncio.create_task(_loop(port, introspections, traffic.load, traffic, 0.0))
        for _ in range(CONNECTIONS)
    ]
    tasks.append(asyncio.create_task(_loop(port, [token_request], traffic.token, traffic, 0.2)))
    passed = True
    try:
        await asyncio.sleep(BASELINE)
        for phase in PHASES:
            start = time.monotonic()
            await asyncio.sleep(BASELINE)
            fault_start = time.monotonic()
            fault = fault_start, await phase.fault(stack)
            await asyncio.sleep(AFTER)
            end = time.monotonic()
            load = _figures(traffic.load, start, end, fault)
            token = _figures(traffic.token, start, end, fault)
            _print(phase.name, "introspect", load)
            _print(phase.name, "/token", token)
            problem = phase.check(load, token)
            passed = passed and problem is None
            print(f"  {phase.name}: {'PASS' if problem is None else 'FAIL ' + problem}", flush=True)
    finally:
        traffic.running = False
        await asyncio.gather(*tasks)
    return passed


def run() -> bool:
    """Run every phase against a fresh server; True when each passed."""
    parent = Path(tempfile.mkdtemp(prefix="introspect-drill-"))
    data_dir = parent / "data"
    port = free_port()
    env = {**os.environ, "INTROSPECT_DATA_DIR": str(data_dir), "INTROSPECT_PORT": str(port)}
    service = Service(
        "introspect",
        [sys.executable, "-m", "introspect.cli", "serve", "--workers", str(WORKERS)],
        env,
        parent / "serve.log",
    )
    try:
        service.wait_ready(port, WORKERS, timeout=180)
        passed = asyncio.run(_drill(Stack(service, data_dir, port), env))
    except Exception as exc:  # a drill reports, whatever broke
        print(f"VERDICT resilience: FAIL {type(exc).__name__}: {exc} (log: {parent}/serve.log)")
        return False
    finally:
        service.stop()
    shutil.rmtree(parent, ignore_errors=True)
    print(f"VERDICT resilience: {'PASS' if passed else 'FAIL'} (phases above)")
    return passed
