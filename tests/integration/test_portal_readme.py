"""The README's developer portal block, run exactly as written against a real `introspect serve`:
its link opens the portal."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from tests.integration import test_readme

# The same fixture as the walkthrough's: `introspect serve` over the session's stores.
served = test_readme.served


def status_of(url: str) -> int:
    """The status of a GET, redirects not followed (none is expected)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 (loopback)
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_portal_block_runs_verbatim(served: dict[str, str]) -> None:
    """The curl and the CLI each print a link that opens the portal once."""
    lines = test_readme.run_block("## Developer portal", served).splitlines()
    minted = json.loads(lines[0])
    cli_link = lines[1]
    for url in (minted["url"], cli_link):
        assert url.startswith(served["BASE"] + "/portal/enter/")
        assert status_of(url) == 200
        assert status_of(url) == 410
