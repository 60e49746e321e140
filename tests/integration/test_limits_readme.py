"""The README's rate limits block, run exactly as written against a real `introspect serve`."""

from __future__ import annotations

import json

from tests.integration import test_readme
from tests.integration.test_limits import parse_fields

# The same fixture as the walkthrough's: `introspect serve` over the session's stores.
served = test_readme.served


def test_limits_block_runs_verbatim(served: dict[str, str]) -> None:
    """Two active answers and a refusal with Retry-After, each with well-formed RateLimit
    fields; more credits by the CLI make the key active again."""
    # The checkout's own package, whichever checkout the shared venv's console script names.
    env = {**served, "PYTHONPATH": str(test_readme.ROOT)}
    lines = test_readme.run_block("## Rate limits and credits", env).splitlines()
    answers = [line for line in lines if line.startswith('"active"')]
    assert answers == ['"active":true', '"active":true', '"active":false', '"active":true']
    fields = [line.split(": ", 1) for line in lines if line.lower().startswith("ratelimit")]
    assert len(fields) == 6
    for name, value in fields:
        assert set(parse_fields(value)) == {"key.hour", "key-credits"}, (name, value)
    retry = [line for line in lines if line.lower().startswith("retry-after")]
    assert len(retry) == 1
    assert 0 < int(retry[0].split(": ")[1]) <= 86400
    updated = json.loads(next(line for line in lines if line.startswith("{")))
    assert updated["credits"]["remaining"] == 1000
