"""The admin API through HTTP: bearer auth, clients, secret rotation, API keys, revocation,
listings and the audit log, against the session's real Postgres and Redis."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import secrets
import time
from typing import Any

import asyncpg
import orjson
import pytest
import redis.asyncio as redis
from aiohttp.test_utils import TestServer

from introspect import credentials, store
from introspect.app import create_admin_app, create_app
from introspect.cache import CHANNEL
from introspect.config import Settings
from introspect.credentials import Kind
from introspect.service import Authority
from tests.helpers import (
    AdminAPI,
    Answer,
    Registered,
    Server,
    admin_api,
    basic,
    eventually,
    free_port,
    register,
    start_server,
)
from tests.integration.test_flow import introspect, issue


@pytest.fixture
async def api(server: Server) -> AdminAPI:
    """The session server's admin API with a fresh admin key."""
    return await admin_api(server)


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


# --- authentication ------------------------------------------------------------------------


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


# --- clients -------------------------------------------------------------------------------


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


# --- client secret rotation ----------------------------------------------------------------


async def rotate_secret(api: AdminAPI, client_id: str, body: Any) -> str:
    """Rotate a client's secret; the new one."""
    resp = await api.call("POST", f"/clients/{client_id}/secrets", body)
    assert resp.status == 200, resp.body
    assert resp.json()["client_id"] == client_id
    return resp.json()["client_secret"]


async def test_rotated_secret_works_until_the_grace_period_ends(
    server: Server, api: AdminAPI
) -> None:
    """After a rotation with grace, both secrets work; when the grace ends the old one fails."""
    created = await created_client(api)
    client_id, old = created["client_id"], created["client_secret"]
    new = await rotate_secret(api, client_id, {"grace_period": 2})
    assert await token_works(server, client_id, new)
    assert await token_works(server, client_id, old)

    async def old_refused() -> bool:
        return not await token_works(server, client_id, old)

    await eventually(old_refused, within=5)
    assert await token_works(server, client_id, new)


async def test_rotation_without_grace_retires_the_old_secret_at_once(
    server: Server, api: AdminAPI
) -> None:
    """A rotation with no body, or a null or zero grace period, retires the old secret at once."""
    created = await created_client(api)
    client_id, current = created["client_id"], created["client_secret"]
    for body in (None, {}, {"grace_period": None}, {"grace_period": 0}):
        new = await rotate_secret(api, client_id, body)
        assert not await token_works(server, client_id, current)
        assert await token_works(server, client_id, new)
        current = new


async def test_repeated_rotations_keep_at_most_two_secrets_in_grace(
    server: Server, api: AdminAPI, authority: Authority
) -> None:
    """Rotating again and again keeps the current secret and only the two newest in grace."""
    created = await created_client(api)
    client_id = created["client_id"]
    issued = [created["client_secret"]]
    for _ in range(4):
        issued.append(await rotate_secret(api, client_id, {"grace_period": 600}))
    works = [await token_works(server, client_id, s) for s in issued]
    assert works == [False, False, True, True, True]
    rows = await authority.pool.fetchval(
        "SELECT count(*) FROM client_secrets WHERE client_id = $1", client_id
    )
    assert rows == 3


# --- API keys ------------------------------------------------------------------------------


async def test_api_key_for_a_client_introspects_with_its_metadata(
    server: Server, api: AdminAPI, resource_server: Registered, app_client: Registered
) -> None:
    """An API key bound to a client introspects active with kind, scope, exp and metadata."""
    issued = await created_key(
        api,
        client_id=app_client.client_id,
        scopes=["read"],
        audiences=[],
        expires_in=3600,
        metadata={"team": "billing", "tier": 2},
    )
    assert issued["id"].startswith("key_")
    assert issued["key"].startswith("ikey_")
    body = await introspect(server, resource_server, issued["key"])
    assert body["active"] is True
    assert body["kind"] == "api_key"
    assert body["scope"] == "read"
    assert body["client_id"] == app_client.client_id
    assert body["sub"] == app_client.client_id
    assert body["jti"] == issued["id"]
    assert body["exp"] - body["iat"] == 3600
    assert body["metadata"] == {"team": "billing", "tier": 2}


async def test_api_key_for_a_subject_never_expires_by_default(
    server: Server, api: AdminAPI, resource_server: Registered
) -> None:
    """An API key for a subject alone takes any valid scope tokens and has no exp."""
    sub = unique("user")
    issued = await created_key(api, sub=sub, scopes=["anything:goes", "x.y/z"])
    body = await introspect(server, resource_server, issued["key"])
    assert body["sub"] == sub
    assert "client_id" not in body
    assert "exp" not in body
    assert body["scope"] == "anything:goes x.y/z"


async def test_api_key_scopes_stay_within_the_clients(
    api: AdminAPI, app_client: Registered
) -> None:
    """Scopes outside the client's, or not RFC 6749 scope tokens, are 400 naming scopes."""
    for fields in (
        {"client_id": app_client.client_id, "scopes": ["read", "admin"]},
        {"sub": unique(), "scopes": ["two words"]},
        {"sub": unique(), "scopes": ['quo"te']},
        {"sub": unique(), "scopes": "read"},
    ):
        resp = await api.call("POST", "/api-keys", fields)
        assert error_of(resp, 400).startswith("scopes:")


async def test_api_key_needs_an_existing_enabled_client(api: AdminAPI) -> None:
    """An unknown client_id is 404, a disabled client 409, neither client_id nor sub 400."""
    resp = await api.call("POST", "/api-keys", {"client_id": "client_" + "A" * 22, "scopes": []})
    assert error_of(resp, 404).startswith("client_id:")
    created = await created_client(api)
    await api.call("PATCH", f"/clients/{created['client_id']}", {"disabled": True})
    resp = await api.call("POST", "/api-keys", {"client_id": created["client_id"], "scopes": []})
    assert error_of(resp, 409).startswith("client_id:")
    resp = await api.call("POST", "/api-keys", {"scopes": []})
    assert "client_id" in error_of(resp, 400)


async def test_api_key_metadata_is_at_most_4_kib(api: AdminAPI) -> None:
    """Metadata up to 4096 bytes of compact UTF-8 JSON is kept; one byte more is 400."""
    filler = "x" * (4096 - len('{"k":""}'))
    issued = await created_key(api, sub=unique(), scopes=[], metadata={"k": filler})
    assert issued["metadata"] == {"k": filler}
    resp = await api.call(
        "POST", "/api-keys", {"sub": unique(), "scopes": [], "metadata": {"k": filler + "x"}}
    )
    assert error_of(resp, 400).startswith("metadata:")
    resp = await api.call(
        "POST", "/api-keys", {"sub": unique(), "scopes": [], "metadata": {"é": filler}}
    )
    assert error_of(resp, 400).startswith("metadata:")


async def test_patch_api_key_is_visible_at_once(
    server: Server, api: AdminAPI, resource_server: Registered, app_client: Registered
) -> None:
    """A PATCH of scopes, audiences, expiry or metadata shows in the very next introspection."""
    issued = await created_key(api, client_id=app_client.client_id, scopes=["read", "write"])
    key, path = issued["key"], f"/api-keys/{issued['id']}"
    for _ in range(3):  # warm every cache layer
        assert await active(server, resource_server, key)
    resp = await api.call("PATCH", path, {"scopes": ["read"], "metadata": {"v": 2}})
    assert resp.status == 200, resp.body
    assert resp.json()["scopes"] == ["read"]
    body = await introspect(server, resource_server, key)
    assert (body["scope"], body["metadata"]) == ("read", {"v": 2})
    resp = await api.call("PATCH", path, {"expires_in": 100, "audiences": ["https://a.test"]})
    body = await introspect(server, resource_server, key)
    assert body["exp"] == resp.json()["exp"]
    assert body["aud"] == "https://a.test"
    await api.call("PATCH", path, {"expires_at": None, "metadata": None})
    body = await introspect(server, resource_server, key)
    assert "exp" not in body
    assert "metadata" not in body
    resp = await api.call("PATCH", path, {"scopes": ["delete"]})
    assert error_of(resp, 400).startswith("scopes:")


async def test_patch_of_a_revoked_or_expired_key_is_409(
    api: AdminAPI, authority: Authority
) -> None:
    """PATCH and rotate of a revoked or expired key are 409; an unknown key is 404."""
    revoked = await created_key(api, sub=unique(), scopes=[])
    await api.call("POST", "/revocations", {"id": revoked["id"]})
    expired = await created_key(api, sub=unique(), scopes=[], expires_in=60)
    await authority.pool.execute(
        "UPDATE credentials SET exp = $2 WHERE id = $1", expired["id"], store.now() - 1
    )
    for key_id in (revoked["id"], expired["id"]):
        resp = await api.call("PATCH", f"/api-keys/{key_id}", {"scopes": ["x"]})
        assert error_of(resp, 409)
        assert (await api.call("POST", f"/api-keys/{key_id}/rotate")).status == 409
    for key_id in ("key_" + "A" * 22, "tok_x"):
        resp = await api.call("PATCH", f"/api-keys/{key_id}", {"scopes": ["x"]})
        assert error_of(resp, 404) == "no such API key"


async def test_rotated_key_keeps_working_for_the_grace_period(
    server: Server, api: AdminAPI, resource_server: Registered, app_client: Registered
) -> None:
    """Key rotation gives a new key with the same attributes; the old one ends with the grace."""
    old = await created_key(api, client_id=app_client.client_id, scopes=["read"], metadata={"m": 1})
    resp = await api.call("POST", f"/api-keys/{old['id']}/rotate", {"grace_period": 2})
    assert resp.status == 200, resp.body
    new = resp.json()
    assert new["id"] != old["id"]
    assert new["replaced"]["id"] == old["id"]
    before = await introspect(server, resource_server, old["key"])
    after = await introspect(server, resource_server, new["key"])
    for claim in ("scope", "client_id", "sub", "metadata", "kind"):
        assert before[claim] == after[claim]
    assert "exp" not in after

    async def old_inactive() -> bool:
        return not await active(server, resource_server, old["key"])

    await eventually(old_inactive, within=5)
    assert await active(server, resource_server, new["key"])


async def test_key_rotation_never_outlives_the_original_expiry(
    server: Server, api: AdminAPI, resource_server: Registered
) -> None:
    """A grace longer than the old key's life leaves its expiry as is; the new key shares it."""
    old = await created_key(api, sub=unique(), scopes=[], expires_in=100)
    resp = await api.call("POST", f"/api-keys/{old['id']}/rotate", {"grace_period": 86_400})
    new = resp.json()
    assert new["replaced"]["exp"] == old["exp"]
    assert new["exp"] == old["exp"]
    assert (await introspect(server, resource_server, old["key"]))["exp"] == old["exp"]
    resp = await api.call("POST", f"/api-keys/{new['id']}/rotate", {"grace_period": 0})
    assert not await active(server, resource_server, new["key"])
    assert await active(server, resource_server, resp.json()["key"])


# --- revocation ----------------------------------------------------------------------------


async def revoke(api: AdminAPI, body: Any) -> dict[str, Any]:
    """POST /admin/revocations; the answer."""
    resp = await api.call("POST", "/revocations", body)
    assert resp.status == 200, resp.body
    return resp.json()


async def test_revoke_by_token_id_or_jti(
    server: Server, api: AdminAPI, resource_server: Registered, app_client: Registered
) -> None:
    """Revocation by token, id or jti kills the credential at once and counts it once."""
    for selector in ("token", "id", "jti"):
        issued = await created_key(api, client_id=app_client.client_id, scopes=["read"])
        value = issued["key"] if selector == "token" else issued["id"]
        assert await active(server, resource_server, issued["key"])
        answer = await revoke(api, {selector: value})
        assert answer["revoked"] == 1
        assert answer["listeners"] >= 1
        assert "invalidation" not in answer
        assert not await active(server, resource_server, issued["key"])
        assert (await revoke(api, {selector: value}))["revoked"] == 0


async def test_revoke_by_client_id_takes_its_tokens_and_keys(
    server: Server, api: AdminAPI, resource_server: Registered, authority: Authority
) -> None:
    """Revocation by client_id revokes its access tokens and API keys, no one else's."""
    app, other = await register(authority), await register(authority)
    held = [(await issue(server, app))["access_token"] for _ in range(2)]
    held.append((await created_key(api, client_id=app.client_id, scopes=["read"]))["key"])
    spared = (await issue(server, other))["access_token"]
    for credential in [*held, spared]:
        assert await active(server, resource_server, credential)
    assert (await revoke(api, {"client_id": app.client_id}))["revoked"] == 3
    for credential in held:
        assert not await active(server, resource_server, credential)
    assert await active(server, resource_server, spared)
    assert await token_works(server, app.client_id, app.secret)


async def test_revoke_by_sub_spans_several_clients(
    server: Server, api: AdminAPI, resource_server: Registered, authority: Authority
) -> None:
    """Revocation by sub revokes that subject's keys under every client and under none."""
    sub = unique("user")
    first, second = await register(authority), await register(authority)
    keys = [
        (await created_key(api, client_id=first.client_id, sub=sub, scopes=["read"]))["key"],
        (await created_key(api, client_id=second.client_id, sub=sub, scopes=["write"]))["key"],
        (await created_key(api, sub=sub, scopes=["any"]))["key"],
    ]
    spared = (await created_key(api, client_id=first.client_id, scopes=["read"]))["key"]
    for key in [*keys, spared]:
        assert await active(server, resource_server, key)
    assert (await revoke(api, {"sub": sub}))["revoked"] == 3
    for key in keys:
        assert not await active(server, resource_server, key)
    assert await active(server, resource_server, spared)


async def test_bulk_revocation_publishes_one_message_naming_the_subject_or_client(
    settings: Settings, api: AdminAPI, app_client: Registered
) -> None:
    """Revocation by sub or client_id publishes one message naming it, not key by key."""
    sub = unique("user")
    for _ in range(3):
        await created_key(api, client_id=app_client.client_id, sub=sub, scopes=["read"])
    # Left for the revocation by client_id: one that revokes nothing publishes nothing.
    await created_key(api, client_id=app_client.client_id, sub=unique("user"), scopes=["read"])
    assert settings.redis_url
    listener = redis.Redis.from_url(settings.redis_url)
    pubsub = listener.pubsub()
    try:
        await pubsub.subscribe(CHANNEL)
        seen = []
        for body, field, value in (
            ({"sub": sub}, "s", sub),
            ({"client_id": app_client.client_id}, "c", app_client.client_id),
        ):
            await revoke(api, body)
            deadline = time.monotonic() + 5
            published: dict[str, Any] = {}
            while published.get(field) != [value]:
                assert time.monotonic() < deadline, "no invalidation naming it was published"
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                if message is not None:
                    published = orjson.loads(message["data"])
            assert "k" not in published
            seen.append(published)
        assert len(seen) == 2
    finally:
        await pubsub.aclose()
        await listener.aclose()


async def test_revocation_selector_rules(api: AdminAPI) -> None:
    """Exactly one known selector with a string value is required; no match is 200 with 0."""
    for body in ({}, {"id": "a", "sub": "b"}, {"kid": "x"}, {"sub": 5}, {"token": ""}):
        assert (await api.call("POST", "/revocations", body)).status == 400
    for body in ({"token": "not-a-credential"}, {"sub": unique()}, {"client_id": unique()}):
        assert (await revoke(api, body))["revoked"] == 0


async def test_revocation_says_when_the_invalidation_is_pending(
    settings: Settings, api: AdminAPI, authority: Authority
) -> None:
    """With Redis unreachable a revocation still commits and answers "invalidation": "pending"."""
    assert settings.database_url
    app = create_app(settings, settings.database_url, f"redis://127.0.0.1:{free_port()}/0")
    test_server = TestServer(app)
    await test_server.start_server()
    try:
        down = dataclasses.replace(
            api.server, url=str(test_server.make_url("")).rstrip("/"), app=app
        )
        issued = await created_key(api, sub=unique(), scopes=[])
        resp = await dataclasses.replace(api, server=down).call(
            "POST", "/revocations", {"id": issued["id"]}
        )
        assert resp.json() == {"revoked": 1, "listeners": 0, "invalidation": "pending"}
        found = await store.get_credential(authority.pool, issued["id"])
        assert found is not None
        assert found.revoked_at is not None
    finally:
        await test_server.close()
        await authority.cache.replay_outbox(older_than=store.now() + 1)


# --- listings and the audit log ------------------------------------------------------------


async def test_token_listing_filters_and_never_shows_values(
    server: Server, api: AdminAPI, authority: Authority
) -> None:
    """GET /admin/tokens filters by client_id, sub, kind and active, without values or hashes."""
    app = await register(authority)
    tokens = [(await issue(server, app))["access_token"] for _ in range(2)]
    key = await created_key(api, client_id=app.client_id, scopes=["read"])
    await revoke(api, {"token": tokens[0]})
    resp = await api.call("GET", f"/tokens?client_id={app.client_id}")
    items = resp.json()["items"]
    assert len(items) == 3
    for value in [*tokens, key["key"]]:
        assert value.encode() not in resp.body
    assert all("hash" not in item for item in items)

    async def ids(query: str) -> set[str]:
        resp = await api.call("GET", f"/tokens?client_id={app.client_id}&{query}")
        assert resp.status == 200, resp.body
        return {item["id"] for item in resp.json()["items"]}

    assert await ids("kind=api_key") == {key["id"]}
    assert len(await ids("kind=access_token")) == 2
    assert len(await ids("active=false")) == 1
    assert key["id"] in await ids("active=true&kind=api_key")
    assert await ids(f"sub={app.client_id}&kind=api_key") == {key["id"]}


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


async def test_pagination_is_exact_while_rows_are_inserted(
    server: Server, api: AdminAPI, authority: Authority
) -> None:
    """Walking pages while rows are inserted shows every earlier row exactly once."""
    app = await register(authority)
    before = {(await issue(server, app))["access_token"] for _ in range(7)}
    listed_before = await walk(api, f"/tokens?client_id={app.client_id}", limit=50)
    assert len(listed_before) == len(before)

    async def insert() -> None:
        await issue(server, app)
        await created_client(api)

    tokens = await walk(api, f"/tokens?client_id={app.client_id}", limit=2, between=insert)
    token_ids = [t["id"] for t in tokens]
    assert len(token_ids) == len(set(token_ids))
    assert {t["id"] for t in listed_before} <= set(token_ids)

    known = {(await created_client(api))["client_id"] for _ in range(3)}
    everyone = await walk(api, "/clients", limit=500)
    per_page = max(2, len(everyone) // 4 + 1)  # a few pages, whatever the session holds
    clients = [c["client_id"] for c in await walk(api, "/clients", per_page, between=insert)]
    assert len(clients) == len(set(clients))
    assert {c["client_id"] for c in everyone} | known <= set(clients)

    audit = await walk(api, f"/audit?actor={api.key_id}", limit=3, between=insert)
    audit_ids = [e["id"] for e in audit]
    assert audit_ids == sorted(set(audit_ids), reverse=True)
    assert len(audit) >= 3


async def test_audit_records_who_did_what(
    server: Server, api: AdminAPI, resource_server: Registered
) -> None:
    """Every admin operation appends an audit entry naming the admin key that did it."""
    created = await created_client(api, scopes=["read"])
    client_id = created["client_id"]
    await api.call("PATCH", f"/clients/{client_id}", {"scopes": ["read", "write"]})
    await rotate_secret(api, client_id, {"grace_period": 0})
    key = await created_key(api, client_id=client_id, scopes=["read"])
    await api.call("PATCH", f"/api-keys/{key['id']}", {"metadata": {"a": 1}})
    rotated = (await api.call("POST", f"/api-keys/{key['id']}/rotate")).json()
    await revoke(api, {"id": rotated["id"]})
    await api.call("DELETE", f"/clients/{client_id}")

    entries = await walk(api, f"/audit?actor={api.key_id}", limit=500)
    seen = [(e["action"], e["target_id"]) for e in reversed(entries)]
    assert seen == [
        ("client.create", client_id),
        ("client.update", client_id),
        ("client.secret_rotate", client_id),
        ("api_key.create", key["id"]),
        ("api_key.update", key["id"]),
        ("api_key.rotate", key["id"]),
        ("api_key.create", rotated["id"]),
        ("credential.revoke", rotated["id"]),
        ("client.delete", client_id),
    ]
    entry = entries[0]
    assert set(entry) == {"id", "at", "actor", "action", "target_kind", "target_id", "details"}
    assert isinstance(entry["at"], int)
    assert entry["actor"] == api.key_id
    resp = await api.call("GET", f"/audit?target_id={key['id']}&action=api_key.update")
    (update,) = resp.json()["items"]
    assert update["details"] == {"metadata": {"a": 1}}
    assert update["target_kind"] == "api_key"
    for value in (created["client_secret"], key["key"], rotated["key"]):
        assert value not in str(entries)


async def test_public_revocation_is_audited_as_the_client(
    server: Server, api: AdminAPI, app_client: Registered
) -> None:
    """An RFC 7009 revocation appears in the audit log with actor client:<id>."""
    token = (await issue(server, app_client))["access_token"]
    await server.post_form("/revoke", {"token": token}, headers=app_client.auth)
    resp = await api.call("GET", f"/audit?actor=client:{app_client.client_id}")
    (entry,) = resp.json()["items"]
    assert (entry["action"], entry["target_kind"]) == ("credential.revoke", "access_token")


async def test_audit_log_is_append_only(authority: Authority) -> None:
    """The database refuses to change or erase audit entries."""
    for statement in (
        "UPDATE audit_log SET actor = 'x' WHERE id = (SELECT max(id) FROM audit_log)",
        "DELETE FROM audit_log WHERE id = (SELECT max(id) FROM audit_log)",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await authority.pool.execute(statement)


# --- hostile input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"name": "x", "bogus": 1}, "bogus"),
        ({"name": ""}, "name"),
        ({"name": "a\x00b"}, "name"),
        ({"name": "x" * 257}, "name"),
        ({"name": 5}, "name"),
        ({"name": "x", "scopes": ["a"] * 101}, "scopes"),
        ({"name": "x", "scopes": [1]}, "scopes"),
        ({"name": "x", "audiences": [""]}, "audiences"),
        ({"name": "x", "can_introspect": "yes"}, "can_introspect"),
        ({"name": "x", "token_ttl": 0}, "token_ttl"),
        ({"name": "x", "token_ttl": True}, "token_ttl"),
        ({"name": "x", "token_ttl": 2**40}, "token_ttl"),
        ({"name": "x", "token_ttl": 1.5}, "token_ttl"),
        ({"name": "x", "token_format": "paseto"}, "token_format"),
        ({"name": "x", "jwks": {"keys": [{}]}}, "jwks"),
        ({"name": "x", "jwks": [1]}, "jwks"),
        ({"name": "x", "jwks": {"keys": [{"kty": "EC", "crv": "P-256", "d": "secret"}]}}, "jwks"),
        ({"scopes": []}, "name"),
    ],
)
async def test_bad_client_fields_are_400_naming_the_field(
    api: AdminAPI, body: dict[str, Any], named: str
) -> None:
    """Each malformed field of a client registration is a 400 whose description names it."""
    resp = await api.call("POST", "/clients", body)
    assert named in error_of(resp, 400)


@pytest.mark.parametrize(
    ("raw", "content_type", "status"),
    [
        (b"{", "application/json", 400),
        (b"[1, 2]", "application/json", 400),
        (b'"text"', "application/json", 400),
        (b"\xff\xfe", "application/json", 400),
        (b'{"name": "\\ud800"}', "application/json", 400),
        (b'{"name": "x"}', "text/plain", 415),
        (b"name=x", "application/x-www-form-urlencoded", 415),
        (b'{"name": "' + b"x" * 70_000 + b'"}', "application/json", 413),
    ],
)
async def test_malformed_bodies_are_4xx(
    api: AdminAPI, raw: bytes, content_type: str, status: int
) -> None:
    """Bodies that are not one JSON object, or too big, get a clean 4xx JSON answer."""
    for method, path in (("POST", "/clients"), ("POST", "/revocations"), ("POST", "/api-keys")):
        resp = await api.call(method, path, headers={"Content-Type": content_type}, data=raw)
        assert resp.status == status, (path, resp.body)
        assert resp.json()["error"]


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=501",
        "limit=abc",
        "limit=-1",
        "limit=" + "1" * 5000,
        "limit=%EF%BC%91",  # a full-width digit one
        "cursor=%%%",
        "cursor=WzFd",  # [1]: the wrong shape for this list
        "cursor=",
        "limit=1&limit=2",
        "bogus=1",
        "kind=refresh_token",
        "active=yes",
        "sub=%00",
        "client_id=" + "x" * 300,
    ],
)
async def test_bad_list_parameters_are_400(api: AdminAPI, query: str) -> None:
    """A malformed limit, cursor, filter or an unknown parameter is 400."""
    resp = await api.call("GET", f"/tokens?{query}")
    assert error_of(resp, 400)


async def test_audit_filters_are_checked(api: AdminAPI) -> None:
    """An unknown audit action is 400; a huge cursor id is 400, not an overflow."""
    assert (await api.call("GET", "/audit?action=client.explode")).status == 400
    assert (await api.call("GET", "/audit?cursor=Wzk5OTk5OTk5OTk5OTk5OTk5OTk5XQ")).status == 400


async def test_bad_changes_to_a_key_are_400(api: AdminAPI) -> None:
    """PATCH of a key with no field, both expiry forms, a past expiry or bad types is 400."""
    issued = await created_key(api, sub=unique(), scopes=[])
    for body in (
        {},
        {"expires_in": 5, "expires_at": None},
        {"expires_at": 1},
        {"expires_in": 0},
        {"metadata": [1]},
        {"metadata": {"a": "\x00"}},
        {"metadata": {"a\x00": 1}},
        {"sub": "someone-else"},
    ):
        resp = await api.call("PATCH", f"/api-keys/{issued['id']}", body)
        assert error_of(resp, 400)
    for grace in (-1, "5", 10**9, 1.0):
        resp = await api.call("POST", f"/api-keys/{issued['id']}/rotate", {"grace_period": grace})
        assert error_of(resp, 400).startswith("grace_period:")


@pytest.mark.parametrize("depth", [33, 300, 1000, 1030])
async def test_deeply_nested_json_is_400(api: AdminAPI, depth: int) -> None:
    """Metadata or a JWK Set nested too deep is a 400, never a 500, whatever the depth."""
    nested = b"[" * depth + b"]" * depth
    for path, raw in (
        ("/api-keys", b'{"sub": "deep", "scopes": [], "metadata": {"a": %s}}' % nested),
        ("/clients", b'{"name": "deep", "jwks": {"keys": [], "x": %s}}' % nested),
    ):
        resp = await api.call("POST", path, headers={"Content-Type": "application/json"}, data=raw)
        assert resp.status == 400, (depth, path, resp.body)


async def test_api_key_last_use_is_recorded_in_batches(
    server: Server, api: AdminAPI, resource_server: Registered
) -> None:
    """An introspected API key shows last_used_at once the batch is written, not before."""
    created = await created_key(api, sub=unique("used"), scopes=["read"])

    async def last_used() -> int | None:
        listed = (await api.call("GET", "/tokens?kind=api_key&active=true&limit=500")).json()
        return next(i["last_used_at"] for i in listed["items"] if i["id"] == created["id"])

    await server.authority.flush_usage()
    resp = await server.post_form(
        "/introspect", {"token": created["key"]}, headers=resource_server.auth
    )
    assert resp.json()["active"]
    assert await last_used() is None
    assert await server.authority.flush_usage() >= 1
    used = await last_used()
    assert used is not None
    assert abs(used - time.time()) < 60


async def test_concurrent_last_use_batches_do_not_deadlock(
    server: Server, authority: Authority
) -> None:
    """Workers writing overlapping last-use batches, in any order, never deadlock."""
    now = int(time.time())
    ids = [f"key_deadlock{unique('x')}{n}" for n in range(300)]
    await store.copy_access_tokens(
        authority.pool,
        [(i, "api_key", "opaque", os.urandom(32), None, "s", (), (), now, now, None) for i in ids],
    )
    rng = random.Random(7)
    for round_ in range(15):
        batches = []
        for _ in range(4):
            order = ids[:]
            rng.shuffle(order)
            batches.append(dict.fromkeys(order, now + round_))
        await asyncio.gather(*(store.touch_credentials(authority.pool, b) for b in batches))
    latest = await authority.pool.fetchval(
        "SELECT min(last_used_at) FROM credentials WHERE id = ANY($1::text[])", ids
    )
    assert latest is not None
