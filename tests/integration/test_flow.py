"""The core flow through HTTP: token, introspect, revoke, introspect again."""

from __future__ import annotations

from dataclasses import replace

from introspect import credentials, store
from introspect.cache import KEY_PREFIX, Invalidation
from introspect.config import Settings
from introspect.service import Authority
from tests.helpers import Registered, Server, register, start_server


async def issue(server: Server, client: Registered, **form: str) -> dict:
    resp = await server.post_form(
        "/token", {"grant_type": "client_credentials", **form}, headers=client.auth
    )
    assert resp.status == 200, resp.body
    return resp.json()


async def introspect(server: Server, rs: Registered, token: str, **extra: str) -> dict:
    resp = await server.post_form("/introspect", {"token": token, **extra}, headers=rs.auth)
    assert resp.status == 200, resp.body
    return resp.json()


async def test_issued_token_introspects_active(
    server: Server, app_client: Registered, resource_server: Registered
) -> None:
    """A token from the client credentials grant introspects active with its claims."""
    tok = await issue(server, app_client)
    assert tok["token_type"] == "Bearer"
    assert tok["scope"] == "read write"
    assert tok["expires_in"] == 3600
    body = await introspect(server, resource_server, tok["access_token"])
    assert body["active"] is True
    assert body["client_id"] == app_client.client_id
    assert body["sub"] == app_client.client_id
    assert body["scope"] == "read write"
    assert body["token_type"] == "Bearer"
    assert body["kind"] == "access_token"
    assert body["iss"] == "http://introspect.test"
    assert body["exp"] - body["iat"] == 3600
    assert "aud" not in body


async def test_revoked_token_is_inactive_at_once(
    server: Server, app_client: Registered, resource_server: Registered
) -> None:
    """After /revoke answers, the token introspects exactly {"active": false}."""
    tok = await issue(server, app_client)
    for _ in range(3):  # warm every cache layer
        assert (await introspect(server, resource_server, tok["access_token"]))["active"]
    resp = await server.post_form(
        "/revoke", {"token": tok["access_token"]}, headers=app_client.auth
    )
    assert resp.status == 200
    assert await introspect(server, resource_server, tok["access_token"]) == {"active": False}


async def test_other_clients_token_is_not_revoked(
    server: Server, authority: Authority, app_client: Registered, resource_server: Registered
) -> None:
    """Revoking another client's token answers 200 and changes nothing (RFC 7009)."""
    other = await register(authority)
    tok = await issue(server, app_client)
    resp = await server.post_form("/revoke", {"token": tok["access_token"]}, headers=other.auth)
    assert resp.status == 200
    assert (await introspect(server, resource_server, tok["access_token"]))["active"]


async def test_hint_never_changes_answer(
    server: Server, app_client: Registered, resource_server: Registered
) -> None:
    """token_type_hint, right, wrong or unknown, gives the same answer."""
    tok = (await issue(server, app_client))["access_token"]
    plain = await introspect(server, resource_server, tok)
    for hint in ("access_token", "api_key", "refresh_token", "nonsense"):
        assert await introspect(server, resource_server, tok, token_type_hint=hint) == plain


async def test_cache_layers_can_be_turned_off(settings: Settings) -> None:
    """With both cache layers off, answers come from Postgres and nothing is cached."""
    test_server, srv = await start_server(replace(settings, local_cache_size=0, redis_cache_ttl=0))
    try:
        app = await register(srv.authority)
        rs = await register(srv.authority, scopes=(), can_introspect=True)
        token = (await issue(srv, app))["access_token"]
        assert (await introspect(srv, rs, token))["active"]
        assert (await introspect(srv, rs, token))["active"]
        key = KEY_PREFIX + credentials.keyed_hash(settings.secrets[0], token)
        assert await srv.authority.cache.fast.call("GET", key) is None
        assert len(srv.authority.local) == 0
        await srv.post_form("/revoke", {"token": token}, headers=app.auth)
        assert await introspect(srv, rs, token) == {"active": False}
    finally:
        await srv.http.close()
        await test_server.close()


async def test_revocation_records_the_invalidation_it_announces(
    server: Server, authority: Authority, app_client: Registered
) -> None:
    """The outbox row written with a revocation reads back as the invalidation announced."""
    token = (await issue(server, app_client))["access_token"]
    key = credentials.keyed_hash(authority.server_secrets[0], token)
    outbox_id, rows = await store.revoke_recorded(
        authority.pool,
        "test",
        "hash = $2",
        (key,),
        evict_keys=True,
        clients=["c1"],
        subs=[],
    )
    raw = await authority.pool.fetchval(
        "DELETE FROM invalidation_outbox WHERE id = $1 RETURNING message", outbox_id
    )
    recorded = Invalidation.loads(bytes(raw))
    assert [(k, v) for k, v in recorded.tombstones] == [(key, rows[0][2])]
    assert recorded.keys == [key]
    assert recorded.clients == ["c1"]
    assert recorded.subs == []
    assert not recorded.everything
    audit = await authority.pool.fetchval(
        "SELECT target_kind FROM audit_log WHERE target_id = $1 AND action = 'credential.revoke'",
        rows[0][0],
    )
    assert audit == "access_token"
