"""Hostile input to the admin API: each bad field, body or parameter is a clean 4xx."""

from __future__ import annotations

from typing import Any

import pytest

from tests.admin_helpers import created_key, error_of, unique
from tests.helpers import AdminAPI


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"name": "x", "bogus": 1}, "bogus"),
        ({"name": ""}, "name"),
        ({"name": "a\x00b"}, "name"),
        ({"name": "x" * 257}, "name"),
        ({"name": 5}, "name"),
        ({"name": "x", "scopes": ["a"] * 101}, "scopes"),
        ({"name": "x", "scopes": [1]}, "scopes"),
        ({"name": "x", "audiences": [""]}, "audiences"),
        ({"name": "x", "can_introspect": "yes"}, "can_introspect"),
        ({"name": "x", "token_ttl": 0}, "token_ttl"),
        ({"name": "x", "token_ttl": True}, "token_ttl"),
        ({"name": "x", "token_ttl": 2**40}, "token_ttl"),
        ({"name": "x", "token_ttl": 1.5}, "token_ttl"),
        ({"name": "x", "token_format": "paseto"}, "token_format"),
        ({"name": "x", "jwks": {"keys": [{}]}}, "jwks"),
        ({"name": "x", "jwks": [1]}, "jwks"),
        ({"name": "x", "jwks": {"keys": [{"kty": "EC", "crv": "P-256", "d": "secret"}]}}, "jwks"),
        ({"scopes": []}, "name"),
    ],
)
async def test_bad_client_fields_are_400_naming_the_field(
    api: AdminAPI, body: dict[str, Any], named: str
) -> None:
    """Each malformed field of a client registration is a 400 whose description names it."""
    resp = await api.call("POST", "/clients", body)
    assert named in error_of(resp, 400)


@pytest.mark.parametrize(
    ("raw", "content_type", "status"),
    [
        (b"{", "application/json", 400),
        (b"[1, 2]", "application/json", 400),
        (b'"text"', "application/json", 400),
        (b"\xff\xfe", "application/json", 400),
        (b'{"name": "\\ud800"}', "application/json", 400),
        (b'{"name": "x"}', "text/plain", 415),
        (b"name=x", "application/x-www-form-urlencoded", 415),
        (b'{"name": "' + b"x" * 70_000 + b'"}', "application/json", 413),
    ],
)
async def test_malformed_bodies_are_4xx(
    api: AdminAPI, raw: bytes, content_type: str, status: int
) -> None:
    """Bodies that are not one JSON object, or too big, get a clean 4xx JSON answer."""
    for method, path in (("POST", "/clients"), ("POST", "/revocations"), ("POST", "/api-keys")):
        resp = await api.call(method, path, headers={"Content-Type": content_type}, data=raw)
        assert resp.status == status, (path, resp.body)
        assert resp.json()["error"]


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=501",
        "limit=abc",
        "limit=-1",
        "limit=" + "1" * 5000,
        "limit=%EF%BC%91",  # a full-width digit one
        "cursor=%%%",
        "cursor=WzFd",  # [1]: the wrong shape for this list
        "cursor=",
        "limit=1&limit=2",
        "bogus=1",
        "kind=refresh_token",
        "active=yes",
        "sub=%00",
        "client_id=" + "x" * 300,
    ],
)
async def test_bad_list_parameters_are_400(api: AdminAPI, query: str) -> None:
    """A malformed limit, cursor, filter or an unknown parameter is 400."""
    resp = await api.call("GET", f"/tokens?{query}")
    assert error_of(resp, 400)


async def test_audit_filters_are_checked(api: AdminAPI) -> None:
    """An unknown audit action is 400; a huge cursor id is 400, not an overflow."""
    assert (await api.call("GET", "/audit?action=client.explode")).status == 400
    assert (await api.call("GET", "/audit?cursor=Wzk5OTk5OTk5OTk5OTk5OTk5OTk5XQ")).status == 400


async def test_bad_changes_to_a_key_are_400(api: AdminAPI) -> None:
    """PATCH of a key with no field, both expiry forms, a past expiry or bad types is 400."""
    issued = await created_key(api, sub=unique(), scopes=[])
    for body in (
        {},
        {"expires_in": 5, "expires_at": None},
        {"expires_at": 1},
        {"expires_in": 0},
        {"metadata": [1]},
        {"metadata": {"a": "\x00"}},
        {"metadata": {"a\x00": 1}},
        {"sub": "someone-else"},
    ):
        resp = await api.call("PATCH", f"/api-keys/{issued['id']}", body)
        assert error_of(resp, 400)
    for grace in (-1, "5", 10**9, 1.0):
        resp = await api.call("POST", f"/api-keys/{issued['id']}/rotate", {"grace_period": grace})
        assert error_of(resp, 400).startswith("grace_period:")


@pytest.mark.parametrize("depth", [33, 300, 1000, 1030])
async def test_deeply_nested_json_is_400(api: AdminAPI, depth: int) -> None:
    """Metadata or a JWK Set nested too deep is a 400, never a 500, whatever the depth."""
    nested = b"[" * depth + b"]" * depth
    for path, raw in (
        ("/api-keys", b'{"sub": "deep", "scopes": [], "metadata": {"a": %s}}' % nested),
        ("/clients", b'{"name": "deep", "jwks": {"keys": [], "x": %s}}' % nested),
    ):
        resp = await api.call("POST", path, headers={"Content-Type": "application/json"}, data=raw)
        assert resp.status == 400, (depth, path, resp.body)
