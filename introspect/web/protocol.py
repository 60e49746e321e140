"""The HTTP connections under both apps: aiohttp's RequestHandler, hardened (SPEC "Hardening").

- Nothing a caller sent reaches a log line or an error answer. aiohttp's own
  answer to a request its parser refuses (an over-long or malformed header,
  a bad request line or chunk) quotes the offending bytes in its log line,
  its traceback and the 400 body; here that refusal is one fixed log line
  naming the error class and the peer, and a fixed JSON body.
- No `Server` banner: not on refusals made here, and `Answers.prepare`
  takes it off every answer of an app.
- Idle keep-alive connections close after the configured keep-alive timeout
  (aiohttp's own timer), and a connection that has not sent a complete
  first request head within `HEAD_TIMEOUT` seconds is closed. The head timer
  is one loop timer per connection, cancelled by the first parsed head.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from typing import Any

import orjson
from aiohttp import hdrs, web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from introspect.web.fast import Declined, Later, Shortcut

log = logging.getLogger("introspect.http")

HEAD_TIMEOUT = 10.0

_REFUSED = orjson.dumps(
    {"error": "invalid_request", "error_description": "the request could not be parsed"}
)
_FAILED = orjson.dumps({"error": "server_error", "error_description": "internal error"})


class _Refusal(web.Response):
    """An answer made below the apps, without the `Server` header aiohttp adds to every answer."""

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        self.headers.popall(hdrs.SERVER, None)


class Answers:
    """An app's one `on_response_prepare` hook (one hook: each costs every answer a coroutine).

    It takes the `Server` header off every answer, and while the worker
    drains (`draining`, see server.Drain) closes each connection after its
    answer, saying so: aiohttp computed the headers before this hook runs,
    so `force_close()` alone would close without telling the client.
    """

    __slots__ = ("draining",)

    def __init__(self) -> None:
        self.draining = False

    async def prepare(self, _request: web.Request, response: web.StreamResponse) -> None:
        """The hook."""
        response.headers.popall(hdrs.SERVER, None)
        if self.draining:
            response.headers[hdrs.CONNECTION] = "close"
            response.force_close()


class Connection(RequestHandler):
    """One client connection: aiohttp's handler with redacted failures and a head timeout,
    and the plainest introspections answered below it (`fast.Shortcut`)."""

    __slots__ = ("_head_timeout", "_head_timer", "_held", "_later", "_shortcut")

    def __init__(
        self,
        manager: web.Server,
        *,
        head_timeout: float,
        shortcut: Shortcut | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        self._head_timeout = head_timeout
        self._head_timer: asyncio.TimerHandle | None = None
        self._shortcut = shortcut
        self._held = b""  # the start of a plain request, held until the rest has come
        self._later: asyncio.Task[bytes | None] | None = None  # an answer of ours under way

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start the head timer, then serve as aiohttp does."""
        self._head_timer = self._loop.call_later(self._head_timeout, self._head_expired)
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        """Answer a plain introspection here, else parse as aiohttp does; the first complete
        head (or parse error) stops the head timer."""
        shortcut = self._shortcut
        # (aiohttp feeds itself b"" to go on with what its parser held back: that is its own.)
        if shortcut is not None and data and not (self._force_close or self._close):
            if self._later is not None:
                # Answered after the one under way: read no further until it is written.
                self._held += data
                self._pause_transport_reading()
                return
            if self._held:
                data, self._held = self._held + data, b""
            answer = shortcut.answer(data, self._between_requests())
            if isinstance(answer, bytes):
                self._answered(answer)
                return
            if isinstance(answer, Later):
                self._defer(answer, data)
                return
            if answer is Declined.PART:
                self._held = data
                return
            if answer is Declined.OTHER:
                self._shortcut = None  # aiohttp's parser may now be inside a request
        super().data_received(data)
        if self._head_timer is not None and self._request_count:
            self._head_timer.cancel()
            self._head_timer = None

    def _between_requests(self) -> bool:
        """Whether aiohttp holds no request of this connection: none queued, none being
        answered, its loop waiting for the next (the only time an answer may be written
        here, after every earlier one)."""
        waiter = self._waiter
        # No waiter yet: a new connection whose first read came before aiohttp's loop started.
        waiting = self._request_count == 0 if waiter is None else not waiter.done()
        return (
            waiting
            and not self._messages
            and not self._request_in_progress
            and self._payload_parser is None
            and not self._upgraded
            and not self._buffer_paused
            and not self._paused  # a client not reading its answers gets aiohttp's back-pressure
        )

    def _defer(self, later: Later, request: bytes) -> None:
        """Answer `request` once `later` has run (aiohttp's shutdown waits for it, as for one
        of its own handlers)."""
        self._request_in_progress = True
        if self._head_timer is not None:  # a whole head came
            self._head_timer.cancel()
            self._head_timer = None
        task = self._loop.create_task(later.run())
        task.add_done_callback(functools.partial(self._deferred, request))
        self._later = task

    def _deferred(self, request: bytes, task: asyncio.Task[bytes | None]) -> None:
        self._later = None
        self._request_in_progress = False
        if self._handler_waiter is not None and not self._handler_waiter.done():
            self._handler_waiter.set_result(None)
        transport = self.transport
        if task.cancelled() or transport is None or transport.is_closing():
            return
        answer = task.result()
        if answer is None:
            super().data_received(request)  # aiohttp answers it, and what follows
        else:
            self._answered(answer)
        held, self._held = self._held, b""
        if not (self._reading_paused or self._buffer_paused):
            self._resume_transport_reading()
        if held:
            self.data_received(held)

    def _answered(self, answer: bytes) -> None:
        """Write an answer made by the shortcut, and keep the books aiohttp keeps for one."""
        assert self.transport is not None
        self.transport.write(answer)
        self._request_count += 1
        if self._manager is not None:
            self._manager.requests_count += 1
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        # The keep-alive timer runs from the last answer, as after one of aiohttp's.
        close_time = self._loop.time() + self._keepalive_timeout
        self._next_keepalive_close_time = close_time
        if self._keepalive_handle is None:
            self._keepalive_handle = self._loop.call_at(close_time, self._process_keepalive)

    def connection_lost(self, exc: BaseException | None) -> None:
        """Stop the head timer, and an answer of ours under way, with the connection."""
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if self._later is not None:
            self._later.cancel()
        super().connection_lost(exc)

    def _process_keepalive(self) -> None:
        """aiohttp's keep-alive check, which takes a connection whose answer is under way
        here for idle (aiohttp holds no request of it): look again a timeout later."""
        if self._later is None:
            super()._process_keepalive()
            return
        close_time = self._loop.time() + self._keepalive_timeout
        self._keepalive_handle = self._loop.call_at(close_time, self._process_keepalive)

    def _head_expired(self) -> None:
        self._head_timer = None
        self.force_close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A fixed answer and a fixed log line for a request refused below the apps.

        `message` (the parser's text, quoting the request) is never used.
        """
        what = type(exc).__name__ if exc is not None else str(status)
        if status >= 500:
            log.error("request from %s failed below the apps: %s", request.remote, what)
        else:
            log.info("refused a malformed request from %s: %s", request.remote, what)
        if request.writer.output_size > 0:  # an answer already began: only closing is left
            raise ConnectionError("the answer was already under way")
        body = _FAILED if status >= 500 else _REFUSED
        answer = _Refusal(status=status, body=body, content_type="application/json")
        answer.force_close()
        return answer

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        """aiohttp's other failure logs: the exception's class only, never its text or trace."""
        exc = kwargs.get("exc_info")
        if not isinstance(exc, BaseException):
            exc = sys.exc_info()[1]
        log.error("connection failed: %s", type(exc).__name__ if exc is not None else "unknown")


class AccessLog(AbstractAccessLogger):
    """One line per answered request, with nothing the caller sent: peer, route, status, time.

    The route is the matched resource's path pattern (the metric label), so
    neither a query string nor a header nor an unmatched path is written.
    """

    def log(self, request: BaseRequest, response: web.StreamResponse, time: float) -> None:
        """Write the line for one answered request."""
        route = "unmatched"
        match_info = getattr(request, "_match_info", None)  # None for requests refused here
        if match_info is not None and match_info.route.resource is not None:
            route = match_info.route.resource.canonical
        self.logger.info(
            "%s %s %d %d %.6f",
            request.remote,
            route,
            response.status,
            response.body_length,
            time,
        )


class _Server(web.Server):
    """aiohttp's connection factory, making `Connection`s."""

    def __init__(
        self, *args: Any, head_timeout: float, shortcut: Shortcut | None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._head_timeout = head_timeout
        self._shortcut = shortcut

    def __call__(self) -> RequestHandler:
        return Connection(
            self,
            loop=self._loop,
            head_timeout=self._head_timeout,
            shortcut=self._shortcut,
            **self._kwargs,
        )


class Runner(web.AppRunner):
    """An AppRunner whose connections are `Connection`s (used by `serve` and the tests)."""

    __slots__ = ("_head_timeout",)

    def __init__(
        self,
        app: web.Application,
        *,
        keepalive_timeout: float,
        head_timeout: float = HEAD_TIMEOUT,
        access_log: logging.Logger | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            app,
            keepalive_timeout=keepalive_timeout,
            access_log=access_log,
            access_log_class=AccessLog,
            **kwargs,
        )
        self._head_timeout = head_timeout

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()
        # With an access log, every answer goes through aiohttp, which writes its line.
        plain = self._kwargs.get("access_log") is None and Shortcut.serves(self.app)
        return _Server(
            made.request_handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            loop=made._loop,
            head_timeout=self._head_timeout,
            shortcut=Shortcut(self.app) if plain else None,
            **made._kwargs,
        )
