"""A headless Chromium for the browser journeys: Debian's /usr/bin/chromium driven by Playwright.

`make test` installs chromium where it can (root with apt-get); where it is
missing, every browser test is skipped with the reason on one line.
`INTROSPECT_CHROMIUM` names another Chromium binary.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import AsyncIterator
from typing import Any

import pytest

CHROMIUM = os.environ.get("INTROSPECT_CHROMIUM", "/usr/bin/chromium")
# Headless as root, and quiet: this machine's network is closed, so no background traffic.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def missing() -> str | None:
    """Why the browser tests cannot run here (one line), or None when they can."""
    if shutil.which(CHROMIUM) is None:
        return f"browser tests: no Chromium at {CHROMIUM} (make test installs it as root)"
    if importlib.util.find_spec("playwright") is None:
        return "browser tests: the playwright package is not installed (make test installs it)"
    return None


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    """One Chromium for the session's browser tests."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield launched
        finally:
            await launched.close()
