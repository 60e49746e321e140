"""aiohttp glue over `Guard`: a middleware that authenticates every request (but the public
paths), `require_scope` for a route's scopes, and a client middleware adding a bearer token.

    guard = Guard(issuer, ClientAuth.with_secret(client_id, secret))
    app = web.Application(middlewares=[middleware(guard, public={"/healthz"})])
    app.cleanup_ctx.append(lifecycle(guard))

    @require_scope("read")
    async def items(request: web.Request) -> web.Response:
        answer = request[INTROSPECTION]  # sub, client_id, scope, metadata, ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import TYPE_CHECKING

from aiohttp import ClientHandlerType, ClientRequest, ClientResponse, web
from aiohttp.typedefs import Middleware

from introspect_sdk import answers
from introspect_sdk.answers import Introspection, Refusal
from introspect_sdk.guard import Guard

if TYPE_CHECKING:
    from introspect_sdk.tokens import TokenProvider

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The introspection answer of the request's credential, set by the middleware.
INTROSPECTION = web.RequestKey("introspect_sdk.introspection", Introspection)


def response(refusal: Refusal) -> web.Response:
    """The aiohttp response for a refusal."""
    return web.Response(status=refusal.status, headers=refusal.headers, body=refusal.body)


def middleware(guard: Guard, *, public: Collection[str] = ()) -> Middleware:
    """Every request but those to `public` paths needs an active credential (401, 429 or 503
    otherwise); the handler finds the answer at `request[INTROSPECTION]`."""

    @web.middleware
    async def introspect_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in public:
            return await handler(request)
        outcome = await guard.authenticate(guard.credential(request.headers))
        if isinstance(outcome, Refusal):
            return response(outcome)
        request[INTROSPECTION] = outcome
        return await handler(request)

    return introspect_middleware


def require_scope(*scopes: str) -> Callable[[Handler], Handler]:
    """A route decorator: 403 `insufficient_scope` unless the credential has every scope."""

    def decorate(handler: Handler) -> Handler:
        async def scoped(request: web.Request) -> web.StreamResponse:
            answer = request.get(INTROSPECTION)
            refusal = answers.missing() if answer is None else answers.require(answer, scopes)
            if refusal is not None:
                return response(refusal)
            return await handler(request)

        scoped.__name__ = handler.__name__
        scoped.__doc__ = handler.__doc__
        return scoped

    return decorate


def lifecycle(guard: Guard) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context starting the guard with the app and closing it after."""

    async def guarded(_app: web.Application) -> AsyncIterator[None]:
        await guard.start()
        yield
        await guard.close()

    return guarded


class BearerMiddleware:
    """An aiohttp client middleware adding `Authorization: Bearer` from a token provider;
    a 401 answer makes the provider fetch a new token for the next request."""

    def __init__(self, provider: TokenProvider) -> None:
        self.provider = provider

    async def __call__(self, request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        token = await self.provider.token()
        request.headers["Authorization"] = f"Bearer {token}"
        resp = await handler(request)
        if resp.status == 401:
            self.provider.forget(token)
        return resp
