"""`introspect serve`: N worker processes on one port, each with its own pools and listener.

The parent resolves the stores (starting the embedded ones if needed),
applies migrations, then starts the workers. Each worker binds the port
itself with SO_REUSEPORT, so the kernel spreads connections across them.
SIGINT or SIGTERM makes every worker stop accepting, finish the requests in
flight, close its pools and exit; then the parent stops what it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import sys
from collections.abc import Coroutine
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import asyncpg

from introspect import history, logs, runtime
from introspect.config import ConfigError, Settings
from introspect.migrate import migrate

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT = 10.0


async def apply_migrations(database_url: str) -> list[str]:
    """Apply missing migrations over one short-lived connection."""
    conn = await asyncpg.connect(database_url)
    try:
        return await migrate(conn)
    finally:
        await conn.close()


async def _worker_main(settings: Settings, database_url: str, redis_url: str) -> None:
    # The web stack is imported in the worker only (after metrics setup): the CLI needs none.
    from aiohttp import web

    from introspect.app import create_admin_app, create_app
    from introspect.web.protocol import Runner

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    app = create_app(settings, database_url, redis_url)
    access_log = logging.getLogger("introspect.access") if settings.access_log else None
    runner = Runner(
        app,
        keepalive_timeout=settings.keepalive_timeout,
        access_log=access_log,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
        handle_signals=False,
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, reuse_port=True, backlog=1024)
    await site.start()
    runners = [runner]
    if settings.admin_port is not None:
        # The admin API on its own port, over this worker's Authority (started above).
        admin_runner = Runner(
            create_admin_app(settings, app),
            keepalive_timeout=settings.keepalive_timeout,
            access_log=access_log,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
            handle_signals=False,
        )
        await admin_runner.setup()
        await web.TCPSite(admin_runner, settings.host, settings.admin_port, reuse_port=True).start()
        runners.insert(0, admin_runner)
    log.info("worker %d listening", os.getpid())
    await stop.wait()
    log.info("worker %d draining", os.getpid())
    for each in runners:  # the admin app first: it borrows the main app's Authority
        await each.cleanup()


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run `main` on uvloop where it is installed (Linux and macOS), else on asyncio's loop.

    uvloop's loop, written in Cython over libuv, costs about a tenth less CPU
    per request here (`make bench`: the ceiling runs on it too).
    """
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def _worker(settings: Settings, database_url: str, redis_url: str) -> None:
    logs.setup()
    with contextlib.suppress(KeyboardInterrupt):
        run_loop(_worker_main(settings, database_url, redis_url))


def _metrics_dir(data_dir: Path) -> Path:
    path = data_dir / f"metrics-{os.getpid()}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def serve(settings: Settings, *, workers: int, run_migrations: bool = True) -> int:
    """Run the server until SIGINT/SIGTERM; the exit status."""
    with runtime.stores(settings) as found:
        if run_migrations:
            applied = asyncio.run(apply_migrations(found.database_url))
            if applied:
                log.info("applied migrations: %s", ", ".join(applied))
        try:
            asyncio.run(history.refuse_evicting(found.redis_url))
        except history.EvictingRedis as exc:
            raise ConfigError(str(exc)) from None
        metrics_dir = _metrics_dir(settings.data_dir)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        context = multiprocessing.get_context("spawn")
        procs: list[BaseProcess] = []
        stopping = False

        def _stop(_signum: int, _frame: object) -> None:
            nonlocal stopping
            stopping = True
            for proc in procs:
                if proc.is_alive() and proc.pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(proc.pid, signal.SIGTERM)

        previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            for _ in range(workers):
                proc = context.Process(
                    target=_worker, args=(settings, found.database_url, found.redis_url)
                )
                proc.start()
                procs.append(proc)
            where = "embedded postgres and redis" if found.embedded else "configured stores"
            admin = "" if settings.admin_port is None else f", admin API on :{settings.admin_port}"
            print(
                f"introspect serving {settings.issuer} on {settings.host}:{settings.port}{admin}"
                f" with {workers} worker(s), {where}; Ctrl-C stops",
                file=sys.stderr,
                flush=True,
            )
            status = 0
            clean = (0, -signal.SIGTERM, -signal.SIGINT)
            while any(proc.is_alive() for proc in procs):
                wait([proc.sentinel for proc in procs if proc.is_alive()], timeout=0.5)
                failed = [p for p in procs if not p.is_alive() and p.exitcode not in clean]
                if failed and not stopping:
                    log.error(
                        "worker %s exited with %s; stopping", failed[0].pid, failed[0].exitcode
                    )
                    status = 1
                    _stop(signal.SIGTERM, None)
            return status
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            shutil.rmtree(metrics_dir, ignore_errors=True)
