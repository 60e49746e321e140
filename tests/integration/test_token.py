"""RFC 6749 §4.4 at /token: client authentication, scope and audience rules, errors."""

from __future__ import annotations

import pytest

from introspect import admin
from introspect.service import Authority
from tests.helpers import Registered, Server, basic, register

GRANT = {"grant_type": "client_credentials"}


async def test_client_secret_post_works(server: Server, app_client: Registered) -> None:
    """client_secret_post authenticates like Basic."""
    resp = await server.post_form(
        "/token", {**GRANT, "client_id": app_client.client_id, "client_secret": app_client.secret}
    )
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["Pragma"] == "no-cache"


async def test_two_auth_methods_are_invalid_request(server: Server, app_client: Registered) -> None:
    """Basic and client_secret_post in one request is 400 invalid_request."""
    resp = await server.post_form(
        "/token",
        {**GRANT, "client_id": app_client.client_id, "client_secret": app_client.secret},
        headers=app_client.auth,
    )
    assert resp.status == 400
    assert resp.json()["error"] == "invalid_request"


@pytest.mark.parametrize("mode", ["wrong-secret", "unknown-client", "none"])
async def test_failed_authentication_is_401(
    server: Server, app_client: Registered, mode: str
) -> None:
    """A wrong secret, an unknown client or no authentication is 401 invalid_client."""
    headers = {
        "wrong-secret": basic(app_client.client_id, app_client.secret + "x"),
        "unknown-client": basic("client_nobody", app_client.secret),
        "none": {},
    }[mode]
    resp = await server.post_form("/token", GRANT, headers=headers)
    assert resp.status == 401
    assert resp.json()["error"] == "invalid_client"
    assert resp.headers["WWW-Authenticate"].startswith("Basic")


async def test_disabled_client_cannot_authenticate(server: Server, authority: Authority) -> None:
    """A disabled client is refused like an unknown one."""
    client = await register(authority)
    await admin.update_client(authority, "test", client.client_id, {"disabled": True})
    resp = await server.post_form("/token", GRANT, headers=client.auth)
    assert resp.status == 401


@pytest.mark.parametrize(
    ("form", "status", "error"),
    [
        ({}, 400, "invalid_request"),
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
        ({**GRANT, "scope": "admin"}, 400, "invalid_scope"),
        ({**GRANT, "scope": "read unknown"}, 400, "invalid_scope"),
        ({**GRANT, "scope": 'bad"quote'}, 400, "invalid_scope"),
    ],
)
async def test_grant_errors(
    server: Server, app_client: Registered, form: dict[str, str], status: int, error: str
) -> None:
    """Missing or unsupported grant types and out-of-range scopes get their RFC error."""
    resp = await server.post_form("/token", form, headers=app_client.auth)
    assert resp.status == status
    assert resp.json()["error"] == error


async def test_scope_subset_is_granted(server: Server, app_client: Registered) -> None:
    """A requested subset of the client's scopes is granted as asked."""
    resp = await server.post_form("/token", {**GRANT, "scope": "write"}, headers=app_client.auth)
    assert resp.json()["scope"] == "write"


async def test_client_without_scopes_gets_empty_scope(server: Server, authority: Authority) -> None:
    """scope is always present, empty for a client with none."""
    client = await register(authority, scopes=())
    resp = await server.post_form("/token", GRANT, headers=client.auth)
    assert resp.json()["scope"] == ""


async def test_audiences_from_resource_and_audience(
    server: Server, authority: Authority, resource_server: Registered
) -> None:
    """resource or audience select registered audiences; omitted means all of them."""
    client = await register(authority, audiences=("https://a.example", "https://b.example"))

    async def aud_of(form: list[tuple[str, str]]) -> object:
        tok = await server.post_form("/token", form, headers=client.auth)
        assert tok.status == 200, tok.body
        body = await server.post_form(
            "/introspect", {"token": tok.json()["access_token"]}, headers=resource_server.auth
        )
        return body.json().get("aud")

    grant = [("grant_type", "client_credentials")]
    assert await aud_of(grant) == ["https://a.example", "https://b.example"]
    assert await aud_of([*grant, ("resource", "https://b.example")]) == "https://b.example"
    assert await aud_of([*grant, ("audience", "https://a.example")]) == "https://a.example"
    both = [*grant, ("resource", "https://a.example"), ("resource", "https://b.example")]
    assert await aud_of(both) == ["https://a.example", "https://b.example"]


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ([("resource", "https://a.example"), ("audience", "https://a.example")], "invalid_request"),
        ([("resource", "https://elsewhere.example")], "invalid_target"),
        ([("resource", "not a uri")], "invalid_target"),
        ([("resource", "https://a.example#frag")], "invalid_target"),
        ([("audience", "other")], "invalid_target"),
    ],
)
async def test_audience_errors(
    server: Server, authority: Authority, form: list[tuple[str, str]], error: str
) -> None:
    """resource and audience together, or naming an unregistered audience, are refused."""
    client = await register(authority, audiences=("https://a.example",))
    resp = await server.post_form(
        "/token", [("grant_type", "client_credentials"), *form], headers=client.auth
    )
    assert resp.status == 400
    assert resp.json()["error"] == error
