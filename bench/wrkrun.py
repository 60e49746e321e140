"""Closed-loop load with `wrk` and bench/wrk.lua, when wrk is installed.

wrk (C, epoll) costs far less CPU per request than any Python client, which
matters when the generator shares the machine's cores with the server. It
has no fixed-rate mode: open-loop runs use bench/openloop.c (bench/openloop.py).
"""

from __future__ import annotations

import json
import math
import resource
import shutil
from collections.abc import Callable
from pathlib import Path

from bench.loadgen import Load, Outcome
from bench.procs import run_bounded

SCRIPT = Path(__file__).with_name("wrk.lua")
MARKER = "BENCH-JSON "


def available() -> str | None:
    """The wrk executable, or None."""
    return shutil.which("wrk")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(
    load: Load, threads: int = 1, on_progress: Callable[[float, int | None], None] | None = None
) -> Outcome:
    """Drive `load` (closed loop) with wrk; `on_progress(elapsed, None)` twice a second."""
    executable = available()
    if executable is None:
        raise RuntimeError("wrk is not installed")
    if load.rate is not None or not load.wrap:
        raise ValueError("wrk drives closed, wrapping loads only")
    seconds = max(1, math.ceil(load.duration))  # wrk takes whole seconds
    command = [executable, f"-t{threads}", f"-c{load.connections}", f"-d{seconds}s"]
    command += [f"--timeout={load.timeout:g}s", "-s", str(SCRIPT)]
    for name, value in load.headers.items():
        command += ["-H", f"{name}: {value}"]
    command += [f"http://{load.host}:{load.port}{load.path}", "--", str(load.bodies), str(threads)]
    command.append(str(load.skip))
    cpu = _children_cpu()
    code, out, err = run_bounded(command, seconds + load.timeout + 30, "wrk", on_progress)
    line = next((x for x in out.splitlines() if x.startswith(MARKER)), None)
    if code != 0 or line is None:
        raise RuntimeError(f"wrk failed ({code}): {(err or out).strip()[-500:]}")
    data = json.loads(line[len(MARKER) :])
    errors = {
        kind: data[kind] for kind in ("connect", "read", "write", "status", "timeout") if data[kind]
    }
    return Outcome(
        ok=data["requests"] - data["status"],
        errors=errors,
        duration=data["duration_us"] / 1e6,
        percentiles={k: v / 1000 for k, v in data["latency_us"].items()},
        generator_cpu=_children_cpu() - cpu,
        tool=f"wrk -t{threads}",
    )
