"""RFC 8414 metadata, and the same document where OpenID Connect discovery looks."""

from __future__ import annotations

from introspect.service import Authority
from tests.helpers import Server, register

ISSUER = "http://introspect.test"


async def test_metadata_names_every_endpoint_under_the_issuer(
    server: Server, authority: Authority
) -> None:
    """The §2 fields: issuer, endpoints, grant, auth methods and algorithms, scopes in use."""
    await register(authority, scopes=("orders:read",))
    resp = await server.request("GET", "/.well-known/oauth-authorization-server")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    meta = resp.json()
    assert meta["issuer"] == ISSUER
    assert meta["token_endpoint"] == f"{ISSUER}/token"
    assert meta["introspection_endpoint"] == f"{ISSUER}/introspect"
    assert meta["revocation_endpoint"] == f"{ISSUER}/revoke"
    assert meta["jwks_uri"] == f"{ISSUER}/jwks.json"
    assert meta["grant_types_supported"] == ["client_credentials"]
    assert meta["response_types_supported"] == []
    for endpoint in ("token", "introspection", "revocation"):
        methods = meta[f"{endpoint}_endpoint_auth_methods_supported"]
        assert {"client_secret_basic", "client_secret_post", "private_key_jwt"} <= set(methods)
        assert "ES256" in meta[f"{endpoint}_endpoint_auth_signing_alg_values_supported"]
    assert "orders:read" in meta["scopes_supported"]


async def test_openid_configuration_serves_the_same_document(server: Server) -> None:
    """Clients that only try /.well-known/openid-configuration find the RFC 8414 document."""
    rfc8414 = await server.request("GET", "/.well-known/oauth-authorization-server")
    oidc = await server.request("GET", "/.well-known/openid-configuration")
    assert oidc.status == 200
    assert oidc.json() == rfc8414.json()
