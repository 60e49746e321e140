"""The admin API's listings and audit log: filters, exact pagination, append-only."""

from __future__ import annotations

import asyncpg
import pytest

from introspect.service import Authority
from tests.admin_helpers import created_client, created_key, revoke, rotate_secret, walk
from tests.helpers import AdminAPI, Registered, Server, register
from tests.integration.test_flow import issue


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
