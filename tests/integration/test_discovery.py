"""RFC 8414 metadata, and the same document where OpenID Connect discovery looks."""

from __future__ import annotations

import asyncio
import secrets

from introspect import discovery, service
from introspect.metrics import METRICS
from introspect.service import Authority
from tests.helpers import Server, eventually, register
from tests.integration.test_cheap_refusals import insert_unannounced

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
    # Not standard: the revocation feed (RFC 8414 has no member for it).
    assert meta["introspect_events_endpoint"] == f"{ISSUER}/events"
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


async def scopes_supported(server: Server) -> list[str]:
    """The `scopes_supported` of the discovery document as served now."""
    resp = await server.request("GET", "/.well-known/oauth-authorization-server")
    assert resp.status == 200
    return list(resp.json()["scopes_supported"])


async def test_discovery_is_built_once_per_change_or_few_seconds(
    server: Server, authority: Authority
) -> None:
    """The document is reused, not aggregated over every client per GET: a client written
    behind the server's back shows after a few seconds at most, one registered through the
    server (which announces the change) at once, and twenty concurrent GETs cost one query,
    or two when some ask while the first is under way (they wait for a fresher one)."""
    await register(authority, scopes=("fresh:" + secrets.token_hex(4),))
    await scopes_supported(server)
    hidden = "hidden:" + secrets.token_hex(4)
    await insert_unannounced(authority, service.new_id("client"), [hidden], "unused")
    assert hidden not in await scopes_supported(server)

    async def shown() -> bool:
        return hidden in await scopes_supported(server)

    await eventually(shown, within=discovery.METADATA_TTL + 3)
    announced = "announced:" + secrets.token_hex(4)
    await register(authority, scopes=(announced,))
    queries = METRICS.pg_queries.value()
    answers = await asyncio.gather(*(scopes_supported(server) for _ in range(20)))
    assert all(announced in scopes for scopes in answers)
    assert 1 <= METRICS.pg_queries.value() - queries <= 2
