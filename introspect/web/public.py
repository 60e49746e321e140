"""Public routes: the OAuth endpoints, discovery, health and metrics.

Each view parses the request, calls the protocol module (the decisions live
in `introspect/rfc*.py`) or the authority, and writes the answer.
"""

from __future__ import annotations

import logging

from aiohttp import web

from introspect import (
    forms,
    metrics,
    rfc6749,
    rfc7009,
    rfc7662,
    rfc8936,
    rfc9701,
    signing,
)
from introspect.errors import InvalidRequest, UnauthorizedClient
from introspect.service import Authority
from introspect.store import Client
from introspect.web.errors import json_response
from introspect.web.headers import caching
from introspect.web.keys import AUTHORITY, BOARD, READINESS

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

FORM = "application/x-www-form-urlencoded"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


async def read_form(request: web.Request) -> tuple[dict[str, str], dict[str, list[str]]]:
    """The single-valued and multi-valued parameters of a form POST (RFC 6749 §3.1)."""
    # The exact header, as nearly every client sends it, spares aiohttp's parse of it
    # (several microseconds); anything else (parameters, case) is parsed.
    if request.headers.get("Content-Type") != FORM and request.content_type != FORM:
        raise InvalidRequest(f"the body must be {FORM}")
    content = request.content
    if content.is_eof():
        # The whole body came with the headers, as it nearly always does: take it as it
        # is, without the reading loop of request.read() (and check its size here).
        raw = content.read_nowait()
        if len(raw) >= request.client_max_size:
            raise web.HTTPRequestEntityTooLarge(
                max_size=request.client_max_size, actual_size=len(raw)
            )
    else:
        raw = await request.read()
    multi = forms.parse_form(raw)
    return forms.single(multi), multi


async def authenticated(
    authority: Authority, request: web.Request, params: dict[str, str]
) -> Client:
    """The client that authenticated this request (RFC 6749 §2.3)."""
    return await authority.authenticate(request.headers.get("Authorization"), params)


@routes.post("/token")
async def token(request: web.Request) -> web.Response:
    """RFC 6749 §4.4: the client credentials grant."""
    authority = request.app[AUTHORITY]
    params, multi = await read_form(request)
    client = await authenticated(authority, request, params)
    grant = rfc6749.client_credentials_grant(client, params, multi)
    access_token, expires_in = await authority.issue_access_token(client, grant)
    return json_response(
        rfc6749.token_response(access_token, expires_in, grant.scopes), headers=NO_STORE
    )


@routes.post("/introspect")
async def introspect(request: web.Request) -> web.Response:
    """RFC 7662 §2: introspection, decided by `rfc7662` (from memory when it can)."""
    authority = request.app[AUTHORITY]
    params, _ = await read_form(request)
    authorization = request.headers.get("Authorization")
    if rfc9701.wants_jwt(request.headers.get("Accept")):
        caller, answer = await rfc7662.complete(authority, authorization, params)
        jwt = await authority.sign_introspection(caller, answer.body)
        headers = dict(caching(authority, answer))
        del headers["Content-Type"]
        return web.Response(body=jwt, content_type=rfc9701.MEDIA_TYPE, headers=headers)
    found = rfc7662.from_memory(authority, authorization, params)
    if found is None or isinstance(found, rfc7662.Pending):
        _caller, answer = await rfc7662.complete(authority, authorization, params, found)
    else:
        answer = found
    return web.Response(body=answer.body, headers=caching(authority, answer))


@routes.post("/revoke")
async def revoke(request: web.Request) -> web.Response:
    """RFC 7009 §2: a client revokes one of its own credentials; anything else changes nothing."""
    authority = request.app[AUTHORITY]
    params, _ = await read_form(request)
    client = await authenticated(authority, request, params)
    presented = rfc7009.token_parameter(params)
    await authority.revoke_presented(
        presented, actor=f"client:{client.client_id}", owner=client.client_id
    )
    return web.Response(status=rfc7009.STATUS, headers=NO_STORE)


@routes.post("/events")
async def events(request: web.Request) -> web.Response:
    """RFC 8936 §2.4: the revocation feed, polled by resource servers (introspect/feed.py).

    The caller authenticates as on /introspect (HTTP Basic, or the client
    authentication members in the JSON body) and must be allowed to introspect.
    """
    authority = request.app[AUTHORITY]
    if request.content_type != rfc8936.MEDIA_TYPE:
        raise InvalidRequest(f"the body must be {rfc8936.MEDIA_TYPE}")
    poll = rfc8936.parse(await request.read())
    caller = await authenticated(authority, request, poll.auth)
    if not caller.can_introspect:
        raise UnauthorizedClient("this client may not introspect")
    return json_response(await authority.feed.poll(caller, poll), headers=NO_STORE)


@routes.get("/.well-known/oauth-authorization-server")
@routes.get("/.well-known/openid-configuration")
async def discovery(request: web.Request) -> web.Response:
    """RFC 8414 metadata; also where clients that only know OpenID Connect discovery look
    (RFC 8414 §5), such as openid-client's Issuer.discover. The document stays RFC 8414's:
    this server is not an OpenID provider."""
    body = await request.app[AUTHORITY].metadata()
    return web.Response(body=body, content_type="application/json")


@routes.get("/jwks.json")
async def jwks(request: web.Request) -> web.Response:
    """RFC 7517 §5: every published signing key, including those not signing yet."""
    body = await request.app[AUTHORITY].keyring.jwks()
    cache = {"Cache-Control": f"public, max-age={signing.JWKS_MAX_AGE}"}
    return web.Response(body=body, content_type="application/json", headers=cache)


@routes.get("/healthz")
async def healthz(_request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Readiness: Postgres must answer; without Redis, or with workers missing, the service is
    degraded but serving. Checked at most once a second per worker (see web/health.py)."""
    app = request.app
    body, code = await app[READINESS].answer(app[AUTHORITY], app.get(BOARD))
    return json_response(body, code)


@routes.get("/metrics")
async def metrics_view(_request: web.Request) -> web.Response:
    """Prometheus exposition of every worker's counters."""
    body, content_type = await metrics.render()
    return web.Response(body=body, headers={"Content-Type": content_type})
