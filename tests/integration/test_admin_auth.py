"""The admin API's bearer authentication, and the admin API alone on its own port."""

from __future__ import annotations

import dataclasses

from aiohttp.test_utils import TestServer

from introspect import credentials
from introspect.app import create_admin_app
from introspect.config import Settings
from introspect.credentials import Kind
from tests.helpers import AdminAPI, Server, admin_api, free_port, start_server


async def test_missing_admin_key_is_401_with_bearer_challenge(server: Server) -> None:
    """Without an admin key (or with another scheme) the admin API answers 401 and a challenge."""
    for headers in ({}, {"Authorization": "Basic Zm9vOmJhcg=="}, {"Authorization": "Bearer "}):
        resp = await server.request("GET", "/admin/clients", headers=headers)
        assert resp.status == 401
        challenge = resp.headers["WWW-Authenticate"]
        assert challenge.startswith("Bearer ")
        assert "error=" not in challenge


async def test_bad_admin_key_is_401_invalid_token(server: Server, api: AdminAPI) -> None:
    """An unknown, malformed or other-kind credential as admin key is 401 invalid_token."""
    for presented in (
        credentials.generate(Kind.ADMIN_KEY),
        api.key[:-1] + ("A" if api.key[-1] != "A" else "B"),
        credentials.generate(Kind.API_KEY),
        "x" * 5000,
    ):
        resp = await server.request(
            "GET", "/admin/clients", headers={"Authorization": f"Bearer {presented}"}
        )
        assert resp.status == 401
        assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
        assert resp.json()["error"] == "invalid_token"
    assert (await api.call("GET", "/clients")).status == 200


async def test_admin_api_on_its_own_port(settings: Settings) -> None:
    """With an admin port, the main app has no /admin and the admin app serves it alone."""
    own = dataclasses.replace(settings, admin_port=free_port())
    main_server, main = await start_server(own)
    admin_server = TestServer(create_admin_app(own, main.app))
    await admin_server.start_server()
    try:
        api = await admin_api(main)
        assert (await api.call("GET", "/clients")).status == 404
        on_admin_port = dataclasses.replace(main, url=str(admin_server.make_url("")).rstrip("/"))
        alone = dataclasses.replace(api, server=on_admin_port)
        assert (await alone.call("GET", "/clients")).status == 200
        assert (await on_admin_port.request("GET", "/healthz")).status == 404
        assert (await on_admin_port.request("GET", "/admin/clients")).status == 401
    finally:
        await admin_server.close()
        await main.http.close()
        await main_server.close()
