"""The error middleware: every failure becomes a JSON answer, never a stack trace.

OAuth endpoints answer RFC 6749 §5.2 errors; the admin API its own JSON
errors; an unreachable store is 503 (revocations fail loudly, SPEC promise
5); anything unexpected is logged with its trace and answered 500 with no
detail.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Awaitable, Callable
from time import perf_counter

import asyncpg
import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError
from multidict import istr
from redis.exceptions import RedisError

from introspect.errors import AdminError, OAuth2Error
from introspect.metrics import METRICS

log = logging.getLogger("introspect.web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Unreachable, hung or overloaded stores (TimeoutError: a deadline passed, see
# store.COMMAND_TIMEOUT and service.REDIS_TIMEOUT); errors a query itself raised are bugs,
# answered 500. OperatorInterventionError: the server shutting down or starting
# (57P01, 57P03), or a statement cancelled (57014).
UNAVAILABLE = (
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InterfaceError,
    OSError,
    RedisError,
    TimeoutError,
)

# The answer to a request whose stores are unavailable (see UNAVAILABLE).
UNREACHABLE = {"error": "temporarily_unavailable", "error_description": "a store is unreachable"}


def json_response(
    body: object, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON answer serialized by orjson."""
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


def oauth_error_response(exc: OAuth2Error) -> web.Response:
    """RFC 6749 §5.2 error answer, with no-store like every token endpoint answer."""
    headers = {"Cache-Control": "no-store", "Pragma": "no-cache", **exc.headers}
    return json_response(exc.body(), exc.status_code, headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map errors to JSON answers and count every request by route and status."""
    started = perf_counter()
    try:
        response = await handler(request)
    except Exception as exc:
        response = error_response(request, exc)
    route = request.match_info.route
    name = _NAMES.get(route) or _route_name(route)
    METRICS.request(name, response.status, perf_counter() - started)
    if REQUEST_ID in request.headers:
        request_id = request.headers[REQUEST_ID]
        if _REQUEST_ID.fullmatch(request_id):
            response.headers[REQUEST_ID] = request_id
    return response


def error_response(request: web.Request, exc: Exception) -> web.Response:
    """The JSON answer for a failure (re-raising an HTTP redirect, which is no failure)."""
    if isinstance(exc, OAuth2Error):
        if exc.detail:
            log.info("oauth error %s: %s", exc.error, exc.detail, extra=_ids(request))
        return oauth_error_response(exc)
    if isinstance(exc, AdminError):
        return json_response(exc.body(), exc.status)
    if isinstance(exc, HttpProcessingError | RequestPayloadError):
        # A body aiohttp could not read (bad chunking, undecodable content-encoding).
        return json_response(
            {"error": "invalid_request", "error_description": "the request body is malformed"},
            400,
        )
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        return json_response(
            {"error": "invalid_request", "error_description": exc.reason}, exc.status
        )
    name = _route_name(request.match_info.route)
    if isinstance(exc, UNAVAILABLE):
        log.warning("store unavailable on %s: %s", name, type(exc).__name__, extra=_ids(request))
        return json_response(UNREACHABLE, 503)
    log.exception("unexpected error on %s", name, extra=_ids(request), exc_info=exc)
    return json_response({"error": "server_error", "error_description": "internal error"}, 500)


# Route -> its metric label (the resource's canonical path), looked up once per route.
_NAMES: dict[web.AbstractRoute, str] = {}


def _route_name(route: web.AbstractRoute) -> str:
    resource = route.resource
    if resource is None:  # aiohttp's routes for 404 and 405, made afresh for each request
        return "unmatched"
    name = _NAMES[route] = resource.canonical
    return name


REQUEST_ID = istr("X-Request-Id")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def _ids(request: web.Request) -> dict[str, str]:
    """The log record extras of a request: the caller's X-Request-Id when sane, else a new one.

    Only failing requests are logged, so only they pay for generating an id.
    """
    given = request.headers.get(REQUEST_ID)
    if given is not None and _REQUEST_ID.fullmatch(given):
        return {"request_id": given}
    return new_ids()


def new_ids() -> dict[str, str]:
    """The log record extras of a failing request that named no X-Request-Id."""
    return {"request_id": os.urandom(8).hex()}
