"""The OpenAPI document: it describes exactly the served routes, and a bounded schemathesis
run against the running app finds no server error and no answer outside the document."""

from __future__ import annotations

import asyncio
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from introspect import admin, feed
from tests.helpers import Server, admin_api, register

DOCUMENT = orjson.loads(resources.files("introspect").joinpath("openapi.json").read_bytes())
METHODS = frozenset({"get", "put", "post", "delete", "patch", "options", "trace"})
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)
# Bounded: each operation gets a few examples, and the run stays well under a minute.
MAX_EXAMPLES = 15
RUN_TIMEOUT = 120


def served_routes(app: web.Application) -> set[tuple[str, str]]:
    """(METHOD, path) of every route the app answers, sub-applications included, HEAD aside,
    the developer portal's HTML pages aside (they are for people: see the README)."""
    found = set()
    for resource in app.router.resources():
        for route in resource:  # a mounted sub-application yields its own routes
            if route.method != "HEAD" and not route.resource.canonical.startswith("/portal"):
                found.add((route.method, route.resource.canonical))
    return found


def documented_routes() -> set[tuple[str, str]]:
    """(METHOD, path) of every operation in the document."""
    return {
        (method.upper(), path)
        for path, item in DOCUMENT["paths"].items()
        for method in item
        if method in METHODS
    }


def references(node: Any) -> list[str]:
    """Every `$ref` anywhere in a JSON value."""
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for value in node.values() for r in references(value)]
    if isinstance(node, list):
        return [r for value in node for r in references(value)]
    return []


def test_document_describes_exactly_the_served_routes(server: Server) -> None:
    """Every served route is documented and every documented operation is served."""
    assert DOCUMENT["openapi"].startswith("3.1.")
    assert documented_routes() == served_routes(server.app)


def test_every_reference_resolves() -> None:
    """Each `$ref` in the document points at a component that exists."""
    for ref in references(DOCUMENT):
        assert ref.startswith("#/"), ref
        node = DOCUMENT
        for part in ref[2:].split("/"):
            node = node[part]
        assert isinstance(node, dict), ref


def test_operation_ids_are_unique_and_admin_operations_need_the_admin_key() -> None:
    """Operation ids are unique; every /admin operation requires the bearer admin key."""
    operations = [
        (path, op)
        for path, item in DOCUMENT["paths"].items()
        for method, op in item.items()
        if method in METHODS
    ]
    ids = [op["operationId"] for _, op in operations]
    assert len(ids) == len(set(ids))
    for path, op in operations:
        assert (op.get("security") == [{"AdminKey": []}]) == path.startswith("/admin/")


def test_audit_actions_match_the_documented_filter() -> None:
    """The audit `action` filter documents exactly the actions the service records."""
    (action,) = [
        p for p in DOCUMENT["paths"]["/admin/audit"]["get"]["parameters"] if p["name"] == "action"
    ]
    assert set(action["schema"]["enum"]) == admin.ACTIONS


async def test_document_is_served(server: Server) -> None:
    """GET /openapi.json answers the document kept in the repository."""
    resp = await server.request("GET", "/openapi.json")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    assert resp.json() == DOCUMENT


async def test_schemathesis_finds_no_server_error_or_undocumented_answer(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Schemathesis, bounded in examples, finds no 5xx and no answer violating the document."""
    # Its polls of /events are long polls by default: answered at once here, events or not.
    monkeypatch.setattr(feed, "LONG_POLL", 0.0)
    rs = await register(server.authority, scopes=("read", "write"), can_introspect=True)
    api = await admin_api(server)
    key = await admin.create_api_key(
        server.authority, "test", {"sub": "schemathesis", "scopes": ["read"]}
    )
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        f"""
[auth.openapi.AdminKey]
bearer = "{api.key}"

[auth.openapi.ClientBasic]
username = "{rs.client_id}"
password = "{rs.secret}"

[[operations]]
include-operation-id = ["updateApiKey", "rotateApiKey"]
parameters = {{ key_id = "{key["id"]}" }}
"""
    )
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "schemathesis"),
        "--config-file",
        str(config),
        "run",
        f"{server.url}/openapi.json",
        "--checks",
        ",".join(CHECKS),
        "--max-examples",
        str(MAX_EXAMPLES),
        "--phases",
        "examples,coverage,fuzzing,stateful",
        # One worker: Python 3.11's ast.parse (which hypothesis calls) is not thread-safe.
        "--workers",
        "1",
        "--no-shrink",
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, output.decode()[-6000:]
