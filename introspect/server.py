"""`introspect serve`: N supervised worker processes on one port, each with its own pools.

The parent resolves the stores (starting the embedded ones if needed),
applies migrations, then starts the workers and supervises them (see
`introspect/supervisor.py`: replaced when they die or hang, restarted one
at a time on SIGHUP). Each worker binds the port itself with SO_REUSEPORT,
so the kernel spreads connections across them and the others keep serving
while one is replaced. SIGINT or SIGTERM makes every worker drain: stop
accepting, answer what comes on open connections with `Connection: close`
for a moment, finish the requests in flight, close its pools and exit;
then the parent stops what it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import shutil
import signal
import sys
from collections.abc import Coroutine, Sequence
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg

from introspect import history, logs, runtime
from introspect.config import ConfigError, Settings
from introspect.store.migrate import migrate
from introspect.supervisor import Board, Supervisor, injected_start_failure

if TYPE_CHECKING:
    from aiohttp import web

    from introspect.web.protocol import Answers

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT = 10.0
# How long a draining worker keeps its open connections, answering each next request with
# `Connection: close` so that its client reconnects (to another worker) without a failure.
DRAIN_GRACE = 2.0
DRAIN_POLL = 0.05


async def apply_migrations(database_url: str) -> list[str]:
    """Apply missing migrations over one short-lived connection."""
    conn = await asyncpg.connect(database_url)
    try:
        return await migrate(conn)
    finally:
        await conn.close()


class Drain:
    """A worker's drain: stop accepting, then close each connection after its next answer."""

    def __init__(self, answers: Sequence[Answers]) -> None:
        self.answers = answers

    async def run(self, runners: Sequence[web.AppRunner]) -> None:
        """Stop listening, then wait (DRAIN_GRACE at most) until the clients closed."""
        for each in self.answers:
            each.draining = True
        for runner in runners:
            for site in runner.sites:
                await site.stop()
        for _ in range(round(DRAIN_GRACE / DRAIN_POLL)):
            if not any(
                runner.server is not None and runner.server.connections for runner in runners
            ):
                return
            await asyncio.sleep(DRAIN_POLL)


async def _worker_main(
    settings: Settings, database_url: str, redis_url: str, board: Board, slot: int
) -> None:
    # The web stack is imported in the worker only (after metrics setup): the CLI needs none.
    from aiohttp import web

    from introspect.app import create_admin_app, create_app
    from introspect.web.keys import ANSWERS, AUTHORITY, BOARD
    from introspect.web.protocol import Runner

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    app = create_app(settings, database_url, redis_url)
    app[BOARD] = board
    apps = [app]
    access_log = logging.getLogger("introspect.access") if settings.access_log else None
    runner = Runner(
        app,
        keepalive_timeout=settings.keepalive_timeout,
        access_log=access_log,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
        handle_signals=False,
    )
    await runner.setup()
    # Without Redis, each worker grants itself this share of a rate-limit window.
    app[AUTHORITY].meter.workers = board.expected
    site = web.TCPSite(runner, settings.host, settings.port, reuse_port=True, backlog=1024)
    await site.start()
    runners = [runner]
    if settings.admin_port is not None:
        # The admin API on its own port, over this worker's Authority (started above).
        admin_app = create_admin_app(settings, app)
        apps.append(admin_app)
        admin_runner = Runner(
            admin_app,
            keepalive_timeout=settings.keepalive_timeout,
            access_log=access_log,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
            handle_signals=False,
        )
        await admin_runner.setup()
        await web.TCPSite(admin_runner, settings.host, settings.admin_port, reuse_port=True).start()
        runners.insert(0, admin_runner)
    freeze_startup()
    log.info("worker %d listening", os.getpid())
    heartbeat = loop.create_task(board.beat_forever(slot))
    await stop.wait()
    log.info("worker %d draining", os.getpid())
    await Drain([each[ANSWERS] for each in apps]).run(runners)
    for each in runners:  # the admin app first: it borrows the main app's Authority
        await each.cleanup()
    heartbeat.cancel()


def freeze_startup() -> None:
    """Take what starting a worker made (modules, classes, functions, pools) out of every
    later collection of the cyclic GC.

    They live as long as the worker, yet each full collection would walk them all again
    (about 50,000 objects, 20 ms here: `python -m bench.gc_pause --freeze`). Cached entries
    are not tracked at all (introspect/cache/entry.py), so after this a full collection walks
    only what requests made since.
    """
    gc.collect()
    gc.freeze()


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


def _worker(
    settings: Settings, database_url: str, redis_url: str, board: Board, slot: int, number: int
) -> None:
    logs.setup()
    if injected_start_failure(number):
        raise SystemExit(f"worker start {number} fails: injected by the environment")
    with contextlib.suppress(KeyboardInterrupt):
        run_loop(_worker_main(settings, database_url, redis_url, board, slot))


def _metrics_dir(data_dir: Path) -> Path:
    path = data_dir / f"metrics-{os.getpid()}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def serve(settings: Settings, *, workers: int, run_migrations: bool = True) -> int:
    """Run the server until SIGINT/SIGTERM; the exit status (1: workers could not start)."""
    with runtime.stores(settings) as found:
        if run_migrations:
            applied = asyncio.run(apply_migrations(found.database_url))
            if applied:
                log.info("applied migrations: %s", ", ".join(applied))
        try:
            asyncio.run(history.refuse_evicting(found.redis_url, cluster=settings.redis_cluster))
        except history.EvictingRedis as exc:
            raise ConfigError(str(exc)) from None
        metrics_dir = _metrics_dir(settings.data_dir)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        context = multiprocessing.get_context("spawn")
        # Twice the slots: a rolling restart runs a new worker beside the old ones.
        board = Board.create(context, expected=workers, slots=2 * workers)

        def start(slot: int, number: int) -> BaseProcess:
            proc = context.Process(
                target=_worker,
                args=(settings, found.database_url, found.redis_url, board, slot, number),
            )
            proc.start()
            return proc

        supervisor = Supervisor(start, board)
        handlers = {
            signal.SIGINT: supervisor.stop,
            signal.SIGTERM: supervisor.stop,
            signal.SIGHUP: supervisor.restart,
        }
        previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
        try:
            where = "embedded postgres and redis" if found.embedded else "configured stores"
            admin = "" if settings.admin_port is None else f", admin API on :{settings.admin_port}"
            print(
                f"introspect serving {settings.issuer} on {settings.host}:{settings.port}{admin}"
                f" with {workers} worker(s), {where}; Ctrl-C stops, SIGHUP restarts the workers",
                file=sys.stderr,
                flush=True,
            )
            status = supervisor.run()
            if status:
                print(
                    "introspect: the workers could not start (see the log above); stopped",
                    file=sys.stderr,
                    flush=True,
                )
            return status
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            shutil.rmtree(metrics_dir, ignore_errors=True)
