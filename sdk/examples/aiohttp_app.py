"""The SDK's example resource server on aiohttp: `GET /items` needs scope `read`,
`POST /items` scope `write`, `/healthz` is public and shows the SDK's counters.

    INTROSPECT_ISSUER=http://127.0.0.1:8080 INTROSPECT_CLIENT_ID=... \\
    INTROSPECT_CLIENT_SECRET=... python sdk/examples/aiohttp_app.py   # listens on :8090

(or INTROSPECT_ACCESS_KEY=iak_... instead of the id and secret). The client must be
allowed to introspect. `EXAMPLE_NO_CACHE=1` asks introspect on every request.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from aiohttp import web

from introspect_sdk import ClientAuth, Guard
from introspect_sdk.aiohttp import INTROSPECTION, lifecycle, middleware, require_scope

ITEMS = ("apples", "pears")


@require_scope("read")
async def list_items(request: web.Request) -> web.Response:
    """The items, and who asked."""
    answer = request[INTROSPECTION]
    return web.json_response(
        {
            "items": ITEMS,
            "sub": answer.sub,
            "client_id": answer.client_id,
            "metadata": dict(answer.metadata),
        }
    )


@require_scope("write")
async def add_item(request: web.Request) -> web.Response:
    """Pretend to add an item."""
    return web.json_response({"added": True, "by": request[INTROSPECTION].sub}, status=201)


def create_app(guard: Guard) -> web.Application:
    """The example app, protected by `guard`."""
    app = web.Application(middlewares=[middleware(guard, public={"/healthz"})])
    app.cleanup_ctx.append(lifecycle(guard))

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "sdk": guard.metrics.snapshot()})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/items", list_items)
    app.router.add_post("/items", add_item)
    return app


def guard_from_env(env: Mapping[str, str]) -> Guard:
    """A guard configured from the environment (see the module's docstring)."""
    return Guard(
        env["INTROSPECT_ISSUER"],
        ClientAuth.from_env(env),
        cache_ttl=0 if env.get("EXAMPLE_NO_CACHE") else 60,
        api_key_header="X-API-Key",
    )


if __name__ == "__main__":
    port = int(os.environ.get("EXAMPLE_PORT", "8090"))
    web.run_app(create_app(guard_from_env(os.environ)), host="127.0.0.1", port=port)
