"""The embedded PostgreSQL and Valkey servers: start, reuse, discover, stop, crash recovery."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis

from introspect import embedded


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data directory inside a fresh 0700 folder; its servers are stopped at teardown.

    Not under tmp_path: every pytest session resets its base folder to 0700, so a session
    started meanwhile on this machine would cut the postgres system user off from PGDATA.
    """
    parent = Path(tempfile.mkdtemp(prefix="introspect-embedded-"))
    parent.chmod(0o711)  # passable by the postgres system user when the tests run as root
    path = parent / "stores"
    try:
        yield path
    finally:
        try:
            embedded.stop(path)
        finally:
            shutil.rmtree(parent, ignore_errors=True)


async def _fetch(database_url: str, *queries: str) -> list[asyncpg.Record]:
    """Run each query in order; the rows of the last one."""
    connection = await asyncpg.connect(database_url, timeout=10)
    try:
        rows: list[asyncpg.Record] = []
        for query in queries:
            rows = await connection.fetch(query)
        return rows
    finally:
        await connection.close()


def _ping(redis_url: str) -> bool:
    with redis.Redis.from_url(redis_url, socket_timeout=5) as client:
        return bool(client.ping())


async def _wait_killed(pid: int) -> None:
    """Wait (at most 5 s) until `pid` is gone or a zombie: /proc/PID/cwd no longer resolves."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"process {pid} survived SIGKILL")


async def test_start_reuse_discover_stop(data_dir: Path) -> None:
    """A fresh start serves both stores, later starts and discover reuse them, stop ends them."""
    stores = embedded.start(data_dir)
    assert stores.owned
    assert stores.database_url.startswith("postgresql://introspect:")
    assert stores.database_url.endswith("/introspect")
    assert stores.redis_url.startswith("redis://:")
    assert await _fetch(stores.database_url, "SELECT current_database() AS name") == [
        ("introspect",)
    ]
    assert _ping(stores.redis_url)
    for name in ("embedded.json", "postgres.password"):
        assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600

    again = embedded.start(data_dir)
    assert again == embedded.EmbeddedStores(stores.database_url, stores.redis_url, owned=False)
    assert embedded.discover(data_dir) == again

    embedded.stop(data_dir)
    assert embedded.discover(data_dir) is None
    assert not (data_dir / "embedded.json").exists()
    with pytest.raises(redis.ConnectionError):
        _ping(stores.redis_url)
    with pytest.raises(ConnectionRefusedError):
        await _fetch(stores.database_url, "SELECT 1")


async def test_start_recovers_from_killed_servers(data_dir: Path) -> None:
    """After both servers are SIGKILLed, start brings up fresh ones over the same data."""
    stores = embedded.start(data_dir)
    await _fetch(stores.database_url, "CREATE TABLE kept (id int)", "INSERT INTO kept VALUES (7)")
    postmaster = int((data_dir / "pg" / "postmaster.pid").read_text().split()[0])
    valkey = json.loads((data_dir / "embedded.json").read_text())["valkey"]["pid"]
    os.kill(postmaster, signal.SIGKILL)
    os.kill(valkey, signal.SIGKILL)
    await _wait_killed(postmaster)
    await _wait_killed(valkey)

    assert embedded.discover(data_dir) is None
    recovered = embedded.start(data_dir)
    assert recovered.owned
    assert await _fetch(recovered.database_url, "SELECT id FROM kept") == [(7,)]
    assert _ping(recovered.redis_url)


async def test_a_restart_reads_back_what_the_buffers_held(data_dir: Path) -> None:
    """After a stop and a start, the pages Postgres's buffers held are read back into them
    (autoprewarm) before any query asks for them."""
    stores = embedded.start(data_dir)
    in_buffers = (
        "SELECT count(*) FROM pg_buffercache b JOIN pg_class c"
        " ON b.relfilenode = pg_relation_filenode(c.oid) WHERE c.relname = 'warm'"
    )
    [(held,)] = await _fetch(
        stores.database_url,
        "CREATE EXTENSION pg_buffercache",
        "CREATE TABLE warm AS SELECT n, repeat('x', 200) AS pad FROM generate_series(1, 5000) n",
        "SELECT count(*) FROM warm",
        in_buffers,
    )
    assert held > 10
    embedded.stop(data_dir)

    restarted = embedded.start(data_dir)
    deadline = time.monotonic() + 10
    while (await _fetch(restarted.database_url, in_buffers))[0][0] < held:
        assert time.monotonic() < deadline, "the buffers did not get the table's pages back"
        await asyncio.sleep(0.1)


def test_concurrent_starts_share_one_pair(data_dir: Path) -> None:
    """Processes starting the same data directory at once all get the same pair, one owns it."""
    script = (
        "import json, sys; from pathlib import Path; from introspect import embedded; "
        "s = embedded.start(Path(sys.argv[1])); "
        "print(json.dumps([s.database_url, s.redis_url, s.owned]))"
    )
    command = [sys.executable, "-c", script, str(data_dir)]
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    try:
        outputs = [process.communicate(timeout=60) for process in processes]
    finally:
        for process in processes:
            process.kill()
            process.communicate()
    assert [process.returncode for process in processes] == [0, 0, 0], outputs
    results = [json.loads(stdout) for stdout, _ in outputs]
    assert len({(database_url, redis_url) for database_url, redis_url, _ in results}) == 1
    assert sorted(owned for _, _, owned in results) == [False, False, True]
    assert _ping(results[0][1])


def test_start_refuses_a_foreign_pg_directory(data_dir: Path) -> None:
    """A non-empty pg directory without a cluster raises EmbeddedError instead of being wiped."""
    (data_dir / "pg").mkdir(parents=True)
    (data_dir / "pg" / "precious.txt").write_text("keep me")
    with pytest.raises(embedded.EmbeddedError, match="holds no cluster"):
        embedded.start(data_dir)
    assert (data_dir / "pg" / "precious.txt").read_text() == "keep me"


def test_servers_get_no_secret_of_our_environment(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Neither server nor PostgreSQL's tools inherit INTROSPECT_SECRET or another secret."""
    marker = "s3cret-" + os.urandom(8).hex()
    monkeypatch.setenv("INTROSPECT_SECRET", marker)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", marker)
    given: list[dict[str, str] | None] = []
    popen = subprocess.Popen

    def spy(*args: Any, **kwargs: Any) -> subprocess.Popen[Any]:
        given.append(kwargs.get("env"))
        return popen(*args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", spy)
    embedded.start(data_dir)
    monkeypatch.undo()
    assert len(given) >= 4  # initdb, pg_ctl start, psql, valkey (plus useradd the first time)
    for env in given:
        assert env is not None  # None would pass on our whole environment
        assert marker not in "\n".join(env.values())
    # Valkey blanks its environment for its process title; postgres keeps it readable.
    postmaster = json.loads((data_dir / "embedded.json").read_text())["postgres"]["pid"]
    environment = Path(f"/proc/{postmaster}/environ").read_bytes()
    assert b"PATH=" in environment
    assert marker.encode() not in environment
    if os.geteuid() == 0:  # the data dir was opened to the postgres user's group only
        assert not data_dir.stat().st_mode & stat.S_IXOTH


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs postgres as another user")
def test_root_start_opens_a_closed_parent_for_traversal_only_and_says_so(
    data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """As root, a data dir under a directory the postgres user cannot pass still starts: that
    directory gains o+x only (no listing, no reading), and a warning names it."""
    closed = data_dir.parent / "closed"
    closed.mkdir(mode=0o700)
    inner = closed / "stores"
    try:
        with caplog.at_level(logging.WARNING, logger="introspect.embedded"):
            embedded.start(inner)
    finally:
        embedded.stop(inner)
    assert stat.S_IMODE(closed.stat().st_mode) == 0o701
    assert any(str(closed) in r.getMessage() for r in caplog.records)
