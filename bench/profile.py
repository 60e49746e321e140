"""Where a worker's time goes: py-spy samples one server worker during a scenario.

`--profile` records each measured scenario of the server with py-spy
(`--nonblocking`, so the worker is not paused; sampling still costs it a
little, so profiled figures run a bit lower). The raw stacks are kept next
to the results (for flamegraph.pl or speedscope), and summarized in text:
on-CPU time by package and the functions with the most self time.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

RATE = 200  # samples per second
TOP = 20


@dataclass(frozen=True, slots=True)
class Recording:
    """A py-spy run in progress."""

    name: str
    pid: int
    output: Path
    proc: subprocess.Popen[bytes]
    timeout: float


def _executable() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def _frame(frame: str) -> tuple[str, str]:
    """(function and file without line, package) of one `func (path/file.py:line)` frame."""
    name, _, where = frame.rpartition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    package = path.split("/", 1)[0] if "/" in path else path.removesuffix(".py")
    return f"{name} ({path})", package


def summarize(raw: str) -> tuple[int, Counter[str], Counter[str], Counter[str]]:
    """Samples, self samples by package, self samples by function, inclusive by function."""
    by_package: Counter[str] = Counter()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";")]
        total += count
        leaf, package = frames[-1]
        own[leaf] += count
        by_package[package] += count
        for function in {f for f, _ in frames}:
            inclusive[function] += count
    return total, by_package, own, inclusive


class Profiler:
    """Records scenarios with py-spy into `out`, if py-spy is installed."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.executable = _executable()

    def start(self, name: str, pid: int, duration: float) -> Recording | None:
        """Start sampling `pid` for `duration` seconds (None without py-spy)."""
        if self.executable is None:
            return None
        output = self.out / f"profile-{name}.raw"
        command = [
            self.executable,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, int(duration))),
            "--rate",
            str(RATE),
            "--nonblocking",
            "--format",
            "raw",
            "--output",
            str(output),
        ]
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return Recording(name, pid, output, proc, duration + 30)

    def finish(self, recording: Recording) -> str:
        """Wait for the recording; write its text summary; a one-line digest for the report."""
        try:
            recording.proc.wait(recording.timeout)
        except subprocess.TimeoutExpired:
            recording.proc.kill()
            recording.proc.wait()
        if not recording.output.exists():
            return "profile: py-spy recorded nothing (is ptrace allowed?)"
        total, packages, own, inclusive = summarize(recording.output.read_text())
        if not total:
            return "profile: no samples"

        def share(counter: Counter[str], n: int) -> list[str]:
            return [f"{100 * c / total:5.1f} %  {k}" for k, c in counter.most_common(n)]

        text = [
            f"py-spy, worker {recording.pid}, scenario {recording.name}: {total} on-CPU samples",
            "",
            "self time by package:",
            *share(packages, TOP),
            "",
            "self time by function:",
            *share(own, TOP),
            "",
            "inclusive time by function:",
            *share(inclusive, TOP),
        ]
        summary = self.out / f"profile-{recording.name}.txt"
        summary.write_text("\n".join(text) + "\n")
        top = ", ".join(f"{k} {100 * c / total:.0f} %" for k, c in packages.most_common(6))
        return f"profile (self time by package): {top}; see {summary.name}"
