"""ASGI glue over `Guard` (Starlette, FastAPI or any ASGI app), in the manner of Starlette's
AuthenticationMiddleware: one pure-ASGI middleware that authenticates every HTTP request and
websocket (but the public paths) and puts the answer at `scope["state"]["introspection"]`
(`request.state.introspection` in Starlette), and `requires_scope` for Starlette endpoints.
FastAPI's dependency is in `introspect_sdk.fastapi`.

    app = Starlette(routes=..., middleware=[Middleware(IntrospectMiddleware, guard=guard)])
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Collection, MutableMapping
from typing import Any

from introspect_sdk import answers
from introspect_sdk.answers import Introspection, Refusal
from introspect_sdk.guard import Guard

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

STATE_KEY = "introspection"
# A websocket refused before it is accepted: policy violation (RFC 6455 §7.4.1).
POLICY_VIOLATION = 1008


class _Headers(dict[str, str]):
    """An ASGI scope's headers, looked up case-insensitively (first value of each name)."""

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        super().__init__()
        for name, value in raw:
            self.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())


async def send_refusal(refusal: Refusal, send: Send) -> None:
    """Write a refusal as an ASGI HTTP response."""
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in refusal.headers]
    headers.append((b"content-length", str(len(refusal.body)).encode()))
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "http.response.body", "body": refusal.body})


class IntrospectMiddleware:
    """Every HTTP request and websocket but those to `public` paths needs an active
    credential: 401, 429 or 503 otherwise (a websocket is closed with 1008)."""

    def __init__(self, app: ASGIApp, guard: Guard, public: Collection[str] = ()) -> None:
        self.app = app
        self.guard = guard
        self.public = public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in self.public:
            await self.app(scope, receive, send)
            return
        headers = _Headers(scope.get("headers", []))
        outcome = await self.guard.authenticate(self.guard.credential(headers))
        if isinstance(outcome, Refusal):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": POLICY_VIOLATION})
            else:
                await send_refusal(outcome, send)
            return
        scope.setdefault("state", {})[STATE_KEY] = outcome
        await self.app(scope, receive, send)


def introspection(scope: Scope) -> Introspection | None:
    """The answer the middleware found for this request, if it ran."""
    found = scope.get("state", {}).get(STATE_KEY)
    return found if isinstance(found, Introspection) else None


def requires_scope(*scopes: str) -> Callable[[Callable[..., Awaitable[Any]]], Any]:
    """A Starlette endpoint decorator (functions taking `request`): 403 `insufficient_scope`
    unless the credential has every scope."""
    from starlette.requests import Request
    from starlette.responses import Response

    def decorate(endpoint: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(endpoint)
        async def scoped(request: Request) -> Any:
            answer = introspection(request.scope)
            refusal = answers.missing() if answer is None else answers.require(answer, scopes)
            if refusal is not None:
                return Response(refusal.body, refusal.status, dict(refusal.headers))
            return await endpoint(request)

        return scoped

    return decorate
