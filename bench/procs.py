"""Processes the bench starts, and what /proc says about them (Linux).

Every service runs in its own session, so a Ctrl-C at the terminal reaches
only the bench, which then stops them in order: SIGTERM, a bounded wait,
then SIGKILL to the whole process group it created. CPU and memory come
from /proc/<pid>/stat and /proc/<pid>/status; which worker holds a given
client connection comes from /proc/net/tcp and the workers' open fds.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.http import Connection, HttpError

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
STOP_TIMEOUT = 20.0
_LISTEN = "0A"
_ESTABLISHED = "01"


def run_bounded(
    command: Sequence[str],
    budget: float,
    name: str,
    on_progress: Callable[[float, int | None], None] | None = None,
) -> tuple[int, str, str]:
    """Run a load tool to completion: (exit status, stdout, stderr). `on_progress(elapsed,
    None)` twice a second; killed, and RuntimeError, past `budget` seconds."""
    started = time.perf_counter()
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            while proc.poll() is None:
                if on_progress is not None:
                    on_progress(time.perf_counter() - started, None)
                if time.perf_counter() > started + budget:
                    raise RuntimeError(f"{name} did not finish in time")
                time.sleep(0.5)
            out, err = proc.communicate()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return proc.returncode, out, err


def cli(env: dict[str, str], *args: str) -> dict[str, str]:
    """`python -m introspect.cli ARGS --json` with `env`, its answer parsed (CalledProcessError
    when it fails, killed past two minutes)."""
    ran = subprocess.run(
        [sys.executable, "-m", "introspect.cli", *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    made: dict[str, str] = json.loads(ran.stdout)
    return made


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tcp_entries() -> list[tuple[int, int, str, int]]:
    """(local port, remote port, state, inode) of every IPv4 and IPv6 TCP socket."""
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
                out.append(
                    (
                        int(local.rsplit(":", 1)[1], 16),
                        int(remote.rsplit(":", 1)[1], 16),
                        state,
                        int(inode),
                    )
                )
    return out


def listening(port: int) -> int:
    """How many sockets listen on `port` (one per SO_REUSEPORT worker)."""
    return sum(1 for lp, _rp, st, _i in _tcp_entries() if lp == port and st == _LISTEN)


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


def pids_listening(port: int) -> list[int]:
    """The processes (visible to us) holding a socket that listens on `port`."""
    inodes = {i for lp, _rp, st, i in _tcp_entries() if lp == port and st == _LISTEN}
    return [pid for pid in all_pids() if inodes & _socket_inodes(pid)] if inodes else []


def worker_of(server_port: int, client_port: int, workers: Sequence[int]) -> int | None:
    """Which of `workers` accepted the client connection whose local port is `client_port`."""
    inodes = {
        i
        for lp, rp, st, i in _tcp_entries()
        if lp == server_port and rp == client_port and st == _ESTABLISHED
    }
    for pid in workers:
        if inodes & _socket_inodes(pid):
            return pid
    return None


def connections_per_worker(server_port: int, workers: Sequence[int]) -> list[int]:
    """How many established connections to `server_port` each of `workers` holds."""
    inodes = {i for lp, _rp, st, i in _tcp_entries() if lp == server_port and st == _ESTABLISHED}
    return [len(inodes & _socket_inodes(pid)) for pid in workers]


def all_pids() -> list[int]:
    """Every process id in /proc."""
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # fields from `state` on


def descendants(root: int) -> list[int]:
    """`root` and every process below it."""
    children: dict[int, list[int]] = {}
    for pid in all_pids():
        fields = _stat(pid)
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def cpu_seconds(pids: Sequence[int]) -> float:
    """User plus system CPU seconds used so far by `pids` (gone ones count 0)."""
    total = 0
    for pid in pids:
        fields = _stat(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return (sum(values[:8]) - idle) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident set size of `pid`."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


def cmdline(pid: int) -> str:
    """The command line of `pid` ('' when gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class Service:
    """A server process the bench started: its log, its workers, and its orderly stop."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        """The parent process."""
        return self.proc.pid

    def workers(self) -> list[int]:
        """The worker processes (multiprocessing spawn children), sorted."""
        return sorted(
            pid for pid in descendants(self.pid) if pid != self.pid and "spawn_main" in cmdline(pid)
        )

    def wait_ready(self, port: int, workers: int, timeout: float = 90.0) -> None:
        """Wait until `workers` worker processes run and as many sockets listen on `port`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}; see {self.log}"
                )
            if listening(port) >= workers and len(self.workers()) >= workers:
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} was not ready in {timeout:g} s; see {self.log}")

    def stop(self) -> None:
        """SIGTERM, a bounded wait, then SIGKILL to the process group."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(STOP_TIMEOUT)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


async def get(host: str, port: int, path: str) -> tuple[int, bytes]:
    """One GET over a fresh connection (health checks, /metrics)."""
    conn = await Connection.open(host, port)
    try:
        request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
        return await conn.send(request)
    except HttpError as exc:
        raise RuntimeError(f"GET {path} failed: {exc}") from exc
    finally:
        conn.close()
