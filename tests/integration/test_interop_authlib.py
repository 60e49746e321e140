"""Interoperability: Authlib, a standard OAuth 2.0 client library, against the served endpoints.

Every call goes through Authlib's own client code (its client authentication
methods, its form encoding, its RFC 7523 assertions), never through a form
built by hand; endpoints come from the RFC 8414 metadata. The test server's
issuer is a name (`http://introspect.test`), so the endpoint URLs are
re-rooted onto the server's real address before they are called.
"""

from __future__ import annotations

import secrets
from typing import Any

import jwt
import pytest
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.jwk import ECKey

from introspect.service import Authority
from tests.helpers import Registered, Server, register


async def endpoints(server: Server) -> dict[str, str]:
    """The metadata's endpoint URLs, as advertised (`advertised`) and as reachable here."""
    meta = (await server.request("GET", "/.well-known/oauth-authorization-server")).json()
    issuer = meta["issuer"]
    names = ("token_endpoint", "introspection_endpoint", "revocation_endpoint")
    reachable = {name: server.url + meta[name].removeprefix(issuer) for name in names}
    return {**reachable, "advertised_token_endpoint": meta["token_endpoint"]}


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
async def test_token_introspection_and_revocation_through_authlib(
    server: Server, authority: Authority, method: str
) -> None:
    """Authlib fetches a token, a resource server introspects it, its owner revokes it."""
    urls = await endpoints(server)
    app = await register(authority, scopes=("read", "write"))
    rs = await register(authority, scopes=(), can_introspect=True)
    async with AsyncOAuth2Client(
        app.client_id, app.secret, token_endpoint_auth_method=method, scope="read"
    ) as owner:
        token = await owner.fetch_token(urls["token_endpoint"], grant_type="client_credentials")
        assert token["token_type"] == "Bearer"
        assert token["scope"] == "read"
        assert 0 < token["expires_in"] <= 3600
        async with AsyncOAuth2Client(
            rs.client_id,
            rs.secret,
            token_endpoint_auth_method=method,
            revocation_endpoint_auth_method=method,
        ) as resource_server:
            answer = await resource_server.introspect_token(
                urls["introspection_endpoint"], token=token["access_token"]
            )
            assert answer.status_code == 200
            claims = answer.json()
            assert claims["active"] is True
            assert claims["client_id"] == app.client_id
            assert claims["scope"] == "read"
            assert claims["token_type"] == "Bearer"
            revoked = await owner.revoke_token(
                urls["revocation_endpoint"], token=token["access_token"]
            )
            assert revoked.status_code == 200
            after = await resource_server.introspect_token(
                urls["introspection_endpoint"], token=token["access_token"]
            )
            assert after.json() == {"active": False}


async def test_wrong_secret_is_invalid_client_for_authlib(
    server: Server, app_client: Registered
) -> None:
    """A bad secret is a 401 invalid_client that Authlib surfaces as the RFC 6749 error."""
    urls = await endpoints(server)
    async with AsyncOAuth2Client(app_client.client_id, "isec_wrong") as client:
        with pytest.raises(Exception, match="invalid_client"):
            await client.fetch_token(urls["token_endpoint"], grant_type="client_credentials")


async def test_private_key_jwt_through_authlib(server: Server, authority: Authority) -> None:
    """Authlib's RFC 7523 client assertions (ES256) authenticate at /token and /introspect."""
    urls = await endpoints(server)
    private = ec.generate_private_key(ec.SECP256R1())
    kid = secrets.token_hex(4)
    public: dict[str, Any] = jwt.get_algorithm_by_name("ES256").to_jwk(  # type: ignore[assignment]
        private.public_key(), as_dict=True
    )
    app = await register(authority, jwks={"keys": [{**public, "kid": kid}]}, can_introspect=True)
    key = ECKey.import_key(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    # The assertion's audience is the advertised token endpoint (RFC 7523 §3).
    auth = PrivateKeyJWT(urls["advertised_token_endpoint"], alg="ES256", headers={"kid": kid})
    async with AsyncOAuth2Client(
        app.client_id, key, token_endpoint_auth_method=auth, revocation_endpoint_auth_method=auth
    ) as client:
        token = await client.fetch_token(urls["token_endpoint"], grant_type="client_credentials")
        answer = await client.introspect_token(
            urls["introspection_endpoint"], token=token["access_token"]
        )
        assert answer.json()["active"] is True
        assert answer.json()["client_id"] == app.client_id
