"""Calls of the admin API and checks of its answers, shared by the admin tests."""

from __future__ import annotations

import secrets
from typing import Any

from tests.helpers import AdminAPI, Answer, Registered, Server, basic
from tests.integration.test_flow import introspect


def unique(prefix: str = "t") -> str:
    """A name no other test uses."""
    return f"{prefix}-{secrets.token_hex(6)}"


async def created_client(api: AdminAPI, **fields: Any) -> dict[str, Any]:
    """Register a client through the admin API; its record with the secret."""
    resp = await api.call("POST", "/clients", {"name": unique(), **fields})
    assert resp.status == 201, resp.body
    return resp.json()


async def created_key(api: AdminAPI, **fields: Any) -> dict[str, Any]:
    """Issue an API key through the admin API; its record with the key."""
    resp = await api.call("POST", "/api-keys", fields)
    assert resp.status == 201, resp.body
    return resp.json()


async def token_works(server: Server, client_id: str, secret: str) -> bool:
    """Whether the client can get a token with this secret."""
    resp = await server.post_form(
        "/token", {"grant_type": "client_credentials"}, headers=basic(client_id, secret)
    )
    assert resp.status in (200, 401), resp.body
    return resp.status == 200


async def active(server: Server, rs: Registered, token: str) -> bool:
    """Whether the credential introspects active."""
    return (await introspect(server, rs, token))["active"]


def error_of(resp: Answer, status: int) -> str:
    """The error_description of an admin error answer, after checking its status and shape."""
    assert resp.status == status, (resp.status, resp.body)
    body = resp.json()
    assert set(body) == {"error", "error_description"}
    return body["error_description"]


async def rotate_secret(api: AdminAPI, client_id: str, body: Any) -> str:
    """Rotate a client's secret; the new one."""
    resp = await api.call("POST", f"/clients/{client_id}/secrets", body)
    assert resp.status == 200, resp.body
    assert resp.json()["client_id"] == client_id
    return resp.json()["client_secret"]


async def revoke(api: AdminAPI, body: Any) -> dict[str, Any]:
    """POST /admin/revocations; the answer."""
    resp = await api.call("POST", "/revocations", body)
    assert resp.status == 200, resp.body
    return resp.json()


async def walk(api: AdminAPI, path: str, limit: int, between: Any = None) -> list[dict]:
    """Every item of a paginated list, calling `between()` after each page."""
    items: list[dict] = []
    cursor = None
    while True:
        query = f"limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        sep = "&" if "?" in path else "?"
        resp = await api.call("GET", f"{path}{sep}{query}")
        assert resp.status == 200, resp.body
        page = resp.json()
        assert len(page["items"]) <= limit
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items
        if between is not None:
            await between()
