"""`introspect serve` supervises its workers: replaced when they die or hang, restarted on SIGHUP.

Real processes over the session's stores, under a small load of introspections.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from introspect.config import Settings
from introspect.service import Authority
from introspect.supervisor import FAIL_STARTS, HEARTBEAT_TIMEOUT
from tests.helpers import Registered, cli_env, eventually, free_port, register

GRANT = {"grant_type": "client_credentials"}
# After a worker is killed, requests it held or had queued fail: within this many seconds.
KILL_ERRORS_WITHIN = 0.5


@dataclass
class Served:
    """An `introspect serve` subprocess: its parent process, URL and log."""

    proc: subprocess.Popen[bytes]
    base: str
    log: Path

    def workers(self) -> list[int]:
        """The worker processes (multiprocessing spawn children of the parent)."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        return sorted(int(pid) for pid in children.split() if "spawn_main" in _cmdline(int(pid)))

    def log_text(self) -> str:
        """Everything the server logged so far."""
        return self.log.read_text()

    async def readiness(self) -> dict:
        """The JSON of /readyz (of whichever worker answers)."""
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{self.base}/readyz", timeout=aiohttp.ClientTimeout(total=5)) as resp,
        ):
            return await resp.json()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@contextlib.contextmanager
def serve(settings: Settings, tmp_path: Path, workers: int, **env: str) -> Iterator[Served]:
    """`introspect serve --workers N` until its workers all listen; stopped at the end."""
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "introspect.cli", "serve", "--workers", str(workers)],
            env={**cli_env(settings, tmp_path), "INTROSPECT_PORT": str(port), **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    served = Served(proc, f"http://127.0.0.1:{port}", log)
    try:
        yield served
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def all_listening(served: Served, workers: int, within: float = 30.0, **more: int) -> None:
    """Wait until `workers` workers beat (readiness says so, with `more` of its figures) and
    the parent still runs. Each worker's readiness answer may lag a second (it is cached)."""

    async def listening() -> bool:
        assert served.proc.poll() is None, served.log_text()
        try:
            ready = await served.readiness()
        except (aiohttp.ClientError, TimeoutError):
            return False
        figures = ready["workers"]
        return figures["alive"] == workers and all(figures[k] == v for k, v in more.items())

    await eventually(listening, within)


@dataclass
class Load:
    """Introspections sent in a loop by a few clients; what came back."""

    ok: int = 0
    # (when, what) of every failed request.
    failures: list[tuple[float, str]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def failures_after(self, moment: float) -> list[str]:
        """The failures that happened after `moment` (time.monotonic())."""
        return [what for when, what in self.failures if when > moment]


async def _client(
    http: aiohttp.ClientSession, url: str, rs: Registered, token: str, load: Load
) -> None:
    """Introspect `token` again and again until the load stops, recording each outcome."""
    while not load.stop.is_set():
        try:
            async with http.post(url, data={"token": token}, headers=rs.auth) as resp:
                body = await resp.json()
                if resp.status == 200 and body["active"]:
                    load.ok += 1
                else:
                    load.failures.append((time.monotonic(), f"{resp.status} {body}"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            load.failures.append((time.monotonic(), repr(exc)))


@contextlib.asynccontextmanager
async def under_load(
    served: Served, authority: Authority, *, keep_alive: bool, clients: int = 4
) -> AsyncIterator[Load]:
    """Introspections of one live token from `clients` concurrent clients, until the block ends.

    Without keep-alive each request takes a new connection, which the kernel
    gives to any worker listening.
    """
    app = await register(authority)
    rs = await register(authority, scopes=(), can_introspect=True)
    load = Load()
    connector = aiohttp.TCPConnector(limit=clients, force_close=not keep_alive)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        async with http.post(f"{served.base}/token", data=GRANT, headers=app.auth) as resp:
            token = (await resp.json())["access_token"]
        url = f"{served.base}/introspect"
        tasks = [asyncio.create_task(_client(http, url, rs, token, load)) for _ in range(clients)]
        try:
            await eventually(lambda: _answered(load, 20))
            yield load
        finally:
            load.stop.set()
            await asyncio.gather(*tasks)


async def _answered(load: Load, count: int) -> bool:
    return load.ok >= count


async def test_killed_worker_is_replaced_while_the_service_answers(
    settings: Settings, authority: Authority, tmp_path: Path
) -> None:
    """SIGKILL of one of two workers under load: the other keeps answering, a replacement starts
    within 2 s and listens, the parent stays, and readiness and /metrics count the restart."""
    with serve(settings, tmp_path, workers=2) as served:
        await all_listening(served, 2, expected=2, restarts=0)
        async with under_load(served, authority, keep_alive=False) as load:
            victim = served.workers()[0]
            os.kill(victim, signal.SIGKILL)
            killed = time.monotonic()

            async def replaced() -> bool:
                return len(set(served.workers()) - {victim}) == 2

            await eventually(replaced, within=2.0)
            assert time.monotonic() - killed < 2.0
            before = load.ok
            await all_listening(served, 2)
            await eventually(lambda: _answered(load, before + 20))
        assert served.proc.poll() is None
        # Only requests on connections the killed worker held (or had queued) may have failed,
        # and only by losing their connection: no HTTP error.
        assert load.failures_after(killed + KILL_ERRORS_WITHIN) == []
        assert not [what for _, what in load.failures if what[0].isdigit()]
        assert f"worker {victim} exited with signal SIGKILL; replacing it" in served.log_text()
        await all_listening(served, 2, restarts=1)

        async def counted() -> bool:
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"{served.base}/metrics") as resp,
            ):
                return "\nintrospect_worker_restarts 1.0\n" in await resp.text()

        await eventually(counted)


async def test_worker_failing_at_start_is_retried_with_backoff(
    settings: Settings, authority: Authority, tmp_path: Path
) -> None:
    """A replacement that fails at start is retried after growing delays, while the other
    worker keeps serving, until one starts."""
    with serve(settings, tmp_path, workers=2, **{FAIL_STARTS: "3,4,5"}) as served:
        await all_listening(served, 2)
        async with under_load(served, authority, keep_alive=False) as load:
            os.kill(served.workers()[0], signal.SIGKILL)
            killed = time.monotonic()
            await all_listening(served, 2, restarts=4)
        assert served.proc.poll() is None
        assert load.failures_after(killed + KILL_ERRORS_WITHIN) == []
        log = served.log_text()
        for delay, failed in (("0.2", 2), ("0.4", 3), ("0.8", 4)):
            assert (
                f"exited with status 1; replacing it in {delay} s ({failed} failed in a row)"
            ) in log, log
        await all_listening(served, 2, restarts=4)


async def test_workers_that_cannot_start_stop_the_server(
    settings: Settings, tmp_path: Path
) -> None:
    """When every worker start fails, the server gives up after a few tries and exits 1."""
    with serve(settings, tmp_path, workers=1, **{FAIL_STARTS: "all"}) as served:
        assert served.proc.wait(timeout=60) == 1
        assert "workers cannot start: 5 starts in a row failed" in served.log_text()
        assert "the workers could not start" in served.log_text()


async def test_stuck_worker_is_killed_and_replaced(
    settings: Settings, authority: Authority, tmp_path: Path
) -> None:
    """A worker whose event loop stops (SIGSTOP) misses its heartbeats: it is killed and
    replaced, and the service answers throughout."""
    with serve(settings, tmp_path, workers=2) as served:
        await all_listening(served, 2)
        victim = served.workers()[0]
        os.kill(victim, signal.SIGSTOP)

        async def replaced() -> bool:
            return victim not in served.workers() and len(served.workers()) == 2

        await eventually(replaced, within=HEARTBEAT_TIMEOUT + 3)
        await all_listening(served, 2)
        assert f"worker {victim} silent for" in served.log_text()


async def test_sighup_restarts_every_worker_without_a_failed_request(
    settings: Settings, authority: Authority, tmp_path: Path
) -> None:
    """SIGHUP under load replaces every worker, one at a time, and no request fails."""
    with serve(settings, tmp_path, workers=2) as served:
        await all_listening(served, 2)
        old = set(served.workers())
        async with under_load(served, authority, keep_alive=True, clients=8) as load:
            served.proc.send_signal(signal.SIGHUP)

            async def renewed() -> bool:
                now = set(served.workers())
                return len(now) == 2 and not now & old

            await eventually(renewed, within=60)
            await all_listening(served, 2)
            before = load.ok
            await eventually(lambda: _answered(load, before + 20))
        assert load.failures == []
        assert served.proc.poll() is None
        assert "rolling restart done" in served.log_text()
        await all_listening(served, 2, restarts=0)


async def test_sigterm_drains_and_exits_zero(settings: Settings, tmp_path: Path) -> None:
    """SIGTERM stops the server with status 0 once its workers drained."""
    with serve(settings, tmp_path, workers=1) as served:
        await all_listening(served, 1)
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(timeout=30) == 0
