"""The developer portal over HTTP: links, session cookies, CSRF, ownership, headers, and that
its key operations act at once everywhere, like the admin API's."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from introspect import store
from introspect.config import Settings
from introspect.portal.sessions import LINK_TTL
from tests.helpers import AdminAPI, Registered, Server, admin_api, cli_env, start_server
from tests.portal import enter, expire_session, mint, path_of, set_cookie, shown_key, unique_sub

JAN_31_2099 = int(dt.datetime(2099, 1, 31, tzinfo=dt.UTC).timestamp())
PAGE_HEADERS = {
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


@pytest.fixture
async def api(server: Server) -> AdminAPI:
    """The session server's admin API with a fresh admin key."""
    return await admin_api(server)


async def introspect(server: Server, rs: Registered, key: str) -> bool:
    """Whether /introspect answers `key` active."""
    resp = await server.post_form("/introspect", {"token": key}, headers=rs.auth)
    assert resp.status == 200
    return bool(resp.json()["active"])


def assert_page_headers(headers: dict[str, str] | object) -> None:
    """A portal page's security headers: strict CSP without inline code, no framing."""
    csp = headers["Content-Security-Policy"]  # type: ignore[index]
    assert "frame-ancestors 'none'" in csp
    assert "script-src 'self'" in csp
    assert "style-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "default-src 'none'" in csp
    for name, value in PAGE_HEADERS.items():
        assert headers[name] == value, name  # type: ignore[index]


# --- links and sessions --------------------------------------------------------------------


async def test_minting_a_link_needs_an_admin_key_and_is_audited(
    server: Server, api: AdminAPI
) -> None:
    """POST /admin/portal-sessions without an admin key is 401; with one, 201 and audited."""
    sub = unique_sub()
    refused = await server.request(
        "POST", "/admin/portal-sessions", json={"sub": sub, "scopes": ["read"]}
    )
    assert refused.status == 401
    minted = await mint(api, sub)
    assert set(minted) == {"id", "url", "expires_at"}
    assert minted["url"].startswith("http://introspect.test/portal/enter/")
    assert minted["expires_at"] - store.now() in range(LINK_TTL - 5, LINK_TTL + 1)
    audit = await api.call("GET", f"/audit?target_id={minted['id']}")
    (entry,) = audit.json()["items"]
    assert entry["action"] == "portal.session_create"
    assert entry["actor"] == api.key_id
    assert entry["details"]["sub"] == sub
    rows = await server.authority.pool.fetch(
        "SELECT link_hash FROM portal_sessions WHERE id = $1", minted["id"]
    )
    link = path_of(minted["url"]).rsplit("/", 1)[1]
    assert link.encode() not in bytes(rows[0]["link_hash"])


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ({"scopes": ["read"]}, "sub"),
        ({"sub": "u"}, "scopes"),
        ({"sub": "u", "scopes": []}, "scopes"),
        ({"sub": "u", "scopes": ["a b"]}, "scopes"),
        ({"sub": "u", "scopes": ["read"], "return_url": "http://example.com/"}, "return_url"),
        ({"sub": "u", "scopes": ["read"], "return_url": "javascript:alert(1)"}, "return_url"),
        ({"sub": "u", "scopes": ["read"], "return_url": "/relative"}, "return_url"),
        ({"sub": "u", "scopes": ["read"], "return_url": "https://a:b@example.com/"}, "return_url"),
        ({"sub": "u", "scopes": ["read"], "return_url": "https://example.com:x/"}, "return_url"),
        ({"sub": "u", "scopes": ["read"], "extra": 1}, "extra"),
    ],
)
async def test_minting_refuses_bad_bodies(
    server: Server, api: AdminAPI, body: dict[str, object], names: str
) -> None:
    """A bad mint body is 400 naming the field, and no session row is written."""
    before = await server.authority.pool.fetchval("SELECT count(*) FROM portal_sessions")
    resp = await api.call("POST", "/portal-sessions", body)
    assert resp.status == 400, resp.body
    assert names in resp.json()["error_description"]
    after = await server.authority.pool.fetchval("SELECT count(*) FROM portal_sessions")
    assert after == before


async def test_minting_checks_the_client(
    server: Server, api: AdminAPI, app_client: Registered
) -> None:
    """An unknown client is 404; scopes outside the client's are 400; https and loopback
    return URLs are accepted."""
    unknown = await api.call(
        "POST", "/portal-sessions", {"sub": "u", "client_id": "client_x", "scopes": ["read"]}
    )
    assert unknown.status == 404
    outside = await api.call(
        "POST",
        "/portal-sessions",
        {"sub": "u", "client_id": app_client.client_id, "scopes": ["admin"]},
    )
    assert outside.status == 400
    for url in ("https://app.example/keys", "http://127.0.0.1:3000/", "http://localhost/x"):
        await mint(api, unique_sub(), client_id=app_client.client_id, return_url=url)


async def test_link_becomes_a_strict_httponly_cookie_once(server: Server, api: AdminAPI) -> None:
    """Opening the link sets an HttpOnly SameSite=Strict cookie; a second opening is a
    friendly 410 page that sets nothing."""
    minted = await mint(api, unique_sub())
    first = await server.request("GET", path_of(minted["url"]), allow_redirects=False)
    assert first.status == 200
    assert_page_headers(first.headers)
    morsel = set_cookie(first, "portal")
    assert morsel["httponly"]
    assert morsel["samesite"] == "Strict"
    assert morsel["path"] == "/"
    assert not morsel["secure"]  # the test issuer is http
    assert int(morsel["max-age"]) == server.authority.settings.portal_session_ttl
    again = await server.request("GET", path_of(minted["url"]), allow_redirects=False)
    assert again.status == 410
    assert "Set-Cookie" not in again.headers
    assert b"This link no longer works" in again.body
    assert again.headers["Content-Type"].startswith("text/html")
    assert_page_headers(again.headers)


async def test_expired_and_made_up_links_fail_with_a_page(server: Server, api: AdminAPI) -> None:
    """A link past its 5 minutes, and one that was never made, answer the same 410 page."""
    minted = await mint(api, unique_sub())
    await server.authority.pool.execute(
        "UPDATE portal_sessions SET link_expires_at = 1 WHERE id = $1", minted["id"]
    )
    for path in (path_of(minted["url"]), "/portal/enter/" + "A" * 43, "/portal/enter/x"):
        resp = await server.request("GET", path, allow_redirects=False)
        assert resp.status == 410, path
        assert b"This link no longer works" in resp.body


async def test_https_issuer_gives_a_secure_host_prefixed_cookie(settings: Settings) -> None:
    """With an https issuer the cookie is `__Host-portal`, Secure, Path=/ and no Domain, and
    sign-out deletes it with the same attributes (a browser ignores it otherwise)."""
    test_server, srv = await start_server(
        dataclasses.replace(settings, issuer_override="https://portal.example")
    )
    try:
        api = await admin_api(srv)
        minted = await mint(api, unique_sub())
        assert minted["url"].startswith("https://portal.example/portal/enter/")
        resp = await srv.request("GET", path_of(minted["url"]), allow_redirects=False)
        morsel = set_cookie(resp, "__Host-portal")
        assert morsel["secure"]
        assert morsel["path"] == "/"
        assert not morsel["domain"]
        consumer = await enter(srv, api)
        assert consumer.name == "__Host-portal"
        out = await consumer.post("/portal/sign-out", {})
        deleted = set_cookie(out, "__Host-portal")
        assert deleted.value == ""
        assert deleted["secure"]
        assert deleted["path"] == "/"
    finally:
        await srv.http.close()
        await test_server.close()


async def test_without_a_live_session_every_page_goes_to_the_expired_page(
    server: Server, api: AdminAPI
) -> None:
    """No cookie, a made-up cookie, or an expired session: 303 to /portal/expired."""
    consumer = await enter(server, api)
    await expire_session(server.authority.pool, consumer.session_id)
    made_up = dataclasses.replace(consumer, cookie="B" * 43)
    for who in (consumer, made_up):
        for path in ("/portal/", "/portal/keys/new"):
            resp = await who.get(path)
            assert resp.status == 303
            assert resp.headers["Location"] == "/portal/expired"
    bare = await server.request("GET", "/portal/", allow_redirects=False)
    assert bare.status == 303
    page = await server.request("GET", "/portal/expired")
    assert page.status == 401
    assert b"expired" in page.body


async def test_sign_out_ends_the_session_everywhere(server: Server, api: AdminAPI) -> None:
    """After sign-out the old cookie value is refused, and the page links back to the product."""
    consumer = await enter(server, api, return_url="https://app.example/settings")
    out = await consumer.post("/portal/sign-out", {})
    assert out.status == 200
    assert b"You are signed out" in out.body
    assert b'href="https://app.example/settings"' in out.body
    assert set_cookie(out, "portal").value == ""
    resp = await consumer.get("/portal/")
    assert resp.status == 303
    assert resp.headers["Location"] == "/portal/expired"


async def test_an_admin_revokes_a_session(server: Server, api: AdminAPI) -> None:
    """DELETE /admin/portal-sessions/{id} ends it at once; an unknown id is 404."""
    consumer = await enter(server, api)
    assert (await api.call("DELETE", f"/portal-sessions/{consumer.session_id}")).status == 204
    assert (await consumer.get("/portal/")).status == 303
    assert (await api.call("DELETE", "/portal-sessions/psn_" + "x" * 22)).status == 404
    assert (await api.call("DELETE", "/portal-sessions/nope")).status == 404


# --- keys ----------------------------------------------------------------------------------


async def test_empty_list_says_what_to_do(server: Server, api: AdminAPI) -> None:
    """A consumer with no keys sees an empty state that points at creating one."""
    consumer = await enter(server, api)
    page = await consumer.get("/portal/")
    assert page.status == 200
    assert_page_headers(page.headers)
    assert b"You have no API keys yet" in page.body
    assert b'href="/portal/keys/new"' in page.body


async def test_created_key_is_shown_once_and_works(
    server: Server, api: AdminAPI, resource_server: Registered
) -> None:
    """Creating a key shows it once on a no-store page; it introspects active with its scopes;
    the list shows its name and prefix, never the key."""
    consumer = await enter(server, api)
    key_id, key = await consumer.create(name="billing job", scope="read")
    assert await introspect(server, resource_server, key)
    listing = await consumer.get("/portal/")
    assert b"billing job" in listing.body
    assert key[:11].encode() in listing.body
    assert key.encode() not in listing.body
    record = await server.authority.pool.fetchrow(
        "SELECT name, prefix, sub, scopes, exp FROM credentials WHERE id = $1", key_id
    )
    assert (record["name"], record["prefix"], record["sub"]) == (
        "billing job",
        key[:11],
        consumer.sub,
    )
    assert record["scopes"] == ["read"]
    assert record["exp"] is None
    audit = await api.call("GET", f"/audit?target_id={key_id}")
    assert [e["actor"] for e in audit.json()["items"]] == [f"portal:{consumer.sub}"]


async def test_issued_page_is_no_store_with_strict_headers(server: Server, api: AdminAPI) -> None:
    """The page that shows a new key is never cached and carries the strict headers."""
    consumer = await enter(server, api)
    resp = await consumer.post("/portal/keys", {"scope": "read"})
    assert resp.status == 201
    assert_page_headers(resp.headers)
    assert b"This is the only time the whole key is shown" in resp.body


async def test_key_of_a_session_client_is_bound_to_it(
    server: Server, api: AdminAPI, app_client: Registered
) -> None:
    """A session naming a client makes keys bound to it and lists only that client's keys."""
    sub = unique_sub()
    other = await api.call(
        "POST", "/api-keys", {"sub": sub, "scopes": ["read"], "name": "elsewhere"}
    )
    consumer = await enter(server, api, sub, client_id=app_client.client_id, scopes=["read"])
    key_id, _ = await consumer.create(name="bound")
    client_id = await server.authority.pool.fetchval(
        "SELECT client_id FROM credentials WHERE id = $1", key_id
    )
    assert client_id == app_client.client_id
    listing = await consumer.get("/portal/")
    assert b"bound" in listing.body
    assert b"elsewhere" not in listing.body
    assert (await consumer.get(f"/portal/keys/{other.json()['id']}")).status == 404


async def test_scopes_outside_the_session_are_refused(server: Server, api: AdminAPI) -> None:
    """A scope the session does not allow re-shows the form with a message; no key is made."""
    consumer = await enter(server, api, scopes=["read"])
    resp = await consumer.post("/portal/keys", [("scope", "read"), ("scope", "write")])
    assert resp.status == 400
    assert b"you may not give a key write" in resp.body
    assert await consumer.key_count() == 0


async def test_roll_keeps_the_old_key_for_the_grace_period(
    server: Server, api: AdminAPI, resource_server: Registered
) -> None:
    """Rolling with 1 h grace: both keys work, and the page says until when the old one does."""
    consumer = await enter(server, api)
    key_id, old = await consumer.create(name="rolled")
    before = store.now()
    resp = await consumer.post(f"/portal/keys/{key_id}/roll", {"grace": "3600"})
    assert resp.status == 201
    assert_page_headers(resp.headers)
    assert b"The old key keeps working until" in resp.body
    new = shown_key(resp)
    assert new != old
    assert await introspect(server, resource_server, old)
    assert await introspect(server, resource_server, new)
    exp = await server.authority.pool.fetchval("SELECT exp FROM credentials WHERE id = $1", key_id)
    assert before + 3600 <= exp <= store.now() + 3600
    name = await server.authority.pool.fetchval(
        "SELECT name FROM credentials WHERE prefix = $1", new[:11]
    )
    assert name == "rolled"


@pytest.mark.parametrize("grace", ["604801", "-1", "1h", "9" * 20])
async def test_roll_refuses_a_grace_period_over_seven_days(
    server: Server, api: AdminAPI, grace: str
) -> None:
    """A grace period outside 0..7 days is a 400 page and rolls nothing."""
    consumer = await enter(server, api)
    key_id, _ = await consumer.create()
    resp = await consumer.post(f"/portal/keys/{key_id}/roll", {"grace": grace})
    assert resp.status == 400
    assert b"Grace period" in resp.body
    assert await consumer.key_count() == 1


async def test_revoke_is_dead_at_once_and_audited(
    server: Server, api: AdminAPI, resource_server: Registered
) -> None:
    """Revoking through the portal: inactive at the next introspection, one
    `credential.revoke` entry by `portal:<sub>`, the list shows it revoked."""
    consumer = await enter(server, api)
    key_id, key = await consumer.create()
    assert await introspect(server, resource_server, key)
    confirm = await consumer.get(f"/portal/keys/{key_id}/revoke")
    assert confirm.status == 200
    assert b"Yes, revoke it" in confirm.body
    resp = await consumer.post(f"/portal/keys/{key_id}/revoke", {})
    assert resp.status == 303
    assert resp.headers["Location"] == "/portal/?done=revoked"
    assert not await introspect(server, resource_server, key)
    audit = await api.call("GET", f"/audit?target_id={key_id}&action=credential.revoke")
    assert [e["actor"] for e in audit.json()["items"]] == [f"portal:{consumer.sub}"]
    listing = await consumer.get("/portal/?done=revoked")
    assert b'class="status revoked"' in listing.body
    again = await consumer.post(f"/portal/keys/{key_id}/revoke", {})
    assert again.status == 409


async def test_rename_and_change_expiry(server: Server, api: AdminAPI) -> None:
    """The key page renames a key and sets its expiry to a date; a past date is refused."""
    consumer = await enter(server, api)
    key_id, _ = await consumer.create(name="old name")
    resp = await consumer.post(
        f"/portal/keys/{key_id}", {"name": "new name", "expiry": "date", "expires_on": "2099-01-31"}
    )
    assert resp.status == 303
    record = await server.authority.pool.fetchrow(
        "SELECT name, exp FROM credentials WHERE id = $1", key_id
    )
    assert record["name"] == "new name"
    assert record["exp"] == JAN_31_2099
    past = await consumer.post(
        f"/portal/keys/{key_id}", {"name": "x", "expiry": "date", "expires_on": "2001-01-01"}
    )
    assert past.status == 400
    assert b"choose a day after today" in past.body
    kept = await consumer.post(f"/portal/keys/{key_id}", {"name": "kept", "expiry": "keep"})
    assert kept.status == 303
    exp = await server.authority.pool.fetchval("SELECT exp FROM credentials WHERE id = $1", key_id)
    assert exp == JAN_31_2099


# --- ownership, CSRF, hostile requests -----------------------------------------------------


async def test_another_consumers_key_is_404_like_a_made_up_one(
    server: Server, api: AdminAPI, resource_server: Registered
) -> None:
    """Every page and action on another subject's key answers what a nonexistent id does,
    and changes nothing."""
    owner = await enter(server, api)
    key_id, key = await owner.create(name="mine")
    intruder = await enter(server, api)
    made_up = "key_" + "Z" * 22
    for target in (key_id, made_up, "nonsense", "key_%2e%2e"):
        answers = [
            await intruder.get(f"/portal/keys/{target}"),
            await intruder.get(f"/portal/keys/{target}/revoke"),
            await intruder.post(f"/portal/keys/{target}", {"name": "stolen"}),
            await intruder.post(f"/portal/keys/{target}/roll", {"grace": "0"}),
            await intruder.post(f"/portal/keys/{target}/revoke", {}),
        ]
        assert [a.status for a in answers] == [404] * 5, target
        for answer in answers:
            assert b"There is no such page or key here." in answer.body
            assert_page_headers(answer.headers)
    assert await introspect(server, resource_server, key)
    name = await server.authority.pool.fetchval(
        "SELECT name FROM credentials WHERE id = $1", key_id
    )
    assert name == "mine"


@pytest.mark.parametrize("token", [None, "", "0" * 64, "not hex", "é"])
async def test_a_post_without_the_csrf_token_changes_nothing(
    server: Server, api: AdminAPI, resource_server: Registered, token: str | None
) -> None:
    """Create, revoke, roll, rename and sign-out without the session's CSRF token: 403 each,
    and nothing changed."""
    consumer = await enter(server, api)
    key_id, key = await consumer.create(name="kept")
    extra = [] if token is None else [("csrf", token)]
    for path, form in (
        ("/portal/keys", [("scope", "read")]),
        (f"/portal/keys/{key_id}/revoke", []),
        (f"/portal/keys/{key_id}/roll", [("grace", "0")]),
        (f"/portal/keys/{key_id}", [("name", "changed")]),
        ("/portal/sign-out", []),
    ):
        resp = await consumer.post(path, form + extra, csrf=False)
        assert resp.status == 403, path
        assert b"This form has expired" in resp.body
    assert await introspect(server, resource_server, key)
    rows = await server.authority.pool.fetch(
        "SELECT name FROM credentials WHERE sub = $1", consumer.sub
    )
    assert [r["name"] for r in rows] == ["kept"]
    assert (await consumer.get("/portal/")).status == 200


async def test_another_sessions_csrf_token_is_refused(server: Server, api: AdminAPI) -> None:
    """A CSRF token is bound to its session: another consumer's is refused."""
    first = await enter(server, api)
    second = await enter(server, api)
    resp = await first.post(
        "/portal/keys", [("scope", "read"), ("csrf", await second.csrf())], csrf=False
    )
    assert resp.status == 403


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({"Content-Type": "application/json"}, b'{"scope": "read"}'),
        ({"Content-Type": "application/x-www-form-urlencoded"}, b"scope=%ff"),
        ({"Content-Type": "application/x-www-form-urlencoded"}, b"scope=%00"),
        ({"Content-Type": "application/x-www-form-urlencoded"}, "scope=\u00e9".encode()),
    ],
)
async def test_malformed_posts_are_friendly_400_pages(
    server: Server, api: AdminAPI, headers: dict[str, str], body: bytes
) -> None:
    """A body that is not a readable form is a 400 page, never a 500 or JSON."""
    consumer = await enter(server, api)
    resp = await server.request(
        "POST",
        "/portal/keys",
        data=body,
        headers={**consumer.cookies, **headers},
        allow_redirects=False,
    )
    assert resp.status == 400
    assert resp.headers["Content-Type"].startswith("text/html")
    assert b"Traceback" not in resp.body


async def test_unknown_portal_paths_and_methods_are_pages(server: Server) -> None:
    """Unknown paths are a 404 page, wrong methods a 405 page, both with the strict headers."""
    missing = await server.request("GET", "/portal/nothing/here")
    assert missing.status == 404
    assert missing.headers["Content-Type"].startswith("text/html")
    assert_page_headers(missing.headers)
    wrong = await server.request("DELETE", "/portal/keys")
    assert wrong.status == 405
    assert_page_headers(wrong.headers)
    static = await server.request("GET", "/portal/static/portal.js")
    assert static.status == 200
    assert static.headers["Content-Type"].startswith("text/javascript")
    assert (await server.request("GET", "/portal/static/..%2fweb.py")).status == 404


async def test_names_and_prefixes_through_the_admin_api(server: Server, api: AdminAPI) -> None:
    """The admin API takes a key `name` at issue and by PATCH, and shows the stored prefix."""
    issued = await api.call(
        "POST", "/api-keys", {"sub": unique_sub(), "scopes": ["read"], "name": "ci"}
    )
    assert issued.status == 201
    body = issued.json()
    assert body["name"] == "ci"
    assert body["prefix"] == body["key"][:11]
    renamed = await api.call("PATCH", f"/api-keys/{body['id']}", {"name": "ci-2"})
    assert renamed.json()["name"] == "ci-2"
    assert (await api.call("PATCH", f"/api-keys/{body['id']}", {"name": "x" * 101})).status == 400
    rotated = await api.call("POST", f"/api-keys/{body['id']}/rotate", {})
    assert rotated.json()["name"] == "ci-2"
    assert rotated.json()["prefix"] == rotated.json()["key"][:11]


def test_portal_link_command(settings: Settings, tmp_path: Path) -> None:
    """`introspect portal-link --json` prints the link and its expiry."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "introspect.cli",
            "portal-link",
            "--sub",
            unique_sub(),
            "--scope",
            "read",
            "--json",
        ],
        env=cli_env(settings, tmp_path),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    minted = json.loads(out.stdout)
    assert "/portal/enter/" in minted["url"]
    assert minted["expires_at"] > store.now()


async def test_names_and_subjects_are_escaped_in_pages(server: Server, api: AdminAPI) -> None:
    """A key name or subject holding HTML is shown as text, never as markup."""
    consumer = await enter(server, api, sub='<img src=x onerror="alert(1)">')
    await consumer.create(name="<script>alert(1)</script>")
    page = (await consumer.get("/portal/")).body
    assert b"<script>alert" not in page
    assert b"&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert b"<img src=x" not in page


async def test_the_list_shows_remaining_credits_and_recent_use_where_limits_exist(
    server: Server, api: AdminAPI, resource_server: Registered
) -> None:
    """A key with credits and a window shows what is left and what the current window used
    (uses handed to workers in leases count as used); a key without limits in the same list
    says it has none."""
    consumer = await enter(server, api)
    limited = await api.call(
        "POST",
        "/api-keys",
        {
            "sub": consumer.sub,
            "scopes": ["read"],
            "name": "metered",
            "credits": {"remaining": 10},
            "rate_limits": [{"name": "hourly", "limit": 50, "window": 3600}],
        },
    )
    assert limited.status == 201, limited.body
    await consumer.create(name="free", scope="read")
    for _ in range(3):
        assert await introspect(server, resource_server, limited.json()["key"])
    listing = await consumer.get("/portal/")
    assert b"<th>Usage</th>" in listing.body
    assert b"7 credits left" in listing.body
    used = re.search(rb"(\d+) of 50 uses in 3600 s", listing.body)
    assert used is not None
    assert 3 <= int(used.group(1)) <= 50
    assert b"no limits" in listing.body
