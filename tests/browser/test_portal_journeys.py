"""The developer portal in a real browser: one journey per test, by visible text and roles.

With INTROSPECT_SCREENSHOTS set to a folder (`make screenshots` sets it to
docs/), the first journey saves the key list and the "your new key" page there.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from introspect import store
from tests.browser.conftest import missing
from tests.helpers import AdminAPI, Registered, Server, admin_api
from tests.portal import expire_session, mint, path_of, unique_sub

if (why := missing()) is not None:
    pytest.skip(why, allow_module_level=True)  # one line in the summary for every journey

# Only where playwright is installed (above).
from playwright.async_api import Page, expect

SCREENSHOTS = os.environ.get("INTROSPECT_SCREENSHOTS")
DESKTOP = {"width": 1100, "height": 720}
PHONE = {"width": 390, "height": 844}


@pytest.fixture
async def api(server: Server) -> AdminAPI:
    """The session server's admin API with a fresh admin key."""
    return await admin_api(server)


@pytest.fixture
async def context(browser: Any) -> AsyncIterator[Any]:
    """A fresh browser profile (no cookies) that may use the clipboard."""
    ctx = await browser.new_context(
        viewport=DESKTOP, permissions=["clipboard-read", "clipboard-write"]
    )
    try:
        yield ctx
    finally:
        await ctx.close()


@pytest.fixture
async def page(context: Any) -> Page:
    """A tab of that profile."""
    return await context.new_page()


async def introspects_active(server: Server, rs: Registered, key: str) -> bool:
    """Whether /introspect answers `key` active right now."""
    resp = await server.post_form("/introspect", {"token": key}, headers=rs.auth)
    return bool(resp.json()["active"])


async def open_portal(page: Page, server: Server, api: AdminAPI, sub: str, **fields: Any) -> str:
    """Mint a link for `sub` and open it in the browser; it lands on the key list. The link."""
    link = server.url + path_of((await mint(api, sub, **fields))["url"])
    await page.goto(link)
    await expect(page.get_by_role("heading", name="Your API keys")).to_be_visible()
    return link


async def shoot(page: Page, name: str) -> None:
    """Save a screenshot to INTROSPECT_SCREENSHOTS (made if need be), when set."""
    if SCREENSHOTS:
        await page.screenshot(path=str(Path(SCREENSHOTS) / name), full_page=True)


async def test_create_copy_roll_revoke_sign_out(
    server: Server, api: AdminAPI, resource_server: Registered, context: Any, page: Page
) -> None:
    """Link -> empty list -> create and copy a key that introspects active -> roll with 1 h
    grace (both work) -> revoke the old one (inactive at once) -> sign out (cookie dead)."""
    sub = unique_sub()
    await open_portal(page, server, api, sub, return_url="https://app.example/settings")
    await expect(page.get_by_text("You have no API keys yet")).to_be_visible()

    await page.get_by_role("link", name="Create your first key").click()
    await page.get_by_label("Name").fill("production server")
    await page.get_by_label("Never expires").check()
    await page.get_by_role("button", name="Create key").click()
    await expect(page.get_by_role("heading", name="Your new key")).to_be_visible()
    await expect(page.get_by_text("it cannot be shown again")).to_be_visible()
    key = await page.locator("#new-key").input_value()
    await page.get_by_role("button", name="Copy").click()
    await expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert await page.evaluate("navigator.clipboard.readText()") == key
    assert await introspects_active(server, resource_server, key)
    await shoot(page, "portal-new-key.png")

    await page.get_by_role("link", name="Back to your keys").click()
    await page.get_by_role("link", name="Manage production server").click()
    await page.get_by_label("Old key keeps working for").select_option(label="1 hour")
    await page.get_by_role("button", name="Roll key").click()
    await expect(page.get_by_text("The old key keeps working until")).to_be_visible()
    new_key = await page.locator("#new-key").input_value()
    assert new_key != key
    assert await introspects_active(server, resource_server, key)
    assert await introspects_active(server, resource_server, new_key)

    await page.get_by_role("link", name="Back to your keys").click()
    rows = page.get_by_role("row").filter(has_text="production server")
    await expect(rows).to_have_count(2)
    await expect(rows.filter(has_text=key[:11])).to_contain_text("active")
    await shoot(page, "portal-keys.png")

    await rows.filter(has_text=key[:11]).get_by_role("link", name="Manage").click()
    await page.get_by_role("link", name="Revoke…").click()
    await page.get_by_role("button", name="Yes, revoke it").click()
    await expect(page.get_by_role("status")).to_contain_text("stopped working everywhere")
    assert not await introspects_active(server, resource_server, key)
    assert await introspects_active(server, resource_server, new_key)
    await expect(rows.filter(has_text=key[:11])).to_contain_text("revoked")

    (cookie,) = await context.cookies()
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("heading", name="You are signed out")).to_be_visible()
    await expect(page.get_by_role("link", name="Back to the product")).to_have_attribute(
        "href", "https://app.example/settings"
    )
    await context.add_cookies([cookie])
    await page.goto(server.url + "/portal/")
    await expect(page).to_have_url(server.url + "/portal/expired")


async def test_a_used_link_fails_with_a_friendly_page(
    server: Server, api: AdminAPI, browser: Any, page: Page
) -> None:
    """Opening a link a second time (another browser) shows a page saying it no longer works."""
    link = await open_portal(page, server, api, unique_sub())
    other = await browser.new_context()
    try:
        second = await other.new_page()
        answer = await second.goto(link)
        assert answer is not None
        assert answer.status == 410
        await expect(
            second.get_by_role("heading", name="This link no longer works")
        ).to_be_visible()
    finally:
        await other.close()


async def test_an_expired_session_lands_on_the_expired_page(
    server: Server, api: AdminAPI, page: Page
) -> None:
    """When the session's lifetime has passed, the next page is the "expired" page."""
    sub = unique_sub()
    minted = await mint(api, sub)
    await page.goto(server.url + path_of(minted["url"]))
    await expect(page.get_by_role("heading", name="Your API keys")).to_be_visible()
    await expire_session(server.authority.pool, minted["id"])
    await page.get_by_role("link", name="Create a key").click()
    await expect(page).to_have_url(server.url + "/portal/expired")
    await expect(
        page.get_by_role("heading", name="Your portal link or session has expired")
    ).to_be_visible()


async def test_another_consumers_key_is_not_found(
    server: Server, api: AdminAPI, page: Page
) -> None:
    """Typing another consumer's key id into the address bar shows a 404 page."""
    theirs = await api.call("POST", "/api-keys", {"sub": unique_sub(), "scopes": ["read"]})
    await open_portal(page, server, api, unique_sub())
    answer = await page.goto(server.url + f"/portal/keys/{theirs.json()['id']}")
    assert answer is not None
    assert answer.status == 404
    await expect(page.get_by_role("heading", name="Not found")).to_be_visible()


async def test_a_form_without_its_csrf_token_is_refused(
    server: Server, api: AdminAPI, page: Page
) -> None:
    """A create form stripped of its CSRF token is refused with a page, and makes no key."""
    sub = unique_sub()
    await open_portal(page, server, api, sub)
    await page.get_by_role("link", name="Create a key").click()
    await page.get_by_role("main").locator("input[name=csrf]").evaluate("f => f.remove()")
    await page.get_by_role("button", name="Create key").click()
    await expect(page.get_by_role("heading", name="This form has expired")).to_be_visible()
    count = await server.authority.pool.fetchval(
        "SELECT count(*) FROM credentials WHERE sub = $1", sub
    )
    assert count == 0


async def test_works_without_javascript_on_a_phone(
    server: Server, api: AdminAPI, resource_server: Registered, browser: Any
) -> None:
    """With JavaScript off, on a phone-sized screen: create a key and read it (no copy button);
    the list fits the screen's width."""
    context = await browser.new_context(viewport=PHONE, java_script_enabled=False)
    try:
        page = await context.new_page()
        await open_portal(page, server, api, unique_sub())
        await page.get_by_role("link", name="Create your first key").click()
        await page.get_by_label("Name").fill("phone")
        await page.get_by_label("In 30 days").check()
        await page.get_by_role("button", name="Create key").click()
        key = await page.locator("#new-key").input_value()
        await expect(page.get_by_role("button", name="Copy")).to_be_hidden()
        assert await introspects_active(server, resource_server, key)
        await page.get_by_role("link", name="Back to your keys").click()
        await expect(page.get_by_text("phone", exact=True)).to_be_visible()
        box = await page.locator("table.keys").bounding_box()
        assert box is not None
        assert box["width"] <= PHONE["width"]
        exp = await server.authority.pool.fetchval(
            "SELECT exp FROM credentials WHERE prefix = $1", key[:11]
        )
        assert exp - store.now() in range(30 * 86400 - 60, 30 * 86400 + 1)
    finally:
        await context.close()
