"""RFC 8414: OAuth 2.0 authorization server metadata (§2), served at
`/.well-known/oauth-authorization-server` (§3)."""

from __future__ import annotations

from typing import Any

AUTH_METHODS = ["client_secret_basic", "client_secret_post"]


def metadata(issuer: str, scopes: list[str]) -> dict[str, Any]:
    """The metadata document for `issuer`; `scopes` are every scope a client may request."""
    return {
        "issuer": issuer,
        "token_endpoint": f"{issuer}/token",
        "introspection_endpoint": f"{issuer}/introspect",
        "revocation_endpoint": f"{issuer}/revoke",
        "jwks_uri": f"{issuer}/jwks.json",
        "grant_types_supported": ["client_credentials"],
        # Required by RFC 8414 §2; there is no authorization endpoint here.
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "introspection_endpoint_auth_methods_supported": AUTH_METHODS,
        "revocation_endpoint_auth_methods_supported": AUTH_METHODS,
        "scopes_supported": scopes,
    }
