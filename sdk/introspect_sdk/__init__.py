"""introspect-sdk: protect a resource server's routes with introspect (RFC 7662 introspection,
cached while following the RFC 8936 revocation feed), and get access tokens for a service
client. The framework glue is in `introspect_sdk.aiohttp`, `.asgi` and `.fastapi`; the httpx
auth class in `introspect_sdk.httpx`."""

from introspect_sdk.access_keys import MalformedAccessKey
from introspect_sdk.answers import Introspection, Refusal
from introspect_sdk.client_auth import ClientAuth
from introspect_sdk.guard import Guard, Outcome, Unavailable
from introspect_sdk.metrics import Metrics
from introspect_sdk.tokens import TokenError, TokenProvider

__all__ = [
    "ClientAuth",
    "Guard",
    "Introspection",
    "MalformedAccessKey",
    "Metrics",
    "Outcome",
    "Refusal",
    "TokenError",
    "TokenProvider",
    "Unavailable",
]
