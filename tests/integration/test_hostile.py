"""Hostile input: every malformed request gets a clear 4xx or {"active": false}, and
changes nothing."""

from __future__ import annotations

import base64

import pytest

from introspect.service import Authority
from tests.helpers import Answer, Registered, Server

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
TABLES = ("clients", "client_secrets", "credentials", "audit_log")


async def row_counts(authority: Authority) -> dict[str, int]:
    """Rows per table; the outbox as the largest id ever used, since published rows are
    deleted in the background (by earlier tests' changes too) but a new one takes a new id."""
    counts = {t: await authority.pool.fetchval(f"SELECT count(*) FROM {t}") for t in TABLES}
    counts["invalidation_outbox ids"] = await authority.pool.fetchval(
        "SELECT last_value FROM pg_sequences WHERE sequencename LIKE 'invalidation_outbox%'"
    )
    return counts


BODIES: list[tuple[str, bytes, dict[str, str]]] = [
    ("empty body", b"", FORM),
    ("wrong content type", b"token=x", {"Content-Type": "text/plain"}),
    ("json instead of a form", b'{"token": "x"}', {"Content-Type": "application/json"}),
    ("no content type", b"token=x", {}),
    ("10,000-character token", b"token=" + b"a" * 10_000, FORM),
    ("NUL byte", b"token=ab%00cd", FORM),
    ("invalid UTF-8", b"token=%ff%fe%fd", FORM),
    ("raw non-ASCII bytes", b"token=\xff\xfe", FORM),
    ("duplicated parameter", b"token=a&token=b", FORM),
    ("SQL-looking token", b"token=%27%3B+DROP+TABLE+credentials%3B--", FORM),
    ("SQL-looking hint", b"token=x&token_type_hint=%27+OR+1%3D1--", FORM),
    ("only separators", b"&&&===&", FORM),
    ("percent garbage", b"token=%zz%", FORM),
    ("undecodable gzip", b"not gzip at all", {**FORM, "Content-Encoding": "gzip"}),
    ("undecodable deflate", b"not deflate", {**FORM, "Content-Encoding": "deflate"}),
]


@pytest.mark.parametrize("path", ["/introspect", "/token", "/revoke"])
@pytest.mark.parametrize(("what", "body", "headers"), BODIES, ids=[b[0] for b in BODIES])
async def test_malformed_bodies_are_refused_cleanly(
    server: Server,
    resource_server: Registered,
    path: str,
    what: str,
    body: bytes,
    headers: dict[str, str],
) -> None:
    """A malformed body is a 4xx (or inactive) and writes nothing."""
    before = await row_counts(server.authority)
    resp = await server.post_form(path, body, headers={**headers, **resource_server.auth})
    assert 200 <= resp.status < 500, (what, resp.status, resp.body)
    if resp.status == 200 and path == "/introspect":
        assert resp.json() == {"active": False}
    elif resp.status >= 400:
        assert resp.json()["error"] in (
            "invalid_request",
            "invalid_client",
            "unsupported_grant_type",
        )
    assert b"Traceback" not in resp.body
    assert await row_counts(server.authority) == before


async def test_oversized_body_is_413(server: Server, resource_server: Registered) -> None:
    """A body over 64 KiB is refused with 413 and a JSON error."""
    resp = await server.post_form(
        "/introspect", b"token=" + b"a" * 70_000, headers={**FORM, **resource_server.auth}
    )
    assert resp.status == 413
    assert resp.json()["error"] == "invalid_request"


@pytest.mark.parametrize(("size", "status"), [(64 * 1024 - 1, 200), (64 * 1024, 413)])
async def test_body_size_limit_is_exact(
    server: Server, resource_server: Registered, size: int, status: int
) -> None:
    """A body one byte under the 64 KiB limit is read; one at the limit is refused."""
    body = b"token=" + b"a" * (size - len(b"token="))
    resp = await server.post_form("/introspect", body, headers={**FORM, **resource_server.auth})
    assert resp.status == status


async def test_oversized_header_is_refused(server: Server) -> None:
    """A header line over 8 KiB is refused with 431 or 400, never 500."""
    resp = await server.post_form("/introspect", b"token=x", headers={**FORM, "X-Big": "a" * 9000})
    assert resp.status in (400, 431)


@pytest.mark.parametrize(
    "authorization",
    [
        "Basic !!!not-base64",
        "Basic " + base64.b64encode(b"no-colon-here").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:\xfd").decode(),
        "Basic " + base64.b64encode(b"client%00:secret").decode(),
        "Bearer something",
        "Basic",
        "Basic " + base64.b64encode(b"' OR 1=1 --:x").decode(),
    ],
)
async def test_malformed_basic_auth_is_401(server: Server, authorization: str) -> None:
    """Malformed Basic credentials are 401 invalid_client with WWW-Authenticate."""
    resp = await server.post_form(
        "/introspect", {"token": "x"}, headers={"Authorization": authorization}
    )
    assert resp.status == 401
    assert resp.json()["error"] == "invalid_client"
    assert "WWW-Authenticate" in resp.headers


async def test_unknown_route_and_method_are_json_4xx(server: Server) -> None:
    """An unknown path is 404 and a wrong method 405, both JSON."""
    assert (await server.request("GET", "/nope")).status == 404
    resp = await server.request("GET", "/introspect")
    assert resp.status == 405
    assert resp.json()["error"] == "invalid_request"


def _is_json_error(resp: Answer) -> bool:
    return resp.headers.get("Content-Type", "").startswith("application/json")


async def test_errors_are_json_with_no_store(server: Server) -> None:
    """OAuth error answers are JSON and not cacheable."""
    resp = await server.post_form("/token", {"grant_type": "client_credentials"})
    assert resp.status == 401
    assert _is_json_error(resp)
    assert resp.headers["Cache-Control"] == "no-store"
