"""Admin keys with a lifecycle: roles, expiry, listing, revocation (at once, on every worker),
the last admin key kept, last use in batches, and refusals counted and logged without the key."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from introspect import admin, credentials, store
from introspect.config import Settings
from introspect.credentials import Kind
from introspect.errors import Conflict
from introspect.service import Authority, open_authority
from introspect.store.migrate import migrate
from tests.admin_helpers import error_of, unique, walk
from tests.helpers import AdminAPI, Server, admin_api, eventually, serve_subprocess, start_server
from tests.integration.test_cli import cli, env  # noqa: F401 (env is a fixture used here)
from tests.integration.test_metrics import _value

REFUSED = 'introspect_admin_auth_failures_total{reason="%s"}'


async def minted(api: AdminAPI, **fields: Any) -> AdminAPI:
    """A new admin key made through the API, as an AdminAPI of its own."""
    resp = await api.call("POST", "/admin-keys", {"name": unique("k"), **fields})
    assert resp.status == 201, resp.body
    made = resp.json()
    return AdminAPI(api.server, made["id"], made["key"])


def bearer(key: str) -> dict[str, str]:
    """The Authorization header presenting `key` as an admin key."""
    return {"Authorization": f"Bearer {key}"}


async def expire(authority: Authority, key_id: str) -> None:
    """Move an admin key's expiry into the past, as time would."""
    await authority.pool.execute(
        "UPDATE admin_keys SET expires_at = $2 WHERE id = $1", key_id, store.now() - 1
    )


# --- creation and listing ------------------------------------------------------------------


async def test_create_answers_201_with_the_key_once_and_lists_never_show_it(
    api: AdminAPI,
) -> None:
    """POST /admin/admin-keys answers 201 with id and key; listings carry neither key nor hash."""
    resp = await api.call(
        "POST", "/admin-keys", {"name": unique("ops"), "role": "auditor", "expires_in": 3600}
    )
    assert resp.status == 201, resp.body
    made = resp.json()
    assert made["id"].startswith("adm_")
    assert credentials.parse(made["key"]) is Kind.ADMIN_KEY
    assert made["role"] == "auditor"
    assert made["expires_at"] == made["created_at"] + 3600
    assert made["revoked_at"] is None
    assert made["last_used_at"] is None
    assert made["active"] is True
    assert resp.headers["Cache-Control"] == "no-store"

    listed = await walk(api, "/admin-keys", limit=500)
    (item,) = [i for i in listed if i["id"] == made["id"]]
    assert item == {k: v for k, v in made.items() if k != "key"}
    assert "iadm_" not in str(listed)
    default = await minted(api)
    (item,) = [i for i in await walk(api, "/admin-keys", limit=500) if i["id"] == default.key_id]
    assert (item["role"], item["expires_at"]) == ("admin", None)


async def test_listing_pages_in_creation_order(api: AdminAPI, authority: Authority) -> None:
    """Pages of two walk every admin key exactly once, in (created_at, id) order."""
    made = [(await minted(api)).key_id for _ in range(3)]
    items = await walk(api, "/admin-keys", limit=2)
    positions = [(item["created_at"], item["id"]) for item in items]
    assert positions == sorted(set(positions))
    assert len(items) == await authority.pool.fetchval("SELECT count(*) FROM admin_keys")
    assert set(made) <= {item["id"] for item in items}


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": "x", "role": "root"},
        {"name": "x", "role": None},
        {"name": "x", "expires_in": 0},
        {"name": "x", "expires_in": "60"},
        {"name": "x", "key": "iadm_chosen"},
    ],
)
async def test_bad_creations_are_400_and_write_nothing(
    api: AdminAPI, authority: Authority, body: dict[str, Any]
) -> None:
    """A missing name, an unknown role, a bad expiry or an unknown field is 400; no key is made."""
    before = await authority.pool.fetchval("SELECT count(*) FROM admin_keys")
    resp = await api.call("POST", "/admin-keys", body)
    assert error_of(resp, 400)
    assert await authority.pool.fetchval("SELECT count(*) FROM admin_keys") == before


# --- roles ---------------------------------------------------------------------------------


async def test_auditor_reads_and_is_refused_every_change(
    api: AdminAPI, authority: Authority
) -> None:
    """An auditor key may GET every list; anything else is 403 insufficient_scope, unchanged."""
    auditor = await minted(api, role="auditor")
    for path in ("/clients", "/tokens", "/audit", "/admin-keys"):
        assert (await auditor.call("GET", path + "?limit=1")).status == 200, path
    assert (await auditor.call("HEAD", "/clients?limit=1")).status == 200
    name = unique("nope")
    for method, path, body in (
        ("POST", "/clients", {"name": name}),
        ("POST", "/admin-keys", {"name": name}),
        ("POST", "/revocations", {"sub": name}),
        ("PATCH", "/clients/client_" + "A" * 22, {"name": name}),
        ("DELETE", f"/admin-keys/{api.key_id}", None),
    ):
        resp = await auditor.call(method, path, body)
        assert resp.status == 403, (method, path, resp.body)
        assert resp.json()["error"] == "insufficient_scope"
        challenge = resp.headers["WWW-Authenticate"]
        assert challenge.startswith('Bearer realm="introspect-admin"')
        assert 'error="insufficient_scope"' in challenge
    for table in ("clients", "admin_keys"):
        count = f"SELECT count(*) FROM {table} WHERE name = $1"
        assert await authority.pool.fetchval(count, name) == 0, table
    assert (await api.call("GET", "/clients?limit=1")).status == 200  # the admin key still works


async def test_admin_role_may_change_things(api: AdminAPI) -> None:
    """An admin-role key (the default) may create, and revoke, admin keys."""
    other = await minted(api, role="admin")
    made = await minted(other)
    assert (await other.call("DELETE", f"/admin-keys/{made.key_id}")).status == 204


# --- expiry and revocation -----------------------------------------------------------------


async def test_expired_key_is_refused(api: AdminAPI, authority: Authority) -> None:
    """A key works until its expiry, then is 401 invalid_token."""
    short = await minted(api, expires_in=3600)
    assert (await short.call("GET", "/clients?limit=1")).status == 200
    await expire(authority, short.key_id)
    resp = await short.call("GET", "/clients?limit=1")
    assert error_of(resp, 401)
    assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
    listed = await walk(api, "/admin-keys", limit=500)
    assert next(i for i in listed if i["id"] == short.key_id)["active"] is False


async def test_revoked_key_is_refused_and_revoke_is_audited(api: AdminAPI) -> None:
    """DELETE answers 204, the key is 401 from then on, and both steps are in the audit log."""
    made = await minted(api, role="auditor")
    assert (await made.call("GET", "/clients?limit=1")).status == 200
    assert (await api.call("DELETE", f"/admin-keys/{made.key_id}")).status == 204
    assert error_of(await made.call("GET", "/clients?limit=1"), 401)
    assert (await api.call("DELETE", f"/admin-keys/{made.key_id}")).status == 204  # idempotent

    entries = (await api.call("GET", f"/audit?target_id={made.key_id}")).json()["items"]
    assert [(e["action"], e["target_kind"], e["actor"]) for e in entries] == [
        ("admin_key.revoke", "admin_key", api.key_id),
        ("admin_key.create", "admin_key", api.key_id),
    ]
    assert entries[0]["details"]["role"] == "auditor"
    assert entries[1]["details"]["expires_at"] is None
    assert made.key not in str(entries)
    listed = await walk(api, "/admin-keys", limit=500)
    revoked = next(i for i in listed if i["id"] == made.key_id)
    assert revoked["revoked_at"] is not None
    assert revoked["active"] is False


async def test_unknown_admin_key_id_is_404(api: AdminAPI) -> None:
    """DELETE of an id that names no admin key, or is not shaped like one, is 404."""
    for key_id in ("adm_" + "A" * 22, "key_" + "A" * 22, "x"):
        resp = await api.call("DELETE", f"/admin-keys/{key_id}")
        assert error_of(resp, 404) == "no such admin key"


@pytest.fixture
async def lonely(settings: Settings) -> AsyncIterator[AdminAPI]:
    """A server over a database of its own, whose only admin key is the one returned."""
    assert settings.database_url
    name = "admin_keys_" + secrets.token_hex(6)
    root = await asyncpg.connect(settings.database_url)
    try:
        await root.execute(f'CREATE DATABASE "{name}"')
        dsn = settings.database_url.rsplit("/", 1)[0] + "/" + name
        conn = await asyncpg.connect(dsn)
        await migrate(conn)
        await conn.close()
        test_server, srv = await start_server(dataclasses.replace(settings, database_url=dsn))
        try:
            yield await admin_api(srv)
        finally:
            await srv.http.close()
            await test_server.close()
    finally:
        await root.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await root.close()


async def test_last_live_admin_key_cannot_be_revoked(lonely: AdminAPI) -> None:
    """Revoking the last live admin-role key is 409; auditor and expired keys do not count."""
    authority = lonely.server.authority
    auditor = await minted(lonely, role="auditor")
    expired = await minted(lonely)
    await expire(authority, expired.key_id)
    resp = await lonely.call("DELETE", f"/admin-keys/{lonely.key_id}")
    assert "last live admin-role key" in error_of(resp, 409)
    assert resp.json()["error"] == "conflict"
    assert (await lonely.call("GET", "/clients?limit=1")).status == 200
    assert (await lonely.call("DELETE", f"/admin-keys/{auditor.key_id}")).status == 204
    assert (await lonely.call("DELETE", f"/admin-keys/{expired.key_id}")).status == 204
    successor = await minted(lonely)
    assert (await successor.call("DELETE", f"/admin-keys/{lonely.key_id}")).status == 204
    assert error_of(await successor.call("DELETE", f"/admin-keys/{successor.key_id}"), 409)


async def test_concurrent_revocations_leave_one_admin_key(lonely: AdminAPI) -> None:
    """Revoking the only two admin keys at once succeeds for exactly one of them, every time."""
    authority = lonely.server.authority
    survivor = lonely.key_id
    for _ in range(10):
        other = (await admin.create_admin_key(authority, "test", {"name": unique("race")}))["id"]
        outcomes = await asyncio.gather(
            admin.revoke_admin_key(authority, "test", survivor),
            admin.revoke_admin_key(authority, "test", other),
            return_exceptions=True,
        )
        refused = [o for o in outcomes if isinstance(o, Conflict)]
        assert len(refused) == 1, outcomes
        survivor = survivor if isinstance(outcomes[0], Conflict) else other
        live = await authority.pool.fetch(
            "SELECT id FROM admin_keys WHERE role = 'admin' AND revoked_at IS NULL"
        )
        assert [r["id"] for r in live] == [survivor]


@pytest.fixture
async def two_workers(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    """`introspect serve --workers 2` over the session's stores; its base URL."""
    with serve_subprocess(settings, tmp_path_factory.mktemp("admin-keys"), workers=2) as served:
        yield served["BASE"]


async def test_revocation_is_refused_at_once_by_every_worker(
    two_workers: str, authority: Authority
) -> None:
    """After DELETE returns, no worker of a two-worker server admits the key, and /metrics
    (summed over the workers) counts every refusal."""
    ops = await admin.create_admin_key(authority, "test", {"name": unique("ops")})
    victim = await admin.create_admin_key(authority, "test", {"name": unique("victim")})
    url = f"{two_workers}/admin/clients?limit=1"
    # A new connection per request, so the kernel spreads them over both workers.
    connector = aiohttp.TCPConnector(limit=16, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def status(key: str) -> int:
            async with http.get(url, headers=bearer(key)) as resp:
                return resp.status

        assert set(await asyncio.gather(*(status(victim["key"]) for _ in range(40)))) == {200}
        async with http.delete(
            f"{two_workers}/admin/admin-keys/{victim['id']}", headers=bearer(ops["key"])
        ) as resp:
            assert resp.status == 204
        assert set(await asyncio.gather(*(status(victim["key"]) for _ in range(40)))) == {401}

        async def counted() -> bool:
            async with http.get(f"{two_workers}/metrics") as resp:
                return _value(await resp.text(), REFUSED % "revoked") == 40

        await eventually(counted)


# --- last use, caching, refusals -----------------------------------------------------------


async def test_last_use_is_recorded_in_batches(server: Server, api: AdminAPI) -> None:
    """An admin key's last_used_at appears once the usage batch is written, not per request."""
    used = await minted(api)
    await server.authority.flush_usage()
    assert (await used.call("GET", "/clients?limit=1")).status == 200

    async def last_used() -> int | None:
        listed = await walk(api, "/admin-keys", limit=500)
        return next(i["last_used_at"] for i in listed if i["id"] == used.key_id)

    assert await last_used() is None
    assert await server.authority.flush_usage() >= 1
    at = await last_used()
    assert at is not None
    assert abs(at - store.now()) < 60


async def test_every_admin_answer_is_no_store(server: Server, api: AdminAPI) -> None:
    """Admin answers, reads, errors and refusals alike, carry Cache-Control: no-store."""
    for method, path, headers in (
        ("GET", "/admin/clients?limit=1", bearer(api.key)),
        ("GET", "/admin/admin-keys?limit=1", bearer(api.key)),
        ("GET", "/admin/clients/client_" + "A" * 22, bearer(api.key)),
        ("GET", "/admin/tokens?limit=x", bearer(api.key)),
        ("GET", "/admin/audit?limit=1", {}),
    ):
        resp = await server.request(method, path, headers=headers)
        assert resp.headers.get("Cache-Control") == "no-store", (path, resp.status)


async def test_malformed_key_is_refused_without_any_io(settings: Settings) -> None:
    """A presented value with a wrong prefix, length or checksum is refused before any I/O:
    with the stores' pool closed, only a well-formed key reaches (and fails on) it."""
    assert settings.database_url
    assert settings.redis_url
    good = credentials.generate(Kind.ADMIN_KEY)
    async with open_authority(
        settings, settings.database_url, settings.redis_url, listen=False
    ) as closed:
        await closed.pool.close()
        for presented in (
            good[:-1] + ("A" if good[-1] != "A" else "B"),
            good + "A",
            credentials.generate(Kind.API_KEY),
            "iadm_" + "x" * 600,
        ):
            assert await admin.authenticate(closed, presented) is admin.Refusal.MALFORMED
        with pytest.raises(asyncpg.InterfaceError):
            await admin.authenticate(closed, good)


async def test_refusals_are_counted_and_logged_without_the_key(
    server: Server, api: AdminAPI, authority: Authority, caplog: pytest.LogCaptureFixture
) -> None:
    """Each refusal adds one to its reason's counter and logs a WARNING naming the reason,
    with no 8-character fragment of the presented value anywhere in the logs."""
    revoked = await minted(api)
    await api.call("DELETE", f"/admin-keys/{revoked.key_id}")
    expired = await minted(api)
    await expire(authority, expired.key_id)
    auditor = await minted(api, role="auditor")
    malformed = api.key[:-1] + ("A" if api.key[-1] != "A" else "B")
    unknown = credentials.generate(Kind.ADMIN_KEY)
    before = (await server.request("GET", "/metrics")).body.decode()
    caplog.set_level(logging.DEBUG)

    for reason, method, headers in (
        ("missing", "GET", {}),
        ("malformed", "GET", bearer(malformed)),
        ("unknown", "GET", bearer(unknown)),
        ("revoked", "GET", bearer(revoked.key)),
        ("expired", "GET", bearer(expired.key)),
        ("insufficient_scope", "POST", bearer(auditor.key)),
    ):
        caplog.clear()
        resp = await server.request(method, "/admin/clients", headers=headers, json={})
        assert resp.status == (403 if reason == "insufficient_scope" else 401), reason
        (record,) = [r for r in caplog.records if r.name == "introspect.web.admin"]
        assert record.levelno == logging.WARNING
        assert f"refused: {reason}" in record.getMessage()
        logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
        for presented in (malformed, unknown, revoked.key, expired.key, auditor.key):
            for i in range(len(presented) - 7):
                assert presented[i : i + 8] not in logged, (reason, presented[i : i + 8])

    after = (await server.request("GET", "/metrics")).body.decode()
    for reason in ("missing", "malformed", "unknown", "revoked", "expired", "insufficient_scope"):
        assert _value(after, REFUSED % reason) - _value(before, REFUSED % reason) == 1, reason


# --- the command line ----------------------------------------------------------------------


async def test_cli_creates_lists_and_revokes_admin_keys(
    env: dict[str, str],  # noqa: F811 (the fixture imported above)
    server: Server,
    api: AdminAPI,
) -> None:
    """`admin-key create/list/revoke` work through the same code as the API, as actor cli."""
    ran = await cli(
        env, "admin-key", "create", "--name", "cli-audit", "--role", "auditor",
        "--expires-in", "600", "--json",
    )  # fmt: skip
    made = ran.json()
    assert set(made) == {"id", "key"}
    auditor = AdminAPI(server, made["id"], made["key"])
    assert (await auditor.call("GET", "/clients?limit=1")).status == 200
    assert (await auditor.call("POST", "/clients", {"name": "x"})).status == 403

    listed = (await cli(env, "admin-key", "list", "--limit", "500", "--json")).json()
    item = next(i for i in listed["items"] if i["id"] == made["id"])
    assert item["role"] == "auditor"
    assert item["expires_at"] == item["created_at"] + 600
    assert "key" not in item
    table = await cli(env, "admin-key", "list")
    assert table.code == 0
    assert table.out.split()[:3] == ["id", "name", "role"]
    assert made["key"] not in table.out

    revoked = (await cli(env, "admin-key", "revoke", made["id"], "--json")).json()
    assert revoked["id"] == made["id"]
    assert revoked["revoked_at"] is not None
    assert (await auditor.call("GET", "/clients?limit=1")).status == 401
    entries = (await api.call("GET", f"/audit?target_id={made['id']}")).json()["items"]
    assert [(e["action"], e["actor"]) for e in entries] == [
        ("admin_key.revoke", "cli"),
        ("admin_key.create", "cli"),
    ]

    unknown = await cli(env, "admin-key", "revoke", "adm_" + "A" * 22)
    assert unknown.code == 1
    assert unknown.err.strip() == "introspect: no such admin key"
    bad = await cli(env, "admin-key", "create", "--name", "x", "--role", "root")
    assert bad.code != 0
