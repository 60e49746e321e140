"""The README's walkthrough, run exactly as written against a real `introspect serve`."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from introspect.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def readme_block(heading: str) -> str:
    """The first ```sh block after `heading` in the README."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(heading) :]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, f"no sh block under {heading}"
    return match.group(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """`introspect serve` on a free port, over the session's stores; yields the CLI's env."""
    port = free_port()
    assert settings.database_url
    assert settings.redis_url
    env = {
        **os.environ,
        "INTROSPECT_DATABASE_URL": settings.database_url,
        "INTROSPECT_REDIS_URL": settings.redis_url,
        "INTROSPECT_SECRET": settings.secrets[0].decode(),
        "INTROSPECT_DATA_DIR": str(tmp_path_factory.mktemp("readme")),
        "INTROSPECT_PORT": str(port),
        "BASE": f"http://127.0.0.1:{port}",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "introspect.cli", "serve", "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{env['BASE']}/readyz", timeout=1) as r:  # noqa: S310 (our own loopback URL)
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.1)
        yield env
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_walkthrough_runs_verbatim(served: dict[str, str]) -> None:
    """The walkthrough issues a token, sees it active, revokes it and sees it inactive."""
    script = readme_block("## Walkthrough")
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        env=served,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert lines[0]["active"] is True
    assert lines[0]["scope"] == "read"
    assert lines[-1] == {"active": False}
