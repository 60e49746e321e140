"""RFC 8414: OAuth 2.0 authorization server metadata (§2), served at
`/.well-known/oauth-authorization-server` (§3), with RFC 7523
`private_key_jwt` and RFC 9701 signed introspection answers advertised.

One member is not in the IANA registry: `introspect_events_endpoint`, the
revocation feed (RFC 8936 poll delivery, introspect/feed.py), for which
RFC 8414 defines no member; its name says whose it is."""

from __future__ import annotations

from typing import Any

from introspect import rfc7523, signing

AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]
AUTH_SIGNING_ALGS = list(rfc7523.ALGORITHMS)


def endpoints(issuer: str) -> dict[str, str]:
    """The URLs of the endpoints that authenticate clients, by metadata name."""
    return {
        "token_endpoint": f"{issuer}/token",
        "introspection_endpoint": f"{issuer}/introspect",
        "revocation_endpoint": f"{issuer}/revoke",
        # Not standard (see the module docstring).
        "introspect_events_endpoint": f"{issuer}/events",
    }


def metadata(issuer: str, scopes: list[str]) -> dict[str, Any]:
    """The metadata document for `issuer`; `scopes` are every scope a client may request."""
    return {
        "issuer": issuer,
        **endpoints(issuer),
        "jwks_uri": f"{issuer}/jwks.json",
        "grant_types_supported": ["client_credentials"],
        # Required by RFC 8414 §2; there is no authorization endpoint here.
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "introspection_endpoint_auth_methods_supported": AUTH_METHODS,
        "revocation_endpoint_auth_methods_supported": AUTH_METHODS,
        "token_endpoint_auth_signing_alg_values_supported": AUTH_SIGNING_ALGS,
        "introspection_endpoint_auth_signing_alg_values_supported": AUTH_SIGNING_ALGS,
        "revocation_endpoint_auth_signing_alg_values_supported": AUTH_SIGNING_ALGS,
        "introspection_signing_alg_values_supported": list(signing.ALGORITHMS),
        "scopes_supported": scopes,
    }
