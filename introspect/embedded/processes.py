"""The servers' processes: liveness by working directory, bounded signals, environment, ports.

A pid counts as a server's only if the process still runs with that server's directory as
its working directory (both servers chdir there; a zombie or a recycled pid has none or
another). Children get only the variables they need from our environment.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from introspect.embedded.files import EmbeddedError

HOST = "127.0.0.1"

Signals = tuple[tuple[signal.Signals, float], ...]

_HAS_PROC = os.path.isdir("/proc/self")
# Valkey processes this interpreter started: kept so they can be reaped (no zombies, no
# "subprocess is still running" ResourceWarning when a Popen is collected).
children: dict[int, subprocess.Popen[bytes]] = {}


def runs_in(pid: int, directory: Path) -> bool:
    """Whether `pid` is a live (non-zombie) process whose working directory is `directory`."""
    child = children.get(pid)
    if child is not None and child.poll() is not None:
        del children[pid]
        return False
    if pid <= 0:
        return False
    if not _HAS_PROC:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        return os.readlink(f"/proc/{pid}/cwd") == str(directory)
    except OSError:  # gone, a zombie (no cwd), or not ours to inspect (so not our server)
        return False


def wait_gone(directory: Path, timeout: float) -> list[int]:
    """Wait for the processes working in `directory` to exit; those still there."""
    deadline = time.monotonic() + timeout
    while True:
        left = [pid for pid in _pids_in(directory) if pid != os.getpid()]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


def _pids_in(directory: Path) -> list[int]:
    if not _HAS_PROC:
        return []
    return [
        int(entry.name)
        for entry in os.scandir("/proc")
        if entry.name.isdigit() and runs_in(int(entry.name), directory)
    ]


def terminate(pid: int, directory: Path, steps: Signals) -> None:
    """Send each signal in turn, waiting its bound for the process to leave `directory`."""
    for sig, wait in steps:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not runs_in(pid, directory):
                return
            time.sleep(0.02)
    raise EmbeddedError(f"process {pid} in {directory} survived SIGKILL")


# What the servers and PostgreSQL's tools need of our environment (besides LC_*).
_PASSED_ENV = frozenset({"PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "LD_LIBRARY_PATH"})


def child_env() -> dict[str, str]:
    """Our environment for a child server or tool: what it needs, never a secret or PG* variable."""
    return {
        key: value
        for key, value in os.environ.items()
        if key in _PASSED_ENV or key.startswith("LC_")
    }


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0):
            return True
    except OSError:
        return False
