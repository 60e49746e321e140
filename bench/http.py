"""A minimal HTTP/1.1 keep-alive client on one asyncio connection.

The built-in load generator must not be the bottleneck it measures, and
aiohttp's client costs several times the server's own work per request on
this kind of machine. This client does only what the bench needs: it sends
pre-built request bytes on a kept-alive connection and reads one response
framed by `Content-Length` (what aiohttp's `web.Response` always sends).
One request at a time per connection, so a connection is also a way to
keep talking to the same server worker (SO_REUSEPORT picks the worker per
connection).
"""

from __future__ import annotations

import asyncio
import base64

FORM = "application/x-www-form-urlencoded"


class HttpError(Exception):
    """The connection broke or the server answered something this client cannot frame."""


def basic_auth(user: str, password: str) -> str:
    """An `Authorization: Basic` value (ids and secrets here need no form-encoding)."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def request_head(method: str, host: str, port: int, path: str, headers: dict[str, str]) -> bytes:
    """The request line and headers up to (not including) Content-Length."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n").encode("latin-1")


def form_request(head: bytes, body: bytes) -> bytes:
    """A complete request: `head` (from `request_head`), a form Content-Type and `body`."""
    return b"%sContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s" % (
        head,
        FORM.encode(),
        len(body),
        body,
    )


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.expected = -1  # total bytes of the response once the head is parsed
        self.status = 0
        self.head_len = 0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.expected < 0:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            self.head_len = end + 4
            head = bytes(self.buffer[:end]).lower()
            self.status = int(head[9:12])
            start = head.find(b"\r\ncontent-length:")
            if start < 0:
                self._fail(HttpError("response without Content-Length"))
                return
            stop = head.find(b"\r\n", start + 2)
            length = int(head[start + 17 : stop if stop >= 0 else len(head)])
            self.expected = self.head_len + length
            # The server closes after this response (it drains): never send on it again.
            if b"\r\nconnection: close" in head:
                self.closed = True
        if len(self.buffer) >= self.expected and self.waiter is not None:
            body = bytes(self.buffer[self.head_len : self.expected])
            del self.buffer[: self.expected]
            self.expected = -1
            waiter, self.waiter = self.waiter, None
            if not waiter.done():
                waiter.set_result((self.status, body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(HttpError(f"connection lost: {exc!r}" if exc else "connection closed"))

    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        self.waiter = None
        if self.transport is not None:
            self.transport.close()


class Connection:
    """One kept-alive connection to the server; `send` one request at a time."""

    def __init__(self, protocol: _Protocol) -> None:
        self._protocol = protocol

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        """Connect to host:port."""
        loop = asyncio.get_running_loop()
        _transport, protocol = await loop.create_connection(_Protocol, host, port)
        return cls(protocol)

    @property
    def closed(self) -> bool:
        """Whether the connection is gone (the caller opens a new one)."""
        return self._protocol.closed

    @property
    def local_port(self) -> int:
        """The client-side port, which names this connection in /proc/net/tcp."""
        assert self._protocol.transport is not None
        return int(self._protocol.transport.get_extra_info("sockname")[1])

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """Send a complete request and return (status, body) of its response."""
        protocol = self._protocol
        if protocol.closed or protocol.transport is None:
            raise HttpError("connection closed")
        protocol.waiter = asyncio.get_running_loop().create_future()
        protocol.transport.write(request)
        return await protocol.waiter

    def close(self) -> None:
        """Close the connection."""
        if self._protocol.transport is not None:
            self._protocol.transport.close()
