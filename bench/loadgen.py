"""The built-in load generator: several processes of asyncio, closed or open loop.

Used when `wrk` is not installed, for open-loop runs when there is no C
compiler for bench/openloop.c (or with `--generator builtin`), and for the
untimed passes that fill caches. Every process reads the
same body file and takes every P-th line starting at its own index, so with
`wrap=False` each body is sent exactly once across all processes.

* Closed loop: a fixed number of connections, each sending its next request
  as soon as the previous answer arrived. Latency is measured from send to
  answer.
* Open loop: requests are due at a fixed offered rate whatever the server
  does; latency is measured from the moment a request was due, so time spent
  waiting for a free connection (queueing behind a slow server) counts, and
  the percentiles stay honest under load (no coordinated omission).
"""

from __future__ import annotations

import array
import asyncio
import multiprocessing
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from multiprocessing.sharedctypes import SynchronizedArray
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from bench.http import Connection, HttpError, form_request, request_head

PERCENTILES = (50.0, 75.0, 90.0, 99.0, 99.9)
READY_TIMEOUT = 30.0
GRACE = 10.0


@dataclass(frozen=True, slots=True)
class Load:
    """What to send, where, and how hard."""

    host: str
    port: int
    path: str
    headers: dict[str, str]
    bodies: Path  # one form body per line
    connections: int
    duration: float
    rate: float | None = None  # offered req/s for an open loop; None: closed loop
    wrap: bool = True  # False: send each body at most once and stop when all are sent
    # Closed loop: start this many bodies into the file (where an earlier part of the same
    # load stopped: `Bench._paired`), wrapping.
    skip: int = 0
    timeout: float = 5.0


@dataclass(slots=True)
class Outcome:
    """What a load run measured; latencies in milliseconds."""

    ok: int  # 2xx answers
    errors: dict[str, int]
    duration: float
    percentiles: dict[str, float]
    generator_cpu: float  # CPU seconds the generator itself used
    tool: str
    samples: list[int] = field(default_factory=list)  # each latency (us), where the tool gives them

    @property
    def rate(self) -> float:
        """Successful answers per second."""
        return self.ok / self.duration if self.duration > 0 else 0.0

    @property
    def error_count(self) -> int:
        """Every failed request: non-2xx, socket errors and timeouts."""
        return sum(self.errors.values())


def pooled(outcomes: Sequence[Outcome]) -> Outcome:
    """Several runs of one load as one: counts, time and CPU summed, latencies pooled (from
    runs that report percentiles only, as wrk's, each the highest of the runs': the pooled
    percentile is at most that)."""
    errors: dict[str, int] = {}
    for one in outcomes:
        for kind, count in one.errors.items():
            errors[kind] = errors.get(kind, 0) + count
    samples = [us for one in outcomes for us in one.samples]
    bounds = {
        key: max(one.percentiles[key] for one in outcomes)
        for key in outcomes[0].percentiles
        if all(key in one.percentiles for one in outcomes)
    }
    return Outcome(
        ok=sum(one.ok for one in outcomes),
        errors=errors,
        duration=sum(one.duration for one in outcomes),
        percentiles=percentiles_ms(samples) if samples else bounds,
        generator_cpu=sum(one.generator_cpu for one in outcomes),
        tool="; ".join(dict.fromkeys(one.tool for one in outcomes)),
        samples=samples,
    )


def percentiles_ms(latencies_us: list[int]) -> dict[str, float]:
    """The PERCENTILES and the max of a list of microsecond latencies, in ms."""
    if not latencies_us:
        return {}
    ordered = sorted(latencies_us)
    last = len(ordered) - 1
    out = {f"p{p:g}": ordered[min(last, int(p / 100 * len(ordered)))] / 1000 for p in PERCENTILES}
    out["max"] = ordered[-1] / 1000
    return out


class _Worker:
    """One generator process: its connections, its share of the bodies, its counters."""

    def __init__(self, load: Load, index: int, processes: int, progress: SynchronizedArray[int]):
        self.load = load
        self.index = index
        self.progress = progress
        lines = load.bodies.read_bytes().splitlines()
        # Unique bodies are dealt out; a short list that wraps anyway is every process's.
        self.bodies = lines[index::processes] if len(lines) >= processes or not load.wrap else lines
        share, extra = divmod(load.connections, processes)
        self.connections = max(1, share + (1 if index < extra else 0))
        self.rate = load.rate / processes if load.rate else None
        self.head = request_head("POST", load.host, load.port, load.path, load.headers)
        self.latencies = array.array("Q")
        self.errors: dict[str, int] = {}
        self.ok = 0
        self.next = (load.skip // processes) % len(self.bodies) if self.bodies else 0

    def _error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def _take(self) -> bytes | None:
        if self.next >= len(self.bodies):
            if not self.load.wrap or not self.bodies:
                return None
            self.next = 0
        body = self.bodies[self.next]
        self.next += 1
        return form_request(self.head, body)

    async def _connect(self) -> Connection:
        while True:
            try:
                return await Connection.open(self.load.host, self.load.port)
            except OSError:
                self._error("connect")
                await asyncio.sleep(0.01)

    async def _send(self, conn: Connection, request: bytes, started: float) -> Connection:
        """Send one request; count and time it; return a usable connection."""
        try:
            status, _ = await asyncio.wait_for(conn.send(request), self.load.timeout)
        except TimeoutError:
            self._error("timeout")
            conn.close()
            return await self._connect()
        except (HttpError, OSError):
            self._error("io")
            conn.close()
            return await self._connect()
        self.latencies.append(int((time.perf_counter() - started) * 1e6))
        if 200 <= status < 300:
            self.ok += 1
        else:
            self._error(f"status {status}")
        self.progress[self.index] += 1
        return conn if not conn.closed else await self._connect()

    async def _closed_loop(self, conns: list[Connection], end: float) -> None:
        async def one(conn: Connection) -> None:
            while time.perf_counter() < end:
                request = self._take()
                if request is None:
                    return
                conn = await self._send(conn, request, time.perf_counter())
            conn.close()

        await asyncio.gather(*(one(c) for c in conns))

    async def _open_loop(self, conns: list[Connection], end: float) -> None:
        assert self.rate is not None
        idle: asyncio.Queue[Connection] = asyncio.Queue()
        for conn in conns:
            idle.put_nowait(conn)

        async def one(request: bytes, due: float) -> None:
            conn = await idle.get()
            idle.put_nowait(await self._send(conn, request, due))

        tasks: set[asyncio.Task[None]] = set()
        interval = 1.0 / self.rate
        start = time.perf_counter()
        sent = 0
        while True:
            due = start + sent * interval
            if due >= end:
                break
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            request = self._take()
            if request is None:
                break
            task = asyncio.get_running_loop().create_task(one(request, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        if tasks:
            _done, late = await asyncio.wait(tasks, timeout=self.load.timeout)
            for task in late:
                task.cancel()
                self._error("timeout")
        while not idle.empty():
            idle.get_nowait().close()

    async def run(self, ready: Pipe, go: Event) -> dict[str, Any]:
        conns = [await self._connect() for _ in range(self.connections)]
        ready.send("ready")
        go.wait(READY_TIMEOUT)
        cpu = time.process_time()
        started = time.perf_counter()
        end = started + self.load.duration
        if self.rate is None:
            await self._closed_loop(conns, end)
        else:
            await self._open_loop(conns, end)
        return {
            "ok": self.ok,
            "errors": self.errors,
            "duration": time.perf_counter() - started,
            "cpu": time.process_time() - cpu,
            "latencies": self.latencies.tobytes(),
        }


def _process_main(
    load: Load,
    index: int,
    processes: int,
    progress: SynchronizedArray[int],
    pipe: Pipe,
    go: Event,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    worker = _Worker(load, index, processes, progress)
    pipe.send(asyncio.run(worker.run(pipe, go)))


def run(
    load: Load, processes: int, on_progress: Callable[[float, int], None] | None = None
) -> Outcome:
    """Drive `load` from `processes` processes; `on_progress(elapsed, answers)` twice a second."""
    context = multiprocessing.get_context("spawn")
    progress = context.Array("q", processes, lock=False)
    go = context.Event()
    pipes: list[Pipe] = []
    procs = []
    results: dict[int, dict[str, Any]] = {}
    try:
        for index in range(processes):
            parent, child = context.Pipe()
            proc = context.Process(
                target=_process_main, args=(load, index, processes, progress, child, go)
            )
            proc.start()
            pipes.append(parent)
            procs.append(proc)
        ready_by = time.perf_counter() + READY_TIMEOUT
        for pipe, proc in zip(pipes, procs, strict=True):
            while not pipe.poll(0.1):
                if not proc.is_alive() or time.perf_counter() > ready_by:
                    raise RuntimeError("a load generator process did not get ready")
            pipe.recv()
        go.set()
        started = time.perf_counter()
        deadline = started + load.duration + load.timeout + GRACE
        while len(results) < processes:
            for index, pipe in enumerate(pipes):
                if index not in results and pipe.poll(0.5 / processes):
                    results[index] = pipe.recv()
                elif index not in results and not procs[index].is_alive() and not pipe.poll():
                    raise RuntimeError("a load generator process died; see its traceback above")
            if on_progress is not None:
                on_progress(time.perf_counter() - started, sum(progress))
            if time.perf_counter() > deadline:
                raise RuntimeError("the load generator did not finish in time")
    finally:
        for proc in procs:
            if len(results) < processes:  # interrupted or failed: no need to wait for them
                proc.terminate()
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join()
    latencies: list[int] = []
    errors: dict[str, int] = {}
    for result in results.values():
        lat = array.array("Q")
        lat.frombytes(result["latencies"])
        latencies.extend(lat)
        for kind, count in result["errors"].items():
            errors[kind] = errors.get(kind, 0) + count
    return Outcome(
        ok=sum(r["ok"] for r in results.values()),
        errors=errors,
        duration=max(r["duration"] for r in results.values()),
        percentiles=percentiles_ms(latencies),
        generator_cpu=sum(r["cpu"] for r in results.values()),
        tool=f"builtin x{processes}",
        samples=latencies,
    )
