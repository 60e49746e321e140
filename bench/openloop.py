"""Open-loop load with bench/openloop.c, a small C generator compiled here on first use.

The built-in generator (asyncio, bench/loadgen.py) costs about half a core at
a few thousand requests per second and its own scheduling delays showed up as
the ceiling's p99. openloop.c sends each request at its due time on a
kept-alive connection from one epoll thread and writes every latency, measured
from the due time (no coordinated omission), to a file read back here. It is
compiled with the system's C compiler into build/bench/ beside the source
tree, under a name that carries the source's hash, so an edited source is
rebuilt and nothing compiled is ever committed.
"""

from __future__ import annotations

import array
import hashlib
import json
import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.loadgen import Load, Outcome, percentiles_ms
from bench.procs import run_bounded

SOURCE = Path(__file__).with_name("openloop.c")
BUILD = Path(__file__).resolve().parent.parent / "build" / "bench"
MARKER = "BENCH-JSON "
# A connection per request in flight: the fixed pool, opened before the clock starts, holds
# POOL_SECONDS of the offered rate in flight at once (at least the load's connections); a
# request that finds none idle waits for one, counted as held (its latency still runs from
# its due time). The pool does not grow: connecting in the middle of a stall adds accepts to
# the server's work just when it is behind, which turned a short stall into seconds.
POOL_SECONDS = 0.05
CFLAGS = ("-O2", "-Wall", "-Wextra", "-Werror", "-std=gnu11")


def compiler() -> str | None:
    """The C compiler (cc or gcc), or None."""
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")


def build() -> Path:
    """The compiled generator, compiling it first if this source was never compiled here."""
    source = SOURCE.read_bytes()
    binary = BUILD / f"openloop-{hashlib.sha256(source).hexdigest()[:12]}"
    if binary.exists():
        return binary
    cc = compiler()
    if cc is None:
        raise RuntimeError("no C compiler (cc or gcc) to build bench/openloop.c")
    BUILD.mkdir(parents=True, exist_ok=True)
    partial = binary.with_suffix(f".{os.getpid()}.tmp")
    done = subprocess.run(
        [cc, *CFLAGS, "-o", str(partial), str(SOURCE)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"compiling bench/openloop.c failed: {done.stderr.strip()[-800:]}")
    partial.replace(binary)  # atomic: a concurrent build never runs a half-written file
    for stale in BUILD.glob("openloop-*"):
        if stale != binary and not stale.name.endswith(".tmp"):
            stale.unlink(missing_ok=True)  # built from an older source
    return binary


def schedule(rate: float, count: int) -> list[int]:
    """The generator's first `count` due times at `rate`, in ns from the start."""
    out = subprocess.run(
        [str(build()), "--schedule", str(count), "--rate", f"{rate!r}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [int(line) for line in out.split()]


# Which idle connection of the pool a request goes on (see openloop.c): the one idle the
# longest, so that each carries an even share, or the most recently idle (one client's pool).
REUSE = ("oldest", "newest")


def command(binary: Path, load: Load, latencies: Path, reuse: str = "oldest") -> list[str]:
    """The generator's command line for `load`, writing latencies to `latencies`."""
    if reuse not in REUSE:
        raise ValueError(f"reuse must be one of {', '.join(REUSE)}")
    if load.rate is None or not load.wrap:
        raise ValueError("openloop drives open-loop, wrapping loads only")
    argv = [str(binary), "--host", load.host, "--port", str(load.port), "--path", load.path]
    for name, value in load.headers.items():
        argv += ["-H", f"{name}: {value}"]
    argv += ["--bodies", str(load.bodies), "--latencies", str(latencies)]
    argv += ["--rate", f"{load.rate!r}", "--duration", f"{load.duration!r}"]
    pool = max(load.connections, math.ceil(load.rate * POOL_SECONDS))
    argv += ["--timeout", f"{load.timeout!r}", "--conns", str(pool), "--reuse", reuse]
    return argv


def outcome(stdout: str, latencies: bytes) -> Outcome:
    """What one run measured, from its `BENCH-JSON` line and its latency file's bytes."""
    line = next((x for x in stdout.splitlines() if x.startswith(MARKER)), None)
    if line is None:
        raise RuntimeError(f"openloop printed no result: {stdout.strip()[-300:]!r}")
    data: dict[str, Any] = json.loads(line[len(MARKER) :])
    values = array.array("I")
    values.frombytes(latencies)
    samples = values.tolist()
    errors = {kind: data[kind] for kind in ("connect", "io", "timeout") if data[kind]}
    errors |= {f"status {code}": n for code, n in data["status"].items()}
    # Requests held back by the pool, and sends more than 1 ms after their due time (the
    # generator itself late), bend the schedule: the tool's name says so when they happen.
    notes = [f"{data['held']} held by the pool of {data['connections']}"] if data["held"] else []
    notes += [f"{data['late_1ms']} sent >1 ms late"] if data["late_1ms"] else []
    return Outcome(
        ok=data["ok"],
        errors=errors,
        duration=data["duration_us"] / 1e6,
        percentiles=percentiles_ms(samples),
        generator_cpu=data["cpu_us"] / 1e6,
        tool=", ".join(["openloop (C)", *notes]),
        samples=samples,
    )


def run(
    load: Load,
    on_progress: Callable[[float, int | None], None] | None = None,
    reuse: str = "oldest",
) -> Outcome:
    """Drive `load` open loop with the C generator; `on_progress(elapsed, None)` twice a second."""
    binary = build()
    with tempfile.TemporaryDirectory(prefix="openloop-") as tmp:
        latencies = Path(tmp) / "latencies.u32"
        budget = load.duration + load.timeout + 30
        code, out, err = run_bounded(
            command(binary, load, latencies, reuse), budget, "openloop", on_progress
        )
        if code != 0:
            raise RuntimeError(f"openloop failed ({code}): {err.strip()[-500:]}")
        return outcome(out, latencies.read_bytes())
