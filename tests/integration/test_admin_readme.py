"""The README's admin walkthrough, run exactly as written against a real `introspect serve`."""

from __future__ import annotations

import json

from tests.integration import test_readme

# The same fixture as the walkthrough's: `introspect serve` over the session's stores.
served = test_readme.served


def test_admin_walkthrough_runs_verbatim(served: dict[str, str]) -> None:
    """The admin block registers, issues, changes, rotates, revokes and reads the audit log."""
    lines = test_readme.run_block("## Admin", served).splitlines()
    patched, revoked, audit = (json.loads(line) for line in lines[:3])
    assert patched["exp"] - patched["iat"] >= 86_400
    assert patched["metadata"] == {"plan": "pro"}
    assert revoked["revoked"] == 1
    assert revoked["listeners"] == 2  # both workers acknowledged
    actions = [entry["action"] for entry in audit["items"]]
    assert actions == ["credential.revoke", "api_key.update", "api_key.create"]
    header, row = lines[3:5]
    assert header.split()[:2] == ["id", "kind"]
    assert row.startswith(patched["id"])
    assert row.split()[-1] == "no"  # active: revoked with user-7's credentials
