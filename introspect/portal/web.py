"""The portal's pages under /portal: thin aiohttp views over `sessions` and `keys`.

Server-rendered HTML (Jinja2, autoescaped) that works without JavaScript;
`static/portal.js` only adds the copy button. Every answer carries a strict
Content-Security-Policy (scripts and styles from this origin only, no
inline ones, no framing), `Referrer-Policy: no-referrer` and
`Cache-Control: no-store`. Every POST needs the session's CSRF token;
without it nothing changes. Errors are pages in the portal's own look,
never a stack trace or a JSON body. A request without a live session is
sent to the "expired" page.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import jinja2
from aiohttp import web

from introspect import forms, store
from introspect.config import Settings
from introspect.errors import AdminError, Invalid, OAuth2Error
from introspect.portal import keys, sessions
from introspect.portal.forms import GRACE_CHOICES, one
from introspect.portal.sessions import LINK_TTL
from introspect.service import Authority
from introspect.store.portal_sessions import Session
from introspect.web.errors import UNAVAILABLE
from introspect.web.keys import AUTHORITY, SETTINGS

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
        " form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}
FORM = "application/x-www-form-urlencoded"
HOME = "/portal/"
EXPIRED = "/portal/expired"
NOTICES = {
    "revoked": "The key is revoked: it stopped working everywhere at once.",
    "updated": "The key is changed.",
}
TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("introspect.portal", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
STATIC = {
    "portal.css": "text/css",
    "portal.js": "text/javascript",
}
_STATIC_FILES = {
    name: resources.files("introspect.portal").joinpath("static", name).read_bytes()
    for name in STATIC
}


def when(epoch: int | None, empty: str = "never") -> str:
    """An epoch second as the pages show it, in UTC."""
    if epoch is None:
        return empty
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(epoch))


TEMPLATES.filters["when"] = when


def cookie_name(settings: Settings) -> str:
    """The session cookie's name: `__Host-` prefixed when the issuer is https."""
    return "__Host-portal" if _secure(settings) else "portal"


def _secure(settings: Settings) -> bool:
    return settings.issuer.startswith("https://")


def forget_cookie(response: web.Response, settings: Settings) -> None:
    """Tell the browser to drop the session cookie (with the attributes it was set with: a
    browser ignores a `__Host-` cookie without `Secure`, even one that deletes it)."""
    response.del_cookie(
        cookie_name(settings), path="/", secure=_secure(settings), httponly=True, samesite="Strict"
    )


def page(template: str, code: int = 200, /, **context: Any) -> web.Response:
    """A rendered page, answered with the status `code`."""
    body = TEMPLATES.get_template(template).render(**context)
    return web.Response(text=body, status=code, content_type="text/html")


def message(status: int, title: str, text: str, return_url: str | None = None) -> web.Response:
    """A page that only says something (an error, the end of a session)."""
    return page("message.html", status, title=title, text=text, return_url=return_url)


def see_other(location: str) -> web.Response:
    """A 303 to another portal page (after a POST, or without a session)."""
    return web.Response(status=303, headers={"Location": location})


# --- errors and headers --------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def pages(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure as a friendly page; the security headers on every answer."""
    try:
        response = await handler(request)
    except Exception as exc:  # every failure becomes a page: none reaches the JSON layer
        response = _failure(request, exc)
    response.headers.update(HEADERS)
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def _failure(request: web.Request, exc: Exception) -> web.Response:
    if isinstance(exc, AdminError) and exc.status == 404:
        return message(404, "Not found", "There is no such page or key here.")
    if isinstance(exc, AdminError):
        return message(exc.status, "That did not work", exc.description)
    if isinstance(exc, OAuth2Error):
        return message(400, "That did not work", "The form could not be read.")
    if isinstance(exc, web.HTTPException):
        if exc.status == 404:
            return message(404, "Not found", "There is no such page or key here.")
        if exc.status == 405:
            return message(405, "Not allowed", "This page cannot be used that way.")
        return message(exc.status, "That did not work", exc.reason)
    if isinstance(exc, UNAVAILABLE):
        log.warning("portal: store unavailable: %s", type(exc).__name__)
        return message(
            503, "Temporarily unavailable", "The service cannot be reached. Try again shortly."
        )
    log.exception("portal: unexpected error", exc_info=exc)
    return message(500, "Something went wrong", "Nothing was changed. Try again shortly.")


# --- sessions ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Visit:
    """A request of a signed-in consumer: their session, its CSRF token, a POST's form."""

    session: Session
    csrf: str
    form: Mapping[str, list[str]]


View = Callable[[web.Request, Visit], Awaitable[web.Response]]


def authority(request: web.Request) -> Authority:
    """The Authority of the application the portal is mounted in."""
    return request.config_dict[AUTHORITY]


def settings(request: web.Request) -> Settings:
    """The Settings of the application the portal is mounted in."""
    return request.config_dict[SETTINGS]


async def read_form(request: web.Request) -> dict[str, list[str]]:
    """The fields of a form POST (each with its non-empty values)."""
    if request.content_type != FORM:
        raise Invalid("the form was not sent as a form")
    return forms.parse_form(await request.read())


def signed_in(view: View) -> Handler:
    """Run `view` for a live session only (else: the expired page); a POST must carry the
    session's CSRF token (else: 403, and nothing changes)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        auth = authority(request)
        name = cookie_name(settings(request))
        cookie = request.cookies.get(name)
        session = None if cookie is None else await sessions.authenticate(auth, cookie)
        if cookie is None or session is None:
            response = see_other(EXPIRED)
            if cookie is not None:
                forget_cookie(response, settings(request))
            return response
        form: dict[str, list[str]] = {}
        if request.method == "POST":
            form = await read_form(request)
            if not sessions.csrf_valid(auth, cookie, one(form, "csrf")):
                return message(
                    403,
                    "This form has expired",
                    "It was not sent from a current portal page, so nothing was changed."
                    " Go back, reload the page and try again.",
                    session.return_url,
                )
        return await view(request, Visit(session, sessions.csrf_token(auth, cookie), form))

    return handler


@routes.get("/enter/{link}")
async def enter(request: web.Request) -> web.Response:
    """Redeem a one-time link: set the session cookie and go on to the key list."""
    ttl = settings(request).portal_session_ttl
    redeemed = await sessions.redeem(authority(request), request.match_info["link"], ttl)
    if redeemed is None:
        return message(
            410,
            "This link no longer works",
            f"A portal link works once, within {LINK_TTL // 60} minutes of being made."
            " Go back to the product you came from and open the portal again.",
        )
    cookie, session = redeemed
    # A page that moves on by itself (not a redirect): the browser then sends the SameSite=
    # Strict cookie to the next page even when the link was opened from another site.
    response = page("enter.html", session=session)
    response.set_cookie(
        cookie_name(settings(request)),
        cookie,
        max_age=ttl,
        path="/",
        secure=_secure(settings(request)),
        httponly=True,
        samesite="Strict",
    )
    return response


@routes.get("/expired")
async def expired(_request: web.Request) -> web.Response:
    """Where a request without a live session lands."""
    return message(
        401,
        "Your portal link or session has expired",
        "Sessions end after a while and when you sign out, and a portal link works only once."
        " Go back to the product you came from and open the portal again.",
    )


async def _sign_out(request: web.Request, visit: Visit) -> web.Response:
    await sessions.sign_out(authority(request), visit.session)
    response = message(
        200,
        "You are signed out",
        "This portal session has ended.",
        visit.session.return_url,
    )
    forget_cookie(response, settings(request))
    return response


# --- keys ----------------------------------------------------------------------------------


def _context(visit: Visit, **more: Any) -> dict[str, Any]:
    return {"session": visit.session, "csrf": visit.csrf, "now": store.now(), **more}


async def _list(request: web.Request, visit: Visit) -> web.Response:
    listed = await keys.listed(authority(request), visit.session)
    notice = NOTICES.get(request.query.get("done", ""))
    usage = await keys.usage(authority(request), listed, store.now())
    return page(
        "list.html",
        **_context(visit, keys=listed, status=keys.status, notice=notice, usage=usage),
    )


async def _new(_request: web.Request, visit: Visit) -> web.Response:
    return page("new.html", **_context(visit, error=None, form={}))


async def _create(request: web.Request, visit: Visit) -> web.Response:
    try:
        issued = await keys.create(authority(request), visit.session, visit.form)
    except Invalid as exc:
        return page("new.html", 400, **_context(visit, error=exc.description, form=visit.form))
    return page("issued.html", 201, **_context(visit, issued=issued, replaced=None))


async def _show(request: web.Request, visit: Visit, error: str | None = None) -> web.Response:
    key = await keys.owned(authority(request), visit.session, request.match_info["key_id"])
    return page(
        "key.html",
        400 if error else 200,
        **_context(
            visit, key=key, status=keys.status(key, store.now()), grace=GRACE_CHOICES, error=error
        ),
    )


async def _update(request: web.Request, visit: Visit) -> web.Response:
    key_id = request.match_info["key_id"]
    try:
        await keys.update(authority(request), visit.session, key_id, visit.form)
    except Invalid as exc:
        return await _show(request, visit, exc.description)
    return see_other(f"{HOME}?done=updated")


async def _roll(request: web.Request, visit: Visit) -> web.Response:
    key_id = request.match_info["key_id"]
    try:
        rolled = await keys.roll(authority(request), visit.session, key_id, visit.form)
    except Invalid as exc:
        return await _show(request, visit, exc.description)
    return page("issued.html", 201, **_context(visit, issued=rolled, replaced=rolled["replaced"]))


async def _confirm_revoke(request: web.Request, visit: Visit) -> web.Response:
    key = await keys.owned(authority(request), visit.session, request.match_info["key_id"])
    return page("revoke.html", **_context(visit, key=key))


async def _revoke(request: web.Request, visit: Visit) -> web.Response:
    await keys.revoke(authority(request), visit.session, request.match_info["key_id"])
    return see_other(f"{HOME}?done=revoked")


routes.get("")(signed_in(_list))
routes.get("/")(signed_in(_list))
routes.get("/keys/new")(signed_in(_new))
routes.post("/keys")(signed_in(_create))
routes.get("/keys/{key_id}")(signed_in(_show))
routes.post("/keys/{key_id}")(signed_in(_update))
routes.post("/keys/{key_id}/roll")(signed_in(_roll))
routes.get("/keys/{key_id}/revoke")(signed_in(_confirm_revoke))
routes.post("/keys/{key_id}/revoke")(signed_in(_revoke))
routes.post("/sign-out")(signed_in(_sign_out))


@routes.get("/static/{name}")
async def static(request: web.Request) -> web.Response:
    """The portal's stylesheet and script, served from the package (no CDN, no build)."""
    name = request.match_info["name"]
    if name not in STATIC:
        raise web.HTTPNotFound()
    return web.Response(
        body=_STATIC_FILES[name],
        content_type=STATIC[name],
        headers={"Cache-Control": "public, max-age=3600"},
    )


def subapp() -> web.Application:
    """A fresh portal application, to mount at /portal on the public application."""
    app = web.Application(middlewares=[pages])
    app.add_routes(routes)
    return app
