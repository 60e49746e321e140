"""The README's walkthrough, run exactly as written against a real `introspect serve`."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from introspect.config import Settings
from tests.helpers import serve_subprocess

ROOT = Path(__file__).resolve().parents[2]


def readme_block(heading: str) -> str:
    """The first ```sh block after `heading` in the README."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(heading) :]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, f"no sh block under {heading}"
    return match.group(1)


def run_block(heading: str, env: dict[str, str]) -> str:
    """Run the README's block under `heading` as written (bash, -euo pipefail): its stdout."""
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", readme_block(heading)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def served(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """`introspect serve` over the session's stores; yields the CLI's environment."""
    with serve_subprocess(settings, tmp_path_factory.mktemp("readme"), workers=2) as env:
        yield env


def test_walkthrough_runs_verbatim(served: dict[str, str]) -> None:
    """The walkthrough issues a token, sees it active, revokes it and sees it inactive."""
    output = run_block("## Walkthrough", served)
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    assert lines[0]["active"] is True
    assert lines[0]["scope"] == "read"
    assert lines[-1] == {"active": False}
