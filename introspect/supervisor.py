"""The supervisor of `introspect serve`: workers replaced if they die or hang, restarted on HUP.

Each worker binds the port itself with SO_REUSEPORT, so while one is
replaced the others keep the port open and serving. The parent:

* replaces a worker that exits for any reason but its own shutdown
  (SIGKILL by the OOM killer, a crash), at once if it had lived a while,
  else after a backoff doubling from BACKOFF_FIRST to BACKOFF_MAX;
* kills (SIGKILL) and replaces a worker whose heartbeat is older than
  HEARTBEAT_TIMEOUT (its event loop stuck), or that is not listening
  START_TIMEOUT after it started;
* on SIGHUP restarts every worker, one at a time: it starts the new one,
  waits until it listens, then SIGTERMs the old one, which drains, and
  waits for it to exit before the next; if a new worker fails, the old
  ones stay;
* exits on SIGINT or SIGTERM once every worker drained, or with status 1
  when no worker is serving and START_ATTEMPTS starts in a row failed.

Parent and workers share a `Board`, a few numbers in shared memory: how
many workers are expected, how many were replaced, and one heartbeat slot
per worker (the worker's last `time.monotonic()`, 0 until it listens).
`/readyz` and the `introspect_worker_restarts` gauge read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait
from multiprocessing.context import SpawnContext
from multiprocessing.process import BaseProcess
from typing import Any

from prometheus_client import Gauge

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = 1.0
# A worker whose heartbeat is older than this is stuck: killed and replaced.
HEARTBEAT_TIMEOUT = 5.0
# A new worker must listen within this (it connects to both stores first).
START_TIMEOUT = 30.0
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 10.0
# A worker that listened this long before it died was healthy: its replacement starts at once.
STABLE_AFTER = 10.0
# With no worker serving, this many failed starts in a row make the supervisor give up.
START_ATTEMPTS = 5
POLL = 0.1
# Fault injection for tests and drills: the comma-separated start numbers (1 for the first
# worker started, counting replacements) that fail at once, or `all`.
FAIL_STARTS = "INTROSPECT_FAIL_WORKER_STARTS"

RESTARTS = Gauge(
    "introspect_worker_restarts",
    "Workers the supervisor replaced since it started (exited, or silent and killed)",
    multiprocess_mode="max",
)

_EXPECTED, _RESTARTS, _HEAD = 0, 1, 2


@dataclass(frozen=True)
class Board:
    """Numbers shared by the supervisor and its workers (a RawArray of doubles)."""

    cells: Any  # multiprocessing.sharedctypes.RawArray("d", ...): passed to spawned workers

    @classmethod
    def create(cls, context: SpawnContext, expected: int, slots: int) -> Board:
        """A zeroed board for `expected` workers and `slots` heartbeat slots."""
        board = cls(context.RawArray("d", _HEAD + slots))
        board.cells[_EXPECTED] = expected
        return board

    @property
    def slots(self) -> int:
        """How many heartbeat slots there are."""
        return len(self.cells) - _HEAD

    @property
    def expected(self) -> int:
        """How many workers the supervisor keeps running."""
        return int(self.cells[_EXPECTED])

    @property
    def restarts(self) -> int:
        """How many workers the supervisor replaced."""
        return int(self.cells[_RESTARTS])

    def count_restart(self) -> None:
        """One more replaced worker (the supervisor only writes this)."""
        self.cells[_RESTARTS] += 1

    def beat(self, slot: int) -> None:
        """A worker's heartbeat: it listens and its event loop runs."""
        self.cells[_HEAD + slot] = time.monotonic()

    def last_beat(self, slot: int) -> float:
        """When the worker in `slot` last beat (monotonic), 0.0 if it never did."""
        return float(self.cells[_HEAD + slot])

    def clear(self, slot: int) -> None:
        """Free a slot for a new worker."""
        self.cells[_HEAD + slot] = 0.0

    def alive(self) -> int:
        """How many workers beat within HEARTBEAT_TIMEOUT."""
        now = time.monotonic()
        return sum(
            1
            for slot in range(self.slots)
            if self.last_beat(slot) > 0 and now - self.last_beat(slot) < HEARTBEAT_TIMEOUT
        )

    async def beat_forever(self, slot: int) -> None:
        """A worker's heartbeat task (run it from its event loop once it listens)."""
        while True:
            self.beat(slot)
            RESTARTS.set(self.restarts)
            await asyncio.sleep(HEARTBEAT_INTERVAL)


def injected_start_failure(number: int) -> bool:
    """Whether start number `number` is told to fail (FAIL_STARTS; tests and drills only)."""
    wanted = os.environ.get(FAIL_STARTS, "")
    return wanted == "all" or str(number) in wanted.split(",")


def describe(exitcode: int | None) -> str:
    """A process's exit, in words: `status 1`, `signal SIGKILL`."""
    if exitcode is None:
        return "no status"
    if exitcode < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-exitcode).name}"
    return f"status {exitcode}"


@dataclass
class _Worker:
    proc: BaseProcess
    slot: int
    started: float
    ready_at: float | None = None
    # Told to stop (a rolling restart, the shutdown): its exit is no failure.
    retiring: bool = False
    # Killed for a missed heartbeat or a start too slow: its exit is a failure.
    killed_stuck: bool = False

    @property
    def pid(self) -> int:
        assert self.proc.pid is not None
        return self.proc.pid

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)


# Starts a worker process: (heartbeat slot, start number) -> the started process.
Starter = Callable[[int, int], BaseProcess]


class Supervisor:
    """Keeps `expected` workers running until told to stop (see the module docstring)."""

    def __init__(self, start: Starter, board: Board) -> None:
        self._start = start
        self.board = board
        self.workers: list[_Worker] = []
        self.started = 0
        self.failures = 0
        self._next_start = 0.0
        self._stopping = False
        self._hup = False
        # A rolling restart: the old workers still to replace, and the new one starting.
        self._old: list[_Worker] = []
        self._incoming: _Worker | None = None
        self._retired: _Worker | None = None

    # --- signals (handlers only set flags; the loop acts) --------------------------------

    def stop(self, _signum: int = 0, _frame: object = None) -> None:
        """Drain every worker and exit (SIGINT, SIGTERM)."""
        self._stopping = True

    def restart(self, _signum: int = 0, _frame: object = None) -> None:
        """Restart every worker, one at a time (SIGHUP)."""
        self._hup = True

    # --- the loop ------------------------------------------------------------------------

    def run(self) -> int:
        """Supervise until stopped (0) or until workers cannot start at all (1)."""
        status = 0
        stopped = False
        while True:
            if self._stopping and not stopped:
                stopped = True
                for worker in self.workers:
                    worker.retiring = True
                    worker.signal(signal.SIGTERM)
            if stopped and not self.workers:
                return status
            if not stopped:
                if self._gave_up():
                    log.error(
                        "workers cannot start: %d starts in a row failed and none is serving;"
                        " stopping",
                        self.failures,
                    )
                    status = 1
                    self._stopping = True
                    continue
                self._fill()
                self._roll()
            sentinels = [w.proc.sentinel for w in self.workers]
            if sentinels:
                wait(sentinels, timeout=POLL)
            else:
                time.sleep(POLL)
            self._reap()
            self._watch()

    def _gave_up(self) -> bool:
        serving = any(w.ready_at is not None for w in self.workers)
        return self.failures >= START_ATTEMPTS and not serving

    def _spawn(self) -> _Worker | None:
        used = {w.slot for w in self.workers}
        free = [slot for slot in range(self.board.slots) if slot not in used]
        if not free:
            return None
        self.started += 1
        self.board.clear(free[0])
        worker = _Worker(self._start(free[0], self.started), free[0], time.monotonic())
        self.workers.append(worker)
        return worker

    def _fill(self) -> None:
        """Start workers until `expected` run (not counting those told to stop)."""
        running = sum(1 for w in self.workers if not w.retiring and w is not self._incoming)
        missing = self.board.expected - running
        if missing <= 0 or time.monotonic() < self._next_start:
            return
        first = self.started == 0
        for _ in range(missing if first else 1):  # replacements one at a time (backoff)
            if self._spawn() is None:
                return
            if not first:
                self.board.count_restart()

    def _reap(self) -> None:
        """Forget exited workers; schedule the replacement of those that were not told to stop."""
        now = time.monotonic()
        for worker in [w for w in self.workers if not w.proc.is_alive()]:
            self.workers.remove(worker)
            self.board.clear(worker.slot)
            worker.proc.join()
            status = describe(worker.proc.exitcode)
            if self._stopping or worker.retiring:
                log.info("worker %d exited with %s", worker.pid, status)
                continue
            if worker is self._incoming:
                self._incoming = None
                self._old = []
                log.error(
                    "rolling restart stopped: the new worker %d exited with %s;"
                    " the old workers keep serving",
                    worker.pid,
                    status,
                )
                continue
            healthy = worker.ready_at is not None and now - worker.ready_at >= STABLE_AFTER
            self.failures = 0 if healthy else self.failures + 1
            delay = 0.0 if healthy else min(BACKOFF_FIRST * 2 ** (self.failures - 1), BACKOFF_MAX)
            self._next_start = now + delay
            log.error(
                "worker %d exited with %s; replacing it%s",
                worker.pid,
                status,
                f" in {delay:.1f} s ({self.failures} failed in a row)" if delay else "",
            )

    def _watch(self) -> None:
        """Note workers that started listening; kill those stuck or too slow to start."""
        now = time.monotonic()
        for worker in self.workers:
            beat = self.board.last_beat(worker.slot)
            if worker.ready_at is None:
                if beat > 0:
                    worker.ready_at = now
                elif now - worker.started > START_TIMEOUT and not worker.killed_stuck:
                    log.error(
                        "worker %d not listening %.0f s after its start; killing it",
                        worker.pid,
                        START_TIMEOUT,
                    )
                    self._kill(worker)
            elif now - beat > HEARTBEAT_TIMEOUT and not worker.killed_stuck:
                log.error(
                    "worker %d silent for %.1f s (no heartbeat); killing it", worker.pid, now - beat
                )
                self._kill(worker)

    def _kill(self, worker: _Worker) -> None:
        worker.killed_stuck = True
        worker.signal(signal.SIGKILL)

    # --- SIGHUP: one worker at a time ------------------------------------------------------

    def _roll(self) -> None:
        if self._hup:
            self._hup = False
            if self._old or self._incoming is not None:
                log.warning("SIGHUP: a rolling restart is already under way")
            else:
                self._old = [w for w in self.workers if not w.retiring]
                log.info("SIGHUP: restarting %d worker(s) one at a time", len(self._old))
        if self._retired is not None:
            if self._retired in self.workers:
                return  # still draining
            self._retired = None
        incoming = self._incoming
        if incoming is not None:
            if incoming.ready_at is None:
                return
            self._incoming = None
            old = self._old.pop(0)
            if old in self.workers:
                log.info("worker %d listens; draining worker %d", incoming.pid, old.pid)
                old.retiring = True
                old.signal(signal.SIGTERM)
                self._retired = old
            if not self._old:
                log.info("rolling restart done")
            return
        while self._old and self._old[0] not in self.workers:
            self._old.pop(0)  # died meanwhile: already replaced
        if self._old:
            self._incoming = self._spawn()
