"""Clients through the admin API: register, read, change, disable and delete."""

from __future__ import annotations

from tests.admin_helpers import active, created_client, created_key, error_of, token_works, unique
from tests.helpers import AdminAPI, Registered, Server
from tests.integration.test_flow import issue


async def test_create_client_answers_201_and_its_secret_works(
    server: Server, api: AdminAPI
) -> None:
    """POST /admin/clients answers 201 with every field and a secret that authenticates."""
    created = await created_client(
        api, scopes=["read", "write"], audiences=["https://api.test"], token_ttl=120
    )
    assert created["client_id"].startswith("client_")
    assert created["client_secret"].startswith("isec_")
    assert created["scopes"] == ["read", "write"]
    assert created["audiences"] == ["https://api.test"]
    assert created["can_introspect"] is False
    assert created["token_format"] == "opaque"
    assert created["disabled"] is False
    tok = await issue(server, Registered(created["client_id"], created["client_secret"]))
    assert tok["expires_in"] == 120


async def test_read_client_shows_every_field_but_no_secret(api: AdminAPI) -> None:
    """GET /admin/clients/{id} has the registered fields, never a secret or a hash."""
    created = await created_client(api, scopes=["a"], can_introspect=True)
    resp = await api.call("GET", f"/clients/{created['client_id']}")
    assert resp.status == 200
    body = resp.json()
    assert set(body) == {
        "client_id",
        "name",
        "scopes",
        "audiences",
        "can_introspect",
        "token_ttl",
        "token_format",
        "jwks",
        "token_endpoint_auth_method",
        "disabled",
        "created_at",
        "rate_limits",
        "credits",
    }
    assert body["can_introspect"] is True
    assert created["client_secret"].encode() not in resp.body


async def test_unknown_client_is_404(api: AdminAPI) -> None:
    """Every client route answers 404 for an unknown id, well-formed or not."""
    for client_id in ("client_" + "A" * 22, "nope", "client_%00"):
        for method, path, body in (
            ("GET", f"/clients/{client_id}", None),
            ("PATCH", f"/clients/{client_id}", {"disabled": True}),
            ("DELETE", f"/clients/{client_id}", None),
            ("POST", f"/clients/{client_id}/secrets", {"grace_period": 5}),
        ):
            resp = await api.call(method, path, body)
            assert error_of(resp, 404) == "no such client"


async def test_patch_client_changes_fields(api: AdminAPI) -> None:
    """PATCH changes exactly the fields given and answers the new record."""
    created = await created_client(api, scopes=["a"])
    resp = await api.call(
        "PATCH",
        f"/clients/{created['client_id']}",
        {"scopes": ["a", "b"], "can_introspect": True, "token_ttl": 60, "name": "renamed"},
    )
    assert resp.status == 200, resp.body
    body = resp.json()
    assert (body["scopes"], body["can_introspect"], body["token_ttl"], body["name"]) == (
        ["a", "b"],
        True,
        60,
        "renamed",
    )
    assert body["audiences"] == created["audiences"]


async def test_disabled_client_cannot_authenticate_and_its_tokens_are_inactive(
    server: Server, api: AdminAPI, resource_server: Registered
) -> None:
    """Disabling a client stops its authentication and its credentials, until re-enabled."""
    created = await created_client(api, scopes=["read"])
    app = Registered(created["client_id"], created["client_secret"])
    token = (await issue(server, app))["access_token"]
    assert await active(server, resource_server, token)
    path = f"/clients/{app.client_id}"
    assert (await api.call("PATCH", path, {"disabled": True})).status == 200
    assert not await token_works(server, app.client_id, app.secret)
    assert not await active(server, resource_server, token)
    assert (await api.call("PATCH", path, {"disabled": False})).status == 200
    assert await active(server, resource_server, token)


async def test_jwt_format_needs_an_audience(api: AdminAPI) -> None:
    """token_format jwt without an audience is 400 naming token_format, on create and PATCH."""
    resp = await api.call("POST", "/clients", {"name": unique(), "token_format": "jwt"})
    assert error_of(resp, 400).startswith("token_format:")
    created = await created_client(api, token_format="jwt", audiences=["https://a.test"])
    resp = await api.call("PATCH", f"/clients/{created['client_id']}", {"audiences": []})
    assert error_of(resp, 400).startswith("token_format:")


async def test_delete_client_revokes_everything_it_holds(
    server: Server, api: AdminAPI, resource_server: Registered
) -> None:
    """DELETE disables the client and revokes its access tokens and API keys; 204."""
    created = await created_client(api, scopes=["read"])
    app = Registered(created["client_id"], created["client_secret"])
    token = (await issue(server, app))["access_token"]
    key = (await created_key(api, client_id=app.client_id, scopes=["read"]))["key"]
    for credential in (token, key):
        assert await active(server, resource_server, credential)
    resp = await api.call("DELETE", f"/clients/{app.client_id}")
    assert resp.status == 204
    assert resp.body == b""
    for credential in (token, key):
        assert not await active(server, resource_server, credential)
    assert not await token_works(server, app.client_id, app.secret)
    assert (await api.call("GET", f"/clients/{app.client_id}")).json()["disabled"] is True
    listed = await api.call("GET", f"/tokens?client_id={app.client_id}&active=true")
    assert listed.json()["items"] == []
