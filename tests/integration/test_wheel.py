"""The built wheel, installed (not editable) into a fresh venv, migrates and serves on its own.

The venv holds only the wheel; its dependencies come from the test's own environment through a
path file, so nothing is downloaded. Every command runs outside the source tree with no
PYTHONPATH, so the package imported is the one the wheel installed.
"""

from __future__ import annotations

import os
import secrets
import shutil
import site
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import orjson
import pytest

from introspect.config import Settings
from introspect.store.migrate import migration_files
from tests.helpers import cli_env, free_port

ROOT = Path(__file__).resolve().parents[2]
# What the Dockerfile copies into its build: the wheel must build from these alone.
SOURCES = ("pyproject.toml", "README.md", "introspect")
# Offline, and deaf to the machine's pip configuration (extra indexes to scan).
PIP = ("--isolated", "--disable-pip-version-check", "--quiet")


@dataclass(frozen=True)
class Installed:
    """A venv with the wheel installed, and the wheel itself."""

    wheel: Path
    venv: Path
    site_packages: Path

    @property
    def introspect(self) -> Path:
        """The console script the wheel installed."""
        return self.venv / "bin" / "introspect"


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a command to completion (bounded); fail with its output if it fails; return stdout."""
    done = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def isolated(env: dict[str, str]) -> dict[str, str]:
    """`env` without anything that would put the source tree on the import path."""
    return {k: v for k, v in env.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """Build the wheel from a copy of the sources, and install it alone into a fresh venv."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, src / name)
    # The build backend is the one the lock installed here: no download, nothing unpinned.
    dist = work / "dist"
    run(
        *(sys.executable, "-m", "pip", *PIP, "wheel", "--no-index", "--no-deps"),
        *("--no-build-isolation", "-w", str(dist), str(src)),
        cwd=work,
        env=isolated(dict(os.environ)),
    )
    (wheel,) = dist.glob("introspect-*.whl")

    venv = work / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", str(venv), cwd=work)
    python = venv / "bin" / "python"
    purelib = run(
        str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=work
    )
    site_packages = Path(purelib.strip())
    run(
        *(sys.executable, "-m", "pip", *PIP, "--python", str(python), "install"),
        *("--no-index", "--no-deps", str(wheel)),
        cwd=work,
        env=isolated(dict(os.environ)),
    )
    # The dependencies: this environment's site-packages, after the venv's own. A directory
    # named in a .pth file has its own .pth files ignored, so an editable install of the
    # source tree there stays inert.
    ours = [*site.getsitepackages(), sysconfig.get_path("purelib")]
    (site_packages / "_test_dependencies.pth").write_text(
        "".join(f"{p}\n" for p in dict.fromkeys(ours))
    )
    return Installed(wheel, venv, site_packages)


@pytest.fixture
async def fresh_database(settings: Settings) -> AsyncIterator[str]:
    """The URL of a new, empty database on the session's Postgres, dropped afterwards."""
    assert settings.database_url
    name = f"wheel_{secrets.token_hex(6)}"
    await admin_sql(settings.database_url, f'CREATE DATABASE "{name}"')
    try:
        yield urlsplit(settings.database_url)._replace(path=f"/{name}").geturl()
    finally:
        await admin_sql(settings.database_url, f'DROP DATABASE "{name}" WITH (FORCE)')


async def admin_sql(database_url: str, statement: str) -> None:
    """Run one statement on its own connection."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture
def env(settings: Settings, fresh_database: str, tmp_path: Path) -> dict[str, str]:
    """The installed CLI's environment: a database of its own, the session's Redis."""
    return isolated({**cli_env(settings, tmp_path), "INTROSPECT_DATABASE_URL": fresh_database})


def test_wheel_carries_the_migrations_and_the_openapi_document(installed: Installed) -> None:
    """The wheel holds every migration, openapi.json, py.typed and the portal's templates and
    static files; no test or bench code."""
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    expected = {f"introspect/sql/{p.name}" for p in migration_files()}
    portal = ROOT / "introspect" / "portal"
    expected |= {
        f"introspect/portal/{p.relative_to(portal)}"
        for folder in ("templates", "static")
        for p in (portal / folder).iterdir()
    }
    assert expected <= names
    assert {"introspect/openapi.json", "introspect/py.typed"} <= names
    assert not [n for n in names if n.startswith(("tests/", "bench/"))]


def test_installed_package_is_the_wheel_not_the_source(
    installed: Installed, tmp_path: Path
) -> None:
    """Outside the source tree, `introspect` imports from the venv's site-packages."""
    found = run(
        str(installed.venv / "bin" / "python"),
        "-c",
        "import introspect; print(introspect.__file__)",
        cwd=tmp_path,
        env=isolated(dict(os.environ)),
    )
    module = Path(found.strip()).resolve()
    assert module.is_relative_to(installed.site_packages.resolve())
    assert not module.is_relative_to(ROOT)


def test_installed_cli_migrates_an_empty_database(
    installed: Installed, env: dict[str, str], tmp_path: Path
) -> None:
    """`introspect migrate` from the wheel applies every migration the source tree holds."""
    out = run(str(installed.introspect), "migrate", cwd=tmp_path, env=env)
    assert out.strip() == "applied: " + ", ".join(p.name for p in migration_files())
    again = run(str(installed.introspect), "migrate", cwd=tmp_path, env=env)
    assert again.strip() == "up to date"


@pytest.fixture
def served(installed: Installed, env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """`introspect serve` from the wheel on a free port, until ready; yield its base URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(installed.introspect), "serve", "--workers", "1"],
            cwd=tmp_path,
            env={**env, "INTROSPECT_PORT": str(port)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while get(base, "/readyz")[0] != 200:
            assert proc.poll() is None, f"the server exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"not ready in time:\n{log.read_text()}"
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def get(base: str, path: str) -> tuple[int, bytes]:
    """GET base+path: (status, body), or (0, b"") while nothing answers."""
    try:
        with urllib.request.urlopen(base + path, timeout=5) as resp:  # noqa: S310 (loopback)
            return resp.status, resp.read()
    except urllib.error.HTTPError as answer:
        return answer.code, answer.read()
    except OSError:
        return 0, b""


def test_installed_server_answers(served: str) -> None:
    """The wheel's server answers /healthz, discovery, its OpenAPI document and the portal's
    pages and static files."""
    health, discovery, openapi = (
        get(served, path)
        for path in ("/healthz", "/.well-known/oauth-authorization-server", "/openapi.json")
    )
    assert health[0] == 200
    assert discovery[0] == 200
    assert orjson.loads(discovery[1])["introspection_endpoint"].endswith("/introspect")
    assert openapi[0] == 200
    shipped = orjson.loads((ROOT / "introspect" / "openapi.json").read_bytes())
    assert orjson.loads(openapi[1])["paths"].keys() == shipped["paths"].keys()
    expired, stylesheet = (get(served, p) for p in ("/portal/expired", "/portal/static/portal.css"))
    assert expired[0] == 401  # the page where a request without a session lands
    assert b"Your portal link or session has expired" in expired[1]
    assert stylesheet[0] == 200
