"""A lean pipelined Redis client for the hot path: one connection, many batches in flight.

redis-py's asyncio client spends some 100 µs of Python per command (pool
checkout, retry wrapper, timeout context, observability hooks): on a Redis
hit that is more than the rest of the request. The few commands the hot
path sends (MGET of coalesced lookups, the fill and invalidation scripts,
PUBLISH, acknowledgements, and the invalidation subscription) go instead
through this client: commands are packed by hand, and the batches made in
one event-loop iteration are written together at its end, on one
connection per worker (Redis answers in order, so a FIFO of waiting
batches is the whole protocol); replies are parsed by hiredis. One
future per batch, no task, no per-command timer: a watchdog aborts the
connection when the oldest batch waited longer than the timeout. A batch
that is itself made at the end of an iteration (the coalesced lookups'
MGET) may instead be written at once and answered by a callback from the
reading of its last reply (`Client.send_then`): no future at all.

It is the wire under the Redis port's one-server implementation
(introspect/redis/lean.py), where every command the product sends is written.

Errors are redis-py's exception classes, so callers handle both clients
alike: `ConnectionError` and `TimeoutError` fail every batch in flight and
the next call reconnects; an error reply is a `ResponseError` in its place
among the replies.

A client made with `identify=True` asks every new connection, before
anything else is sent on it, which server it reached (`INFO`: run id,
replication id, role, eviction policy: `Server`), and a batch may require
that identity (`execute(..., identity=...)`): a batch is then sent only on a
connection to that very server process and history, never on one that
reconnected to a restarted or promoted server meanwhile.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import hiredis
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection, parse_url
from redis.exceptions import AuthenticationError, ConnectionError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

Arg = bytes | str | int
Command = Sequence[Arg]
# Called with a batch's replies, or the error that failed it (see Client.send_then).
Replied = Callable[[list[Any] | BaseException], None]


def pack(commands: Sequence[Command]) -> bytes:
    """The RESP encoding of a batch of commands."""
    out = []
    for command in commands:
        out.append(b"*%d\r\n" % len(command))
        for arg in command:
            if not isinstance(arg, bytes):  # keys and values, the most, are bytes already
                arg = arg.encode() if isinstance(arg, str) else b"%d" % arg
            out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how to connect, from a redis://, rediss:// or unix:// URL."""

    host: str = "localhost"
    port: int = 6379
    path: str | None = None
    tls: ssl.SSLContext | None = None
    username: str | None = None
    password: str | None = None
    db: int = 0

    @classmethod
    def from_url(cls, url: str) -> Endpoint:
        """Parse a URL the way redis-py does (same schemes, credentials, db, TLS options)."""
        kw: dict[str, Any] = dict(parse_url(url))
        tls = None
        if kw.get("connection_class") is SSLConnection:
            tls = ssl.create_default_context(cafile=kw.get("ssl_ca_certs"))
            if str(kw.get("ssl_cert_reqs", "required")).lower() == "none":
                tls.check_hostname = False
                tls.verify_mode = ssl.CERT_NONE
        return cls(
            host=kw.get("host", "localhost"),
            port=int(kw.get("port", 6379)),
            path=kw.get("path")
            if kw.get("connection_class") is UnixDomainSocketConnection
            else None,
            tls=tls,
            username=kw.get("username"),
            password=kw.get("password"),
            db=int(kw.get("db", 0)),
        )

    def handshake(self) -> list[Command]:
        """AUTH and SELECT, as needed, before anything else on a new connection."""
        commands: list[Command] = []
        if self.password is not None:
            auth = (
                ("AUTH", self.username, self.password) if self.username else ("AUTH", self.password)
            )
            commands.append(auth)
        if self.db:
            commands.append(("SELECT", self.db))
        return commands


class ServerChanged(ConnectionError):
    """The connection reaches another server (or history) than the one required."""


@dataclass(frozen=True, slots=True)
class Server:
    """Who answers on a connection, from its `INFO`: what tells one Redis history from another.

    `run_id` changes when the process restarts (from whatever snapshot);
    `replid` when a replica is promoted. `identity` is both.
    """

    run_id: str
    replid: str
    role: str
    maxmemory_policy: str

    @property
    def identity(self) -> bytes:
        """The server process and replication history, as one value."""
        return f"{self.run_id}:{self.replid}".encode()

    @staticmethod
    def fields(*sections: bytes) -> dict[str, str]:
        """The `name:value` lines of INFO replies."""
        fields: dict[str, str] = {}
        for section in sections:
            for line in section.decode(errors="replace").splitlines():
                name, sep, value = line.partition(":")
                if sep:
                    fields[name.strip()] = value.strip()
        return fields

    @classmethod
    def from_info(cls, *sections: bytes) -> Server:
        """Parse the replies of `INFO server`, `INFO replication` and `INFO memory`."""
        fields = cls.fields(*sections)
        run_id = fields.get("run_id", "")
        if not run_id:
            raise ResponseError("INFO has no run_id: cannot tell this server's history")
        return cls(
            run_id=run_id,
            replid=fields.get("master_replid", ""),
            role=fields.get("role", ""),
            maxmemory_policy=fields.get("maxmemory_policy", ""),
        )


_IDENTIFY: list[Command] = [("INFO", "server"), ("INFO", "replication"), ("INFO", "memory")]


class _Batch:
    """A batch in flight: its replies go to `future`, or to `replied` (see Client.send_then)."""

    __slots__ = ("expected", "future", "replied", "replies", "sent")

    def __init__(
        self,
        future: asyncio.Future[list[Any]] | None,
        expected: int,
        sent: float,
        replied: Replied | None = None,
    ) -> None:
        self.future = future
        self.replied = replied
        self.replies: list[Any] = []
        self.expected = expected
        self.sent = sent

    def land(self, outcome: list[Any] | BaseException) -> None:
        """Hand the replies (or the error) over, once."""
        if self.replied is not None:
            replied, self.replied = self.replied, None
            replied(outcome)
        elif self.future is not None and not self.future.done():
            if isinstance(outcome, BaseException):
                self.future.set_exception(outcome)
            else:
                self.future.set_result(outcome)


class _Protocol(asyncio.Protocol):
    """One connection: batches answered in order, or every reply to `on_push` (subscribed)."""

    def __init__(self, timeout: float, on_push: Callable[[Any], None] | None = None) -> None:
        self.timeout = timeout
        self.on_push = on_push
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader(replyError=ResponseError)
        self.batches: collections.deque[_Batch] = collections.deque()
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._watchdog: asyncio.TimerHandle | None = None
        self._error: BaseException | None = None
        # Packed batches not yet written (see `send`).
        self._out: list[bytes] = []
        # Who answers on this connection (asked at connect when identifying; see Server).
        self.server: Server | None = None

    @property
    def alive(self) -> bool:
        return self.transport is not None and not self.lost.done()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's transports do not subclass asyncio's.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family != socket.AF_UNIX:
            # A peer gone silent (a partition) must end a subscription too.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    def send(self, commands: Sequence[Command]) -> asyncio.Future[list[Any]]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        if not self.alive or self.transport is None:
            future.set_exception(ConnectionError("redis connection lost"))
            return future
        self._queue(_Batch(future, len(commands), time.monotonic()), commands)
        return future

    def send_now(self, commands: Sequence[Command], replied: Replied) -> None:
        """Write `commands` at once, behind what this iteration queued before them, and hand
        their replies (or the error that fails them) to `replied` as they come in."""
        if not self.alive:
            replied(ConnectionError("redis connection lost"))
            return
        self._queue(_Batch(None, len(commands), time.monotonic(), replied), commands)
        self._write()

    def _queue(self, batch: _Batch, commands: Sequence[Command]) -> None:
        loop = asyncio.get_running_loop()
        self.batches.append(batch)
        # The batches of one event-loop iteration go out in one write, at its end: one
        # system call (on loopback, the sender pays for the receiver's side of TCP too) for
        # the MGET, the fills and the publishes that many requests made meanwhile, and no
        # wait beyond the iteration at low load. Order is kept: bytes and batches queue alike.
        out = self._out
        out.append(pack(commands))
        if len(out) == 1:
            loop.call_soon(self._write)
        if self._watchdog is None:
            self._watchdog = loop.call_later(self.timeout, self._check)

    def _write(self) -> None:
        """Send what the batches of this loop iteration queued, in one write."""
        out, self._out = self._out, []
        if not out:  # written already, by a `send_now`
            return
        transport = self.transport
        if self.alive and transport is not None and not transport.is_closing():
            transport.write(out[0] if len(out) == 1 else b"".join(out))
        # Else connection_lost fails the batches (an abort schedules it).

    def _check(self) -> None:
        """Abort when the oldest batch has waited too long; otherwise look again later."""
        self._watchdog = None
        if not self.batches or self.transport is None:
            return
        waited = time.monotonic() - self.batches[0].sent
        if waited >= self.timeout:
            self._error = RedisTimeoutError(f"no reply from redis in {self.timeout} s")
            self.transport.abort()
            return
        loop = asyncio.get_running_loop()
        self._watchdog = loop.call_later(self.timeout - waited, self._check)

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                self._error = ConnectionError(f"redis protocol error: {exc}")
                if self.transport is not None:
                    self.transport.abort()
                return
            if reply is False:
                return
            if self.on_push is not None:
                self.on_push(reply)
                continue
            if not self.batches:
                continue  # a reply to a batch whose waiter already failed: nothing to do
            batch = self.batches[0]
            batch.replies.append(reply)
            if len(batch.replies) == batch.expected:
                self.batches.popleft()
                batch.land(batch.replies)

    def connection_lost(self, exc: Exception | None) -> None:
        error = self._error or ConnectionError(f"redis connection lost: {exc or 'closed'}")
        while self.batches:
            self.batches.popleft().land(error)
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if not self.lost.done():
            self.lost.set_result(None)


async def connect(
    endpoint: Endpoint,
    limit: float,
    on_push: Callable[[Any], None] | None = None,
    *,
    identify: bool = False,
) -> _Protocol:
    """Open a connection and run the handshake; replies go to `on_push` once it is done."""
    loop = asyncio.get_running_loop()
    protocol = _Protocol(limit)
    try:
        await _open(loop, protocol, endpoint, limit, identify)
    except BaseException:
        if protocol.transport is not None:
            protocol.transport.abort()
        raise
    protocol.on_push = on_push
    return protocol


async def _open(
    loop: asyncio.AbstractEventLoop,
    protocol: _Protocol,
    endpoint: Endpoint,
    limit: float,
    identify: bool,
) -> None:
    try:
        async with asyncio.timeout(limit):
            if endpoint.path is not None:
                await loop.create_unix_connection(lambda: protocol, endpoint.path)
            else:
                await loop.create_connection(
                    lambda: protocol, endpoint.host, endpoint.port, ssl=endpoint.tls
                )
            handshake = endpoint.handshake()
            if handshake:
                replies = await protocol.send(handshake)
                for command, reply in zip(handshake, replies, strict=True):
                    if isinstance(reply, ResponseError):
                        raise AuthenticationError(str(reply)) if command[0] == "AUTH" else reply
            if identify:
                sections = await protocol.send(_IDENTIFY)
                for reply in sections:
                    if isinstance(reply, ResponseError):
                        raise reply
                protocol.server = Server.from_info(*sections)
    except TimeoutError as exc:
        raise RedisTimeoutError(f"cannot connect to redis in {limit} s") from exc
    except OSError as exc:
        raise ConnectionError(f"cannot connect to redis: {exc}") from exc


def _require(protocol: _Protocol, identity: bytes | None) -> None:
    """Raise ServerChanged unless `protocol` reaches the server `identity` names (if any)."""
    if identity is not None:
        server = protocol.server
        if server is None or server.identity != identity:
            raise ServerChanged("redis server or history changed")


class Client:
    """Batches of commands over one lazily (re)opened connection."""

    def __init__(self, url: str, timeout: float = 2.0, *, identify: bool = False) -> None:
        self.url = url
        self.endpoint = Endpoint.from_url(url)
        self.timeout = timeout
        self.identify = identify
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Task[_Protocol] | None = None
        self._closed = False

    async def execute(self, *commands: Command, identity: bytes | None = None) -> list[Any]:
        """Send the commands at once; their replies in order (error replies in place).

        With `identity`, the batch is sent only on a connection to that server
        (see Server.identity), else ServerChanged is raised and nothing is sent.
        """
        if not commands:
            return []
        protocol = self._protocol
        if protocol is None or not protocol.alive:
            protocol = await self._connect()
        _require(protocol, identity)
        return await protocol.send(commands)

    def send_then(
        self, commands: Sequence[Command], replied: Replied, identity: bytes | None = None
    ) -> bool:
        """Send the commands now, and call `replied` with their replies (error replies in
        place) or the error that failed them, from the reading of the last reply: no future,
        no task, and no wait for the end of the loop iteration. False, with nothing sent and
        `replied` never called, when no connection is open (then `execute`, which opens one).

        With `identity`, as `execute` (ServerChanged raised, nothing sent).
        """
        protocol = self._protocol
        if protocol is None or not protocol.alive:
            return False
        _require(protocol, identity)
        protocol.send_now(commands, replied)
        return True

    def submit(self, *commands: Command, identity: bytes | None = None) -> Awaitable[list[Any]]:
        """`execute`, queued now: on a live connection, the batch's future, with no coroutine
        or task (a caller sending to several servers queues each batch, then awaits them; each
        goes out in its connection's one write at the end of this loop iteration); otherwise
        a task that connects first. A batch `identity` refuses fails with ServerChanged."""
        protocol = self._protocol
        if not commands or protocol is None or not protocol.alive:
            return asyncio.ensure_future(self.execute(*commands, identity=identity))
        try:
            _require(protocol, identity)
        except ServerChanged as exc:
            refused: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
            refused.set_exception(exc)
            return refused
        return protocol.send(commands)

    async def server(self) -> Server:
        """Who answers on this client's connection (connecting if needed; `identify` only)."""
        protocol = self._protocol
        if protocol is None or not protocol.alive:
            protocol = await self._connect()
        if protocol.server is None:
            raise ServerChanged("this client does not identify its server")
        return protocol.server

    async def call(self, *command: Arg) -> Any:
        """One command's reply; an error reply is raised."""
        (reply,) = await self.execute(command)
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    async def _connect(self) -> _Protocol:
        if self._closed:
            raise ConnectionError("redis client closed")
        # Concurrent callers share one connection attempt.
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.get_running_loop().create_task(
                connect(self.endpoint, self.timeout, identify=self.identify)
            )
        protocol = await asyncio.shield(self._connecting)
        if self._closed:  # closed while this connection was being opened
            _close(protocol)
            raise ConnectionError("redis client closed")
        self._protocol = protocol
        return protocol

    def close(self) -> None:
        """Close the connection for good (batches in flight fail)."""
        self._closed = True
        _close(self._protocol)
        self._protocol = None


# The subscribe command, and the kinds of the pushes: a message, a confirmation, an end.
_CLASSIC = ("SUBSCRIBE", b"message", b"subscribe", b"unsubscribe")
_SHARDED = ("SSUBSCRIBE", b"smessage", b"ssubscribe", b"sunsubscribe")


class Subscription:
    """A connection in subscribed mode: every message to `on_message(channel, data)`."""

    def __init__(
        self, url: str, timeout: float = 2.0, *, identify: bool = False, sharded: bool = False
    ) -> None:
        self.endpoint = Endpoint.from_url(url)
        self.timeout = timeout
        self.identify = identify
        # Sharded pub/sub (SSUBSCRIBE, on a cluster): the server ends it by itself when the
        # channel's slot moves (an `sunsubscribe` push), which drops the connection here.
        self._verbs = _SHARDED if sharded else _CLASSIC
        self._protocol: _Protocol | None = None

    @property
    def server(self) -> Server | None:
        """Who answers on the subscribed connection (when identifying)."""
        return None if self._protocol is None else self._protocol.server

    async def open(
        self, channels: Sequence[str], on_message: Callable[[bytes, bytes], None]
    ) -> asyncio.Future[None]:
        """Subscribe; returns once every channel is confirmed, with a future set when it drops."""
        confirmed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        pending = set(c.encode() for c in channels)
        command, message, subscribed, unsubscribed = self._verbs

        def on_push(reply: Any) -> None:
            if not isinstance(reply, list) or len(reply) < 3:
                return
            kind = reply[0]
            if kind == message:
                on_message(reply[1], reply[2])
            elif kind == subscribed:
                pending.discard(reply[1])
                if not pending and not confirmed.done():
                    confirmed.set_result(None)
            elif kind == unsubscribed:  # never asked for: the server ended it
                self.close()

        protocol = await connect(self.endpoint, self.timeout, on_push, identify=self.identify)
        self._protocol = protocol
        assert protocol.transport is not None
        protocol.transport.write(pack([(command, *channels)]))
        try:
            async with asyncio.timeout(self.timeout):
                await asyncio.wait([confirmed, protocol.lost], return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            pass
        if not confirmed.done():
            self.close()
            raise ConnectionError("redis did not confirm the subscription")
        return protocol.lost

    def pause(self, paused: bool) -> None:
        """Stop (or resume) reading messages, as a stalled or silently dead connection would."""
        if self._protocol is not None and self._protocol.transport is not None:
            if paused:
                self._protocol.transport.pause_reading()
            else:
                self._protocol.transport.resume_reading()

    def close(self) -> None:
        """Drop the subscription."""
        _close(self._protocol)
        self._protocol = None


def _close(protocol: _Protocol | None) -> None:
    if protocol is not None and protocol.transport is not None:
        protocol.transport.close()
