"""Where a worker's event loop spends its time, slice by slice: `python -m bench --slices`.

A request waits for whatever the event loop runs before it. This records,
in each server worker, the CPU time (`time.thread_time`, which other
processes on the machine do not inflate) and the wall time of every
callback the loop runs (a task's step, a socket's read), by name, and of
every loop iteration (all the callbacks run between two polls: when many
requests arrive together, the last waits for all the others), and each
collection of the cyclic GC by generation. A slice long in CPU time is
work of the worker's own (a cause to remove); long in wall time only, the
worker was not on a core (the machine's load).

The server is started with `bench/slices_site` first on PYTHONPATH: its
`sitecustomize` calls `install` in every process when SLICES_ENV names a
folder. The workers then run on asyncio's own loop instead of uvloop, whose
callbacks are out of Python's reach: absolute figures are higher than in a
normal run, the comparison between callbacks is what counts. SIGUSR1
writes what was recorded since the previous SIGUSR1 to the folder and
starts over; the bench sends it just before and just after each scenario.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

SLICES_ENV = "INTROSPECT_BENCH_SLICES"
SITE = Path(__file__).with_name("slices_site")
# Iterations and callbacks longer than this in CPU time are listed one by one.
LONG_MS = 2.0
BUCKET_MS = 0.1  # of the iteration histograms
BUCKETS = 100  # the last one holds everything from 9.9 ms on


def _fresh() -> dict[str, Any]:
    return {
        "callbacks": {},  # name -> [count, cpu s, max cpu s, max wall s]
        "iterations": [0] * BUCKETS,  # by CPU time
        "iterations_wall": [0] * BUCKETS,
        "long": [],  # [cpu ms, wall ms, callbacks, [[cpu ms, name], ...]]
        "gc": {},  # generation -> [count, cpu s, max cpu s]
    }


def _bucket(seconds: float) -> int:
    return min(BUCKETS - 1, int(seconds * 1000 / BUCKET_MS))


def _name(callback: Any) -> str:
    owner = getattr(callback, "__self__", None)
    if isinstance(owner, asyncio.Task):
        coro = owner.get_coro()
        return "task " + getattr(coro, "__qualname__", type(coro).__name__)
    return str(getattr(callback, "__qualname__", None) or type(callback).__name__)


def install(out: str) -> None:
    """Record slices in this process from now on; SIGUSR1 writes them under `out`."""
    import asyncio.base_events
    import asyncio.events

    sys.modules["uvloop"] = None  # type: ignore[assignment]  # introspect.server falls back
    state = _fresh()
    now: dict[str, Any] = {"cpu": 0.0, "wall": 0.0, "n": 0, "names": []}
    cpu_clock, wall_clock = time.thread_time, time.perf_counter
    run_handle = asyncio.events.Handle._run
    run_once = asyncio.base_events.BaseEventLoop._run_once

    def timed_run(handle: asyncio.events.Handle) -> None:
        cpu, wall = cpu_clock(), wall_clock()
        run_handle(handle)
        cpu, wall = cpu_clock() - cpu, wall_clock() - wall
        name = _name(handle._callback)  # type: ignore[attr-defined]
        seen = state["callbacks"].setdefault(name, [0, 0.0, 0.0, 0.0])
        seen[0] += 1
        seen[1] += cpu
        seen[2] = max(seen[2], cpu)
        seen[3] = max(seen[3], wall)
        now["cpu"] += cpu
        now["wall"] += wall
        now["n"] += 1
        if cpu * 1000 >= LONG_MS / 10:
            now["names"].append([round(cpu * 1000, 2), name])

    def timed_once(loop: asyncio.base_events.BaseEventLoop) -> None:
        now.update(cpu=0.0, wall=0.0, n=0, names=[])
        run_once(loop)
        if now["n"]:
            state["iterations"][_bucket(now["cpu"])] += 1
            state["iterations_wall"][_bucket(now["wall"])] += 1
            if now["cpu"] * 1000 >= LONG_MS and len(state["long"]) < 1000:
                cpu_ms, wall_ms = round(now["cpu"] * 1000, 2), round(now["wall"] * 1000, 2)
                state["long"].append([cpu_ms, wall_ms, now["n"], now["names"][:5]])

    started = [0.0]

    def collection(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = cpu_clock()
            return
        cpu = cpu_clock() - started[0]
        seen = state["gc"].setdefault(str(info["generation"]), [0, 0.0, 0.0])
        seen[0] += 1
        seen[1] += cpu
        seen[2] = max(seen[2], cpu)

    def dump(_signum: int, _frame: object) -> None:
        path = Path(out) / f"slices-{os.getpid()}-{time.time_ns()}.json"
        path.write_text(json.dumps({"pid": os.getpid(), **state}))
        state.update(_fresh())

    asyncio.events.Handle._run = timed_run  # type: ignore[method-assign]
    asyncio.base_events.BaseEventLoop._run_once = timed_once  # type: ignore[method-assign]
    gc.callbacks.append(collection)
    signal.signal(signal.SIGUSR1, dump)


def newest(out: Path, pid: int) -> dict[str, Any] | None:
    """The last dump of worker `pid` under `out`, or None."""
    dumps = sorted(out.glob(f"slices-{pid}-*.json"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    return json.loads(dumps[-1].read_text()) if dumps else None


def _quantile(histogram: list[int], q: float) -> float:
    """The upper bound (ms) of the bucket holding quantile `q` of an iteration histogram."""
    total = sum(histogram)
    seen = 0
    for index, count in enumerate(histogram):
        seen += count
        if seen >= q * total:
            return (index + 1) * BUCKET_MS
    return BUCKETS * BUCKET_MS


def summarize(data: dict[str, Any], top: int = 15) -> list[str]:
    """One worker's slices as text: iterations, the callbacks by CPU, GC, the longest iterations."""
    iterations = data["iterations"]
    count = sum(iterations)
    if not count:
        return [f"worker {data['pid']}: no loop iteration ran a callback"]
    cpu = data["callbacks"]
    total = sum(seen[1] for seen in cpu.values())
    q = {k: _quantile(iterations, k) for k in (0.5, 0.99, 0.999)}
    wall = {k: _quantile(data["iterations_wall"], k) for k in (0.5, 0.99, 0.999)}
    lines = [
        f"worker {data['pid']}: {count:,} loop iterations, {total * 1000:,.0f} ms of callback CPU",
        "iteration CPU ms p50 / p99 / p99.9 (bucket bounds): "
        + " / ".join(f"{v:.1f}" for v in q.values())
        + "; wall: "
        + " / ".join(f"{v:.1f}" for v in wall.values()),
        "",
        f"{'callback':60s} {'count':>8s} {'cpu ms':>9s} {'share':>6s} {'mean us':>8s}"
        f" {'max cpu ms':>10s} {'max wall ms':>11s}",
    ]
    for name, (n, seconds, most, most_wall) in sorted(cpu.items(), key=lambda kv: -kv[1][1])[:top]:
        share = 100 * seconds / total if total else 0.0
        lines.append(
            f"{name[:60]:60s} {n:8,d} {seconds * 1000:9.1f} {share:5.1f}% {seconds / n * 1e6:8.0f}"
            f" {most * 1000:10.2f} {most_wall * 1000:11.2f}"
        )
    lines.append("")
    for generation, (n, seconds, most) in sorted(data["gc"].items()):
        lines.append(
            f"GC generation {generation}: {n} collections, {seconds * 1000:.1f} ms CPU,"
            f" {seconds / n * 1e6:.0f} us mean, {most * 1000:.2f} ms max"
        )
    longest = sorted(data["long"], key=lambda item: -item[0])[:top]
    if longest:
        lines += ["", f"iterations of {LONG_MS:g} ms CPU or more: {len(data['long'])}; longest:"]
        lines += [
            f"  {cpu_ms:.2f} ms CPU, {wall_ms:.2f} ms wall, {n} callbacks: "
            + ", ".join(f"{name} {ms:.2f}" for ms, name in names)
            for cpu_ms, wall_ms, n, names in longest
        ]
    return lines
