"""The SDK's example resource server on FastAPI: `GET /items` needs scope `read`,
`POST /items` scope `write`, `/healthz` is public and shows the SDK's counters.

    pip install 'introspect-sdk[fastapi]' uvicorn
    INTROSPECT_ISSUER=http://127.0.0.1:8080 INTROSPECT_CLIENT_ID=... \\
    INTROSPECT_CLIENT_SECRET=... uvicorn --factory fastapi_app:from_env --port 8091

(run from sdk/examples; or INTROSPECT_ACCESS_KEY=iak_... instead of the id and secret).
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from aiohttp_app import ITEMS, guard_from_env
from fastapi import Depends, FastAPI

from introspect_sdk import Guard, Introspection
from introspect_sdk.fastapi import RequireScope, lifespan, protect

Reader = Annotated[Introspection, Depends(RequireScope("read"))]
Writer = Annotated[Introspection, Depends(RequireScope("write"))]


def create_app(guard: Guard) -> FastAPI:
    """The example app, protected by `guard`."""
    app = FastAPI(lifespan=lifespan(guard))
    protect(app, guard, public={"/healthz"})

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"ok": True, "sdk": guard.metrics.snapshot()}

    @app.get("/items")
    async def list_items(answer: Reader) -> dict[str, Any]:
        return {
            "items": ITEMS,
            "sub": answer.sub,
            "client_id": answer.client_id,
            "metadata": dict(answer.metadata),
        }

    @app.post("/items", status_code=201)
    async def add_item(answer: Writer) -> dict[str, Any]:
        return {"added": True, "by": answer.sub}

    return app


def from_env() -> FastAPI:
    """The app configured from the environment (uvicorn's --factory)."""
    return create_app(guard_from_env(os.environ))
