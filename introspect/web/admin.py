"""The admin API: thin views over `introspect.admin`, behind a bearer admin key.

`subapp()` builds the admin application, mounted at `/admin` on the main
application, or alone on the admin port (`introspect serve --admin-port`)
so it can be firewalled apart from the public endpoints (STYLE 9). Every
request must carry `Authorization: Bearer <admin key>`; otherwise it is
answered 401 with `WWW-Authenticate: Bearer` (RFC 6750 §3), with
`error="invalid_token"` when a key was presented but is not a live one.

`docs` serves the OpenAPI document of the whole HTTP interface, public and
admin, read once from `introspect/openapi.json` at start.
"""

from __future__ import annotations

from importlib import resources

import orjson
from aiohttp import web

from introspect import admin
from introspect.errors import AdminError, Invalid
from introspect.service import Authority
from introspect.web.errors import Handler, json_response
from introspect.web.keys import AUTHORITY

routes = web.RouteTableDef()
docs = web.RouteTableDef()

ACTOR = web.RequestKey("actor", str)
JSON = "application/json"
REALM = 'Bearer realm="introspect-admin"'
OPENAPI = orjson.dumps(
    orjson.loads(resources.files("introspect").joinpath("openapi.json").read_bytes())
)


def _unauthorized(error: str, description: str, challenge: str) -> web.Response:
    return json_response(
        {"error": error, "error_description": description},
        401,
        headers={"WWW-Authenticate": challenge, "Cache-Control": "no-store"},
    )


@web.middleware
async def bearer_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Admit requests carrying a live admin key; record its id as the actor."""
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        return _unauthorized("unauthorized", "an admin key is required (Bearer)", REALM)
    actor = await admin.authenticate(authority(request), presented)
    if actor is None:
        return _unauthorized(
            "invalid_token", "the admin key is not valid", f'{REALM}, error="invalid_token"'
        )
    request[ACTOR] = actor
    return await handler(request)


def subapp() -> web.Application:
    """A fresh admin application (each parent needs its own), to mount at /admin."""
    app = web.Application(middlewares=[bearer_auth])
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
    return json_response(created, 201, headers={"Cache-Control": "no-store"})


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
    return json_response(rotated, headers={"Cache-Control": "no-store"})


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
    return json_response(issued, 201, headers={"Cache-Control": "no-store"})


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
    return json_response(rotated, headers={"Cache-Control": "no-store"})


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


# --- the interface description -------------------------------------------------------------


@docs.get("/openapi.json")
async def openapi(_request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document of every public and admin route."""
    return web.Response(body=OPENAPI, content_type=JSON)
