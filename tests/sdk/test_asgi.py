"""The ASGI glue beyond FastAPI: a plain Starlette app with `requires_scope`, and websockets
refused before they are accepted."""

from __future__ import annotations

from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from introspect_sdk import ClientAuth, Guard
from introspect_sdk.asgi import (
    POLICY_VIOLATION,
    IntrospectMiddleware,
    introspection,
    requires_scope,
)
from tests.helpers import Registered
from tests.sdk.conftest import Issuer, access_token


@requires_scope("read")
async def read(request: Request) -> JSONResponse:
    """Who asked."""
    answer = introspection(request.scope)
    assert answer is not None
    return JSONResponse({"sub": answer.sub})


@requires_scope("write")
async def write(_request: Request) -> JSONResponse:
    """Never reached with a read token."""
    return JSONResponse({}, status_code=201)


async def test_starlette_routes_require_their_scope(
    issuer: Issuer, rs: Registered, reader: Registered
) -> None:
    """A Starlette app behind the middleware: a read token reads (the endpoint sees the
    answer), is 403 insufficient_scope on the write route, and no token is 401."""
    async with Guard(issuer.url, ClientAuth.with_secret(rs.client_id, rs.secret)) as guard:
        app = Starlette(
            routes=[Route("/read", read), Route("/write", write, methods=["POST"])],
            middleware=[Middleware(IntrospectMiddleware, guard=guard)],
        )
        token = await access_token(issuer.running, reader)
        headers = {"Authorization": f"Bearer {token}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://rs") as http:
            resp = await http.get("/read", headers=headers)
            assert resp.status_code == 200, resp.text
            assert resp.json() == {"sub": reader.client_id}
            resp = await http.post("/write", headers=headers)
            assert resp.status_code == 403
            assert resp.headers["WWW-Authenticate"].startswith('Bearer error="insufficient_scope"')
            assert (await http.get("/read")).status_code == 401


async def test_a_websocket_without_credential_is_closed(issuer: Issuer, rs: Registered) -> None:
    """A websocket without a credential is closed with 1008 before the app sees it."""
    reached: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope)

    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async with Guard(issuer.url, ClientAuth.with_secret(rs.client_id, rs.secret)) as guard:
        middleware = IntrospectMiddleware(app, guard)
        scope = {"type": "websocket", "path": "/ws", "headers": []}
        await middleware(scope, receive, send)
    assert sent == [{"type": "websocket.close", "code": POLICY_VIOLATION}]
    assert reached == []
