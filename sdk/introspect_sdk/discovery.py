"""RFC 8414: the authorization server's metadata, read once from
`{issuer}/.well-known/oauth-authorization-server` (§3), its `issuer` checked (§3.3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp

WELL_KNOWN = "/.well-known/oauth-authorization-server"


class DiscoveryError(Exception):
    """The metadata could not be read, or does not describe the issuer asked for."""


@dataclass(frozen=True, slots=True)
class Metadata:
    """The endpoints the SDK uses."""

    issuer: str
    token_endpoint: str
    introspection_endpoint: str
    revocation_endpoint: str | None
    jwks_uri: str
    # RFC 8936 names no metadata member for a poll endpoint: introspect's own member,
    # `introspect_events_endpoint`, or where introspect serves it.
    events_endpoint: str

    @classmethod
    def from_json(cls, issuer: str, document: Any) -> Metadata:
        """Check and read a metadata document fetched for `issuer`."""
        if not isinstance(document, dict):
            raise DiscoveryError("the metadata is not a JSON object")
        if document.get("issuer") != issuer:
            raise DiscoveryError("the metadata names another issuer (RFC 8414 §3.3)")
        try:
            urls = {
                name: str(document[name])
                for name in ("token_endpoint", "introspection_endpoint", "jwks_uri")
            }
        except KeyError as missing:
            raise DiscoveryError(f"the metadata has no {missing.args[0]}") from None
        revocation = document.get("revocation_endpoint")
        events = document.get("introspect_events_endpoint")
        return cls(
            issuer=issuer,
            revocation_endpoint=revocation if isinstance(revocation, str) else None,
            events_endpoint=events if isinstance(events, str) else f"{issuer}/events",
            **urls,
        )


async def discover(session: aiohttp.ClientSession, issuer: str, wait: float) -> Metadata:
    """The metadata of `issuer` (no trailing slash); `DiscoveryError` when it cannot be had."""
    try:
        async with session.get(
            issuer + WELL_KNOWN, timeout=aiohttp.ClientTimeout(total=wait)
        ) as resp:
            if resp.status != 200:
                raise DiscoveryError(f"the metadata answered {resp.status}")
            document = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise DiscoveryError(f"the metadata could not be read: {type(exc).__name__}") from None
    return Metadata.from_json(issuer, document)
