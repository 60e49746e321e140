"""The aiohttp application factory: routers, typed app keys, one cleanup context per resource."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from introspect.config import Settings
from introspect.service import open_authority
from introspect.web import public
from introspect.web.errors import error_middleware
from introspect.web.keys import AUTHORITY, SETTINGS


def create_app(settings: Settings, database_url: str, redis_url: str) -> web.Application:
    """The public application, with its Authority opened and closed with it."""
    app = web.Application(client_max_size=settings.max_body_size, middlewares=[error_middleware])
    app[SETTINGS] = settings

    async def authority_ctx(app: web.Application) -> AsyncIterator[None]:
        async with open_authority(settings, database_url, redis_url, listen=True) as authority:
            app[AUTHORITY] = authority
            yield

    app.cleanup_ctx.append(authority_ctx)
    app.add_routes(public.routes)
    return app
