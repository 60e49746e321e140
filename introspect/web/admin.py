"""The admin API: thin views over `introspect.admin`, behind a bearer admin key.

`subapp()` builds the admin application, mounted at `/admin` on the main
application, or alone on the admin port (`introspect serve --admin-port`)
so it can be firewalled apart from the public endpoints (STYLE 9). Every
request must carry `Authorization: Bearer <admin key>`; otherwise it is
answered 401 with `WWW-Authenticate: Bearer` (RFC 6750 §3), with
`error="invalid_token"` when a key was presented but is not a live one. A
key of the `auditor` role may only read (GET); anything else is 403
`insufficient_scope`. Every refusal is counted in /metrics by reason and
logged at WARNING with that reason (never any part of the presented value).
Every admin answer carries `Cache-Control: no-store`.

`docs` serves the OpenAPI document of the whole HTTP interface, public and
admin, read once from `introspect/openapi.json` at start.
"""

from __future__ import annotations

import logging
from importlib import resources

import orjson
from aiohttp import web

from introspect import admin
from introspect.errors import AdminError, Invalid
from introspect.metrics import METRICS
from introspect.portal import sessions as portal_sessions
from introspect.service import Authority
from introspect.web.errors import Handler, json_response
from introspect.web.keys import AUTHORITY

routes = web.RouteTableDef()
docs = web.RouteTableDef()

log = logging.getLogger(__name__)
ACTOR = web.RequestKey("actor", str)
JSON = "application/json"
REALM = 'Bearer realm="introspect-admin"'
READS = frozenset({"GET", "HEAD"})
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OPENAPI = orjson.dumps(
    orjson.loads(resources.files("introspect").joinpath("openapi.json").read_bytes())
)


def _refused(
    request: web.Request, reason: admin.Refusal, status: int, challenge: str, key_id: str = ""
) -> web.Response:
    """A 401 or 403 for an admin request, counted and logged by reason (never the key)."""
    METRICS.admin_refused(reason)
    # Only what the server itself knows: nothing the caller sent (not even an odd method).
    resource = request.match_info.route.resource
    log.warning(
        "admin request refused: %s%s (%s %s from %s)",
        reason,
        f", key {key_id}" if key_id else "",
        request.method if request.method in _METHODS else "other method",
        "unmatched route" if resource is None else resource.canonical,
        request.remote,
    )
    error, description = _DESCRIPTIONS[reason]
    return json_response(
        {"error": error, "error_description": description},
        status,
        headers={"WWW-Authenticate": challenge},
    )


_INVALID = ("invalid_token", "the admin key is not valid")
_DESCRIPTIONS = {
    admin.Refusal.MISSING: ("unauthorized", "an admin key is required (Bearer)"),
    admin.Refusal.MALFORMED: _INVALID,
    admin.Refusal.UNKNOWN: _INVALID,
    admin.Refusal.REVOKED: _INVALID,
    admin.Refusal.EXPIRED: _INVALID,
    admin.Refusal.INSUFFICIENT_SCOPE: (
        "insufficient_scope",
        "this admin key has the auditor role: it may only read (GET)",
    ),
}


@web.middleware
async def bearer_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Admit requests carrying a live admin key whose role allows them; record it as actor."""
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        return _refused(request, admin.Refusal.MISSING, 401, REALM)
    key = await admin.authenticate(authority(request), presented)
    if isinstance(key, admin.Refusal):
        return _refused(request, key, 401, f'{REALM}, error="invalid_token"')
    if not admin.permits(key, writes=request.method not in READS):
        challenge = f'{REALM}, error="insufficient_scope", scope="admin"'
        return _refused(request, admin.Refusal.INSUFFICIENT_SCOPE, 403, challenge, key.id)
    request[ACTOR] = key.id
    return await handler(request)


async def _no_store(_request: web.Request, response: web.StreamResponse) -> None:
    """Every admin answer, errors included, is private to its caller: never cached."""
    response.headers["Cache-Control"] = "no-store"


def subapp() -> web.Application:
    """A fresh admin application (each parent needs its own), to mount at /admin."""
    app = web.Application(middlewares=[bearer_auth])
    app.on_response_prepare.append(_no_store)
    app.add_routes(routes)
    return app


def authority(request: web.Request) -> Authority:
    """The Authority, from whichever application the admin routes are mounted in."""
    return request.config_dict[AUTHORITY]


async def read_body(request: web.Request) -> object:
    """The JSON body (an empty one reads as `{}`); the view's operation checks its shape."""
    raw = await request.read()
    if not raw:
        return {}
    if request.content_type != JSON:
        raise AdminError(415, "invalid_request", f"the body must be {JSON}")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise Invalid("the body is not valid JSON") from None


def read_query(request: web.Request) -> dict[str, str]:
    """The query parameters, each at most once."""
    out: dict[str, str] = {}
    for name, value in request.query.items():
        if name in out:
            raise Invalid(f"parameter {name[:40]!r} is repeated")
        out[name] = value
    return out


# --- clients -------------------------------------------------------------------------------


@routes.post("/clients")
async def create_client(request: web.Request) -> web.Response:
    """Register a client; 201 with its secret, shown once."""
    body = await read_body(request)
    created = await admin.create_client(authority(request), request[ACTOR], body)
    return json_response(created, 201)


@routes.get("/clients")
async def list_clients(request: web.Request) -> web.Response:
    """A page of clients."""
    return json_response(await admin.list_clients(authority(request), read_query(request)))


@routes.get("/clients/{client_id}")
async def read_client(request: web.Request) -> web.Response:
    """One client."""
    client_id = request.match_info["client_id"]
    return json_response(await admin.read_client(authority(request), client_id))


@routes.patch("/clients/{client_id}")
async def update_client(request: web.Request) -> web.Response:
    """Change a client."""
    body = await read_body(request)
    client_id = request.match_info["client_id"]
    return json_response(
        await admin.update_client(authority(request), request[ACTOR], client_id, body)
    )


@routes.delete("/clients/{client_id}")
async def delete_client(request: web.Request) -> web.Response:
    """Disable a client and revoke everything it holds; 204."""
    await admin.delete_client(authority(request), request[ACTOR], request.match_info["client_id"])
    return web.Response(status=204)


@routes.post("/clients/{client_id}/secrets")
async def rotate_client_secret(request: web.Request) -> web.Response:
    """A new client secret; the old one lives on for the grace period."""
    body = await read_body(request)
    client_id = request.match_info["client_id"]
    rotated = await admin.rotate_client_secret(authority(request), request[ACTOR], client_id, body)
    return json_response(rotated)


@routes.post("/clients/{client_id}/access-keys")
async def create_access_key(request: web.Request) -> web.Response:
    """A new key pair for the client; 201 with its kid and the access key, shown once."""
    body = await read_body(request)
    client_id = request.match_info["client_id"]
    created = await admin.create_access_key(authority(request), request[ACTOR], client_id, body)
    return json_response(created, 201, headers={"Cache-Control": "no-store"})


@routes.delete("/clients/{client_id}/access-keys/{kid}")
async def delete_access_key(request: web.Request) -> web.Response:
    """Remove a key from the client's jwks; 204."""
    client_id, kid = request.match_info["client_id"], request.match_info["kid"]
    await admin.delete_access_key(authority(request), request[ACTOR], client_id, kid)
    return web.Response(status=204)


# --- API keys, revocations, listings -------------------------------------------------------


@routes.post("/api-keys")
async def create_api_key(request: web.Request) -> web.Response:
    """Issue an API key; 201 with the key, shown once."""
    body = await read_body(request)
    issued = await admin.create_api_key(authority(request), request[ACTOR], body)
    return json_response(issued, 201)


@routes.get("/api-keys/{key_id}")
async def read_api_key(request: web.Request) -> web.Response:
    """An API key, with the state of its limits now."""
    key_id = request.match_info["key_id"]
    return json_response(await admin.read_api_key(authority(request), key_id))


@routes.patch("/api-keys/{key_id}")
async def update_api_key(request: web.Request) -> web.Response:
    """Change a live API key."""
    body = await read_body(request)
    key_id = request.match_info["key_id"]
    return json_response(
        await admin.update_api_key(authority(request), request[ACTOR], key_id, body)
    )


@routes.post("/api-keys/{key_id}/rotate")
async def rotate_api_key(request: web.Request) -> web.Response:
    """A new API key like the old one, which expires after the grace period."""
    body = await read_body(request)
    key_id = request.match_info["key_id"]
    rotated = await admin.rotate_api_key(authority(request), request[ACTOR], key_id, body)
    return json_response(rotated)


@routes.post("/revocations")
async def revoke(request: web.Request) -> web.Response:
    """Revoke by one selector; how many, and how many workers acknowledged."""
    body = await read_body(request)
    revoked = await admin.revoke(authority(request), request[ACTOR], body)
    return json_response(admin.revoked_answer(revoked))


@routes.get("/tokens")
async def list_tokens(request: web.Request) -> web.Response:
    """A page of credentials, never their values or hashes."""
    return json_response(await admin.list_tokens(authority(request), read_query(request)))


@routes.get("/audit")
async def list_audit(request: web.Request) -> web.Response:
    """A page of the audit log, newest first."""
    return json_response(await admin.list_audit(authority(request), read_query(request)))


# --- admin keys ----------------------------------------------------------------------------


@routes.get("/admin-keys")
async def list_admin_keys(request: web.Request) -> web.Response:
    """A page of admin keys, never a key or its hash."""
    return json_response(await admin.list_admin_keys(authority(request), read_query(request)))


@routes.post("/admin-keys")
async def create_admin_key(request: web.Request) -> web.Response:
    """Mint an admin key; 201 with the key, shown once."""
    body = await read_body(request)
    minted = await admin.create_admin_key(authority(request), request[ACTOR], body)
    return json_response(minted, 201)


@routes.delete("/admin-keys/{key_id}")
async def revoke_admin_key(request: web.Request) -> web.Response:
    """Revoke an admin key; 204 (409 for the last live admin-role key)."""
    key_id = request.match_info["key_id"]
    await admin.revoke_admin_key(authority(request), request[ACTOR], key_id)
    return web.Response(status=204)


# --- developer portal sessions ------------------------------------------------------------


@routes.post("/portal-sessions")
async def create_portal_session(request: web.Request) -> web.Response:
    """A one-time link into the developer portal for a consumer; 201 with its url."""
    body = await read_body(request)
    minted = await portal_sessions.mint_link(authority(request), request[ACTOR], body)
    return json_response(minted, 201)


@routes.delete("/portal-sessions/{session_id}")
async def revoke_portal_session(request: web.Request) -> web.Response:
    """End a portal session (or an unused link) at once; 204."""
    session_id = request.match_info["session_id"]
    await portal_sessions.revoke_session(authority(request), request[ACTOR], session_id)
    return web.Response(status=204)


# --- the interface description -------------------------------------------------------------


@docs.get("/openapi.json")
async def openapi(_request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document of every public and admin route."""
    return web.Response(body=OPENAPI, content_type=JSON)
