"""The aiohttp application factory: routers, typed app keys, one cleanup context per resource."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from introspect import metrics
from introspect.config import Settings
from introspect.portal import web as portal
from introspect.service import open_authority
from introspect.web import admin, public
from introspect.web.errors import error_middleware
from introspect.web.health import Readiness
from introspect.web.keys import ANSWERS, AUTHORITY, READINESS, SETTINGS
from introspect.web.protocol import Answers


def create_app(settings: Settings, database_url: str, redis_url: str) -> web.Application:
    """The public application, with its Authority opened and closed with it.

    The admin API is mounted at /admin too, unless it has a port of its own
    (`settings.admin_port`): then `create_admin_app` serves it there.
    """
    app = web.Application(client_max_size=settings.max_body_size, middlewares=[error_middleware])
    app[SETTINGS] = settings
    app[ANSWERS] = answers = Answers()
    app.on_response_prepare.append(answers.prepare)
    app[READINESS] = Readiness()

    async def authority_ctx(app: web.Application) -> AsyncIterator[None]:
        async with open_authority(settings, database_url, redis_url, listen=True) as authority:
            app[AUTHORITY] = authority
            yield

    async def answer_parked_polls(app: web.Application) -> None:
        # Before the server waits for its handlers: a long poll of /events ends now.
        app[AUTHORITY].feed.waker.close()

    app.cleanup_ctx.append(authority_ctx)
    app.on_shutdown.append(answer_parked_polls)
    app.cleanup_ctx.append(metrics.flushing)
    app.add_routes(public.routes)
    app.add_routes(admin.docs)
    app.add_subapp("/portal", portal.subapp())
    if settings.admin_port is None:
        app.add_subapp("/admin", admin.subapp())
    return app


def create_admin_app(settings: Settings, main: web.Application) -> web.Application:
    """The admin API alone, for the admin port, over `main`'s Authority (start `main` first)."""
    app = web.Application(client_max_size=settings.max_body_size, middlewares=[error_middleware])
    app[SETTINGS] = settings
    app[ANSWERS] = answers = Answers()
    app.on_response_prepare.append(answers.prepare)

    async def borrowed_authority(app: web.Application) -> AsyncIterator[None]:
        app[AUTHORITY] = main[AUTHORITY]
        yield

    app.cleanup_ctx.append(borrowed_authority)
    app.add_subapp("/admin", admin.subapp())
    return app
