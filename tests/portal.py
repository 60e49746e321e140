"""Helpers of the developer portal's tests: a consumer with a portal session, over plain HTTP.

Cookies are sent by hand (the test server listens on an IP address, whose
cookies aiohttp's jar refuses), and redirects are not followed, so each
test sees exactly what the portal answered.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from introspect import credentials
from introspect.portal.web import cookie_name
from tests.helpers import AdminAPI, Answer, Server

CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')
KEY = re.compile(r'id="new-key" type="text" readonly value="([^"]+)"')
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def unique_sub() -> str:
    """A subject no other test uses."""
    return "user-" + secrets.token_hex(6)


async def mint(api: AdminAPI, sub: str, **fields: Any) -> dict[str, Any]:
    """POST /admin/portal-sessions for `sub` (scopes read and write unless given): its body."""
    resp = await api.call(
        "POST", "/portal-sessions", {"sub": sub, "scopes": ["read", "write"], **fields}
    )
    assert resp.status == 201, resp.body
    return resp.json()  # type: ignore[no-any-return]


def path_of(url: str) -> str:
    """The path of a minted link (the test server is not at the issuer's address)."""
    return urlsplit(url).path


def set_cookie(answer: Answer, name: str) -> Any:
    """The Set-Cookie morsel named `name` in an answer."""
    for header in answer.headers.getall("Set-Cookie", []):
        jar: SimpleCookie = SimpleCookie()
        jar.load(header)
        if name in jar:
            return jar[name]
    raise AssertionError(f"no Set-Cookie {name}")


@dataclass
class Consumer:
    """A consumer in the portal: their session cookie, as a browser would send it."""

    server: Server
    sub: str
    cookie: str
    session_id: str
    name: str = field(default="portal")

    async def get(self, path: str) -> Answer:
        """GET a portal page with the session cookie, redirects not followed."""
        return await self.server.request("GET", path, headers=self.cookies, allow_redirects=False)

    async def post(
        self, path: str, data: dict[str, Any] | list[tuple[str, str]], csrf: bool = True
    ) -> Answer:
        """POST a form with the session cookie (and its CSRF token unless told not to)."""
        fields = list(data.items()) if isinstance(data, dict) else list(data)
        if csrf:
            fields.append(("csrf", await self.csrf()))
        return await self.server.request(
            "POST",
            path,
            data=fields,
            headers={**self.cookies, **FORM},
            allow_redirects=False,
        )

    @property
    def cookies(self) -> dict[str, str]:
        """The Cookie header of this consumer."""
        return {"Cookie": f"{self.name}={self.cookie}"}

    async def csrf(self) -> str:
        """The CSRF token the list page carries."""
        page = await self.get("/portal/")
        assert page.status == 200, page.status
        found = CSRF.search(page.body.decode())
        assert found, "no CSRF token on the page"
        return found.group(1)

    async def create(self, **fields: Any) -> tuple[str, str]:
        """Create a key through the portal: (its id, the key)."""
        form = {"name": "k", "scope": "read", "expiry": "never", **fields}
        resp = await self.post("/portal/keys", form)
        assert resp.status == 201, resp.body[:400]
        key = shown_key(resp)
        record = await self.server.authority.pool.fetchrow(
            "SELECT id FROM credentials WHERE sub = $1 AND prefix = $2",
            self.sub,
            credentials.display_prefix(key),
        )
        return record["id"], key

    async def key_count(self) -> int:
        """How many credentials the consumer's subject holds, live or not."""
        count: int = await self.server.authority.pool.fetchval(
            "SELECT count(*) FROM credentials WHERE sub = $1", self.sub
        )
        return count


def shown_key(answer: Answer) -> str:
    """The new key a "your new key" page shows."""
    found = KEY.search(answer.body.decode())
    assert found, "no new key on the page"
    return found.group(1)


async def enter(server: Server, api: AdminAPI, sub: str | None = None, **fields: Any) -> Consumer:
    """Mint a link for a (new) subject and open it: the consumer signed in."""
    sub = sub or unique_sub()
    minted = await mint(api, sub, **fields)
    resp = await server.request("GET", path_of(minted["url"]), allow_redirects=False)
    assert resp.status == 200, resp.body
    name = cookie_name(server.authority.settings)
    return Consumer(server, sub, set_cookie(resp, name).value, minted["id"], name)


async def expire_session(pool: asyncpg.Pool, session_id: str) -> None:
    """Move a session's end into the past, as time passing would."""
    await pool.execute("UPDATE portal_sessions SET expires_at = 1 WHERE id = $1", session_id)
