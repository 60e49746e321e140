"""RFC 6749: client authentication (§2.3) and the client credentials grant (§4.4).

Pure protocol logic: the functions take parsed input and a way to fetch a
client, and return values or raise the RFC's errors; nothing here knows
aiohttp. Scope and audience rules follow SPEC: an omitted `scope` means all
of the client's scopes, anything outside them is `invalid_scope`; RFC 8707
`resource` or `audience` (either may repeat, not both) must name audiences
the client is registered for (`invalid_target`).
"""

from __future__ import annotations

import base64
import hmac
import re
import time
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote_plus, urlsplit

from introspect import credentials, rfc7523
from introspect.errors import (
    InvalidClient,
    InvalidRequest,
    InvalidScope,
    InvalidTarget,
    UnsupportedGrantType,
)
from introspect.forms import parse_basic
from introspect.store import Client, now

SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]+")
# The RFC 7591 token_endpoint_auth_method of a client with a secret: it may send it by
# Basic or in the body (client_secret_post), or use private_key_jwt if it has a jwks.
CLIENT_SECRET_BASIC = "client_secret_basic"
# The values a client may be registered with (rfc8414.AUTH_METHODS: what endpoints accept).
REGISTRABLE_AUTH_METHODS = (CLIENT_SECRET_BASIC, rfc7523.PRIVATE_KEY_JWT)
_DUMMY_HASH = b"\x00" * 32

GetClient = rfc7523.GetClient


def secret_matches(server_secrets: tuple[bytes, ...], client: Client | None, secret: str) -> bool:
    """Whether `secret` is a live secret of `client`, in time independent of which one (its
    keyed hash under each of the server secrets, against each live hash of the client)."""
    t = now()
    candidates = [h for h, exp in client.secrets if exp is None or exp > t] if client else []
    ok = False
    for server_secret in server_secrets:
        digest = credentials.keyed_hash(server_secret, secret)
        for stored in candidates or [_DUMMY_HASH]:
            ok |= hmac.compare_digest(digest, stored)
    return ok and bool(candidates)


async def authenticate_client(
    authorization: str | None,
    params: dict[str, str],
    get_client: GetClient,
    server_secrets: tuple[bytes, ...],
    assertions: rfc7523.Assertions | None = None,
    memo: AuthMemo | None = None,
) -> Client:
    """The client that authenticated with `client_secret_basic`, `client_secret_post`,
    or (given `assertions`) RFC 7523 `private_key_jwt`.

    Two methods at once is `invalid_request`; none, or one that fails, is
    `invalid_client` (401). A disabled client cannot authenticate, nor can a
    `private_key_jwt` client with a secret. `memo`
    remembers a Basic header that authenticated, so a resource server calling
    again and again skips the decoding and the keyed hash.
    """
    in_body = "client_secret" in params
    if "client_assertion" in params or "client_assertion_type" in params:
        if authorization is not None or in_body:
            raise InvalidRequest("more than one client authentication method")
        if assertions is None:
            raise InvalidClient("private_key_jwt is not enabled here")
        return await rfc7523.authenticate(params, get_client, assertions)
    if authorization is not None:
        if in_body:
            raise InvalidRequest("more than one client authentication method")
        known = None if memo is None else remembered(authorization, params, memo, time.monotonic())
        if known is not None:
            return known
        client_id, secret = parse_basic(authorization)
        if params.get("client_id", client_id) != client_id:
            raise InvalidRequest("client_id does not match the authenticated client")
    elif in_body:
        client_id = params.get("client_id", "")
        secret = params["client_secret"]
        if not client_id:
            raise InvalidClient("client_id is missing")
    else:
        raise InvalidClient("client authentication is required")
    if len(client_id) > 200 or len(secret) > credentials.MAX_OPAQUE_LENGTH:
        raise InvalidClient("client authentication failed")
    client = await get_client(client_id)
    if (
        not secret_matches(server_secrets, client, secret)
        or client is None
        or client.disabled
        or client.token_endpoint_auth_method != CLIENT_SECRET_BASIC
    ):
        raise InvalidClient("client authentication failed")
    if memo is not None and authorization is not None and authorization == basic(client_id, secret):
        # Only the one canonical spelling: other spellings of the same credentials (a
        # lower-case scheme, spaces) would each take a place and could crowd others out.
        memo.remember(authorization, client)
    return client


def basic(client_id: str, secret: str) -> str:
    """The canonical `Authorization: Basic` value for these credentials (RFC 6749 §2.3.1:
    form-encoded, then base64); ours need no encoding, others are encoded."""
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def remembered(
    authorization: str | None, params: dict[str, str], memo: AuthMemo, mono: float
) -> Client | None:
    """The client a remembered Basic header authenticated, when the request is otherwise clean.

    None unless `authorization` is the request's only authentication method,
    `memo` remembers it, and a `client_id` parameter, if any, names the same
    client: anything else takes the full path of `authenticate_client`.
    """
    if (
        authorization is None
        or "client_secret" in params
        or "client_assertion" in params
        or "client_assertion_type" in params
    ):
        return None
    known = memo.recall(authorization, mono)
    if known is None or params.get("client_id", known.client_id) != known.client_id:
        return None
    return known


class AuthMemo(Protocol):
    """Remembers Authorization headers that authenticated, for as long as their client holds."""

    def recall(self, authorization: str, mono: float) -> Client | None:
        """The client a remembered header authenticated at `mono` (time.monotonic()), if its
        record is unchanged."""

    def remember(self, authorization: str, client: Client) -> None:
        """Remember that `authorization` authenticated `client`."""


@dataclass(frozen=True, slots=True)
class Grant:
    """What a client credentials request is granted: scopes and audiences."""

    scopes: tuple[str, ...]
    audiences: tuple[str, ...]


def parse_scope(raw: str | None) -> tuple[str, ...] | None:
    """Scope tokens of a `scope` parameter (RFC 6749 §3.3), None when omitted."""
    if raw is None:
        return None
    tokens = raw.split(" ")
    if any(not SCOPE_TOKEN.fullmatch(t) for t in tokens):
        raise InvalidScope("scope is malformed")
    return tuple(dict.fromkeys(tokens))


def _absolute_uri(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return bool(parts.scheme) and bool(parts.netloc or parts.path) and not parts.fragment


def client_credentials_grant(
    client: Client, params: dict[str, str], multi: dict[str, list[str]]
) -> Grant:
    """Decide a client credentials request (RFC 6749 §4.4.2) for an authenticated client."""
    grant_type = params.get("grant_type")
    if grant_type is None:
        raise InvalidRequest("grant_type is missing")
    if grant_type != "client_credentials":
        raise UnsupportedGrantType(f"grant_type {grant_type[:60]!r} is not supported")
    requested = parse_scope(params.get("scope"))
    if requested is None:
        scopes = client.scopes
    else:
        allowed = set(client.scopes)
        if not set(requested) <= allowed:
            raise InvalidScope("scope exceeds what the client may request")
        scopes = requested
    resources = multi.get("resource", [])
    named = multi.get("audience", [])
    if resources and named:
        raise InvalidRequest("send resource or audience, not both")
    for resource in resources:
        if not _absolute_uri(resource):
            raise InvalidTarget("resource must be an absolute URI without a fragment")
    wanted = resources or named
    if wanted:
        registered = set(client.audiences)
        if not set(wanted) <= registered:
            raise InvalidTarget("the client is not registered for that audience")
        audiences = tuple(dict.fromkeys(wanted))
    else:
        audiences = client.audiences
    return Grant(scopes=scopes, audiences=audiences)


def token_response(
    access_token: str, expires_in: int, scopes: tuple[str, ...]
) -> dict[str, object]:
    """The successful token response of RFC 6749 §5.1 (`scope` always present)."""
    return {
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "scope": " ".join(scopes),
    }
