"""RFC 9701 signed introspection answers, and the RFC 8414 metadata that advertises JWT support."""

from __future__ import annotations

from typing import Any

import pytest

from introspect import rfc9701
from introspect.service import Authority
from tests.helpers import Registered, Server
from tests.integration.test_jwt import issue, jwt_client, verify_served

ACCEPT_JWT = {"Accept": rfc9701.MEDIA_TYPE}


async def signed_answer(server: Server, rs: Registered, token: str) -> dict[str, Any]:
    """Introspect `token` asking for a JWT; the verified header and claims."""
    resp = await server.post_form(
        "/introspect", {"token": token}, headers={**rs.auth, **ACCEPT_JWT}
    )
    assert resp.status == 200, resp.body
    assert resp.headers["Content-Type"] == rfc9701.MEDIA_TYPE
    return await verify_served(
        server, resp.body.decode(), audience=rs.client_id, issuer="http://introspect.test"
    )


async def test_signed_answer_carries_the_plain_answer(
    server: Server, app_client: Registered, resource_server: Registered
) -> None:
    """The signed answer verifies with the JWK Set and holds exactly the plain JSON answer."""
    token = await issue(server, app_client)
    plain = await server.post_form("/introspect", {"token": token}, headers=resource_server.auth)
    decoded = await signed_answer(server, resource_server, token)
    header, claims = decoded["header"], decoded["payload"]
    assert header["typ"] == "token-introspection+jwt"
    assert claims["token_introspection"] == plain.json()
    assert claims["token_introspection"]["active"] is True
    assert claims["aud"] == resource_server.client_id
    assert isinstance(claims["iat"], int)
    assert "sub" not in claims
    assert "exp" not in claims


async def test_signed_answer_for_a_jwt(
    server: Server, authority: Authority, resource_server: Registered
) -> None:
    """A JWT access token introspects through a signed answer as well."""
    token = await issue(server, await jwt_client(authority))
    claims = (await signed_answer(server, resource_server, token))["payload"]
    assert claims["token_introspection"]["active"] is True


async def test_signed_inactive_answer_is_exactly_active_false(
    server: Server, resource_server: Registered
) -> None:
    """An inactive credential's signed answer holds exactly {"active": false}."""
    claims = (await signed_answer(server, resource_server, "nonsense"))["payload"]
    assert claims["token_introspection"] == {"active": False}


@pytest.mark.parametrize(
    "accept",
    [
        None,
        "application/json",
        f"application/json, {rfc9701.MEDIA_TYPE};q=0.5",
        f"{rfc9701.MEDIA_TYPE};q=0",
    ],
)
async def test_plain_json_unless_the_jwt_is_preferred(
    server: Server, resource_server: Registered, accept: str | None
) -> None:
    """Without a preference for the JWT media type, the answer stays plain JSON."""
    headers = {**resource_server.auth, **({"Accept": accept} if accept else {})}
    resp = await server.post_form("/introspect", {"token": "nonsense"}, headers=headers)
    assert resp.headers["Content-Type"].startswith("application/json")
    assert resp.json() == {"active": False}


async def test_errors_stay_json_when_a_jwt_is_asked_for(server: Server) -> None:
    """An unauthenticated caller asking for a JWT gets the plain 401 JSON error."""
    resp = await server.post_form("/introspect", {"token": "x"}, headers=ACCEPT_JWT)
    assert resp.status == 401
    assert resp.json()["error"] == "invalid_client"


async def test_metadata_advertises_jwt_support(server: Server) -> None:
    """RFC 8414 metadata lists private_key_jwt, its algorithms and the signing algorithms."""
    meta = (await server.request("GET", "/.well-known/oauth-authorization-server")).json()
    for endpoint in ("token", "introspection", "revocation"):
        assert "private_key_jwt" in meta[f"{endpoint}_endpoint_auth_methods_supported"]
        algs = meta[f"{endpoint}_endpoint_auth_signing_alg_values_supported"]
        assert set(algs) == {"ES256", "EdDSA", "RS256", "PS256"}
    assert set(meta["introspection_signing_alg_values_supported"]) == {"ES256", "EdDSA"}
    assert meta["jwks_uri"] == "http://introspect.test/jwks.json"
