"""The data dir's layout and its files: the lock, the state file, private files, errors.

Every failure of the embedded servers is an `EmbeddedError` whose message ends with the
tail of the relevant log (see the package doc for the layout).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOCK_TIMEOUT = 180.0  # another process may be running initdb under the lock
LOG_TAIL_LINES = 15


class EmbeddedError(RuntimeError):
    """An embedded server could not be started or stopped; the message ends with its log."""


@dataclass(frozen=True)
class Paths:
    root: Path
    pg: Path
    pg_init: Path
    pg_log: Path
    pg_secret: Path
    valkey: Path
    valkey_log: Path
    state: Path
    lock: Path

    @classmethod
    def of(cls, data_dir: Path) -> Paths:
        root = Path(data_dir).expanduser().resolve()
        return cls(
            root=root,
            pg=root / "pg",
            pg_init=root / "pg.init",
            pg_log=root / "pg" / "postgres.log",
            pg_secret=root / "postgres.password",
            valkey=root / "valkey",
            valkey_log=root / "valkey" / "valkey.log",
            state=root / "embedded.json",
            lock=root / "embedded.lock",
        )


@contextlib.contextmanager
def locked(paths: Paths) -> Iterator[None]:
    descriptor = os.open(paths.lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    message = f"{paths.lock} stayed locked for {LOCK_TIMEOUT:.0f} s"
                    raise EmbeddedError(message) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def read_state(paths: Paths) -> dict[str, Any]:
    try:
        state = json.loads(paths.state.read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def write_private(path: Path, text: str) -> None:
    """Write atomically a file only the owner can read."""
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        os.fchmod(descriptor, 0o600)
        file.write(text)
    os.replace(temporary, path)


def error(message: str, log_path: Path | None, output: str = "") -> EmbeddedError:
    lines = output.strip().splitlines()
    if log_path is not None:
        with contextlib.suppress(OSError):
            lines += log_path.read_text(errors="replace").strip().splitlines()
    tail = "\n".join(lines[-LOG_TAIL_LINES:])
    return EmbeddedError(f"{message}\n{tail}" if tail else message)
