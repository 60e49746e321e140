"""RFC 7009: OAuth 2.0 token revocation (§2.1 request, §2.2 response, §2.2.1 errors).

Pure protocol logic: the view parses the request and authenticates the
client (§2.1, by RFC 6749 §2.3); `token_parameter` and `selection` decide
which credentials the request names; the authority revokes them through the
one revocation engine (`introspect/revocation.py`); the view answers STATUS.

- §2.1: `token` is required (`invalid_request` without it). `token_type_hint`
  is optional and ignored: every kind of credential is searched, as §2.1
  allows, so a wrong hint changes nothing.
- §2.1: only a token issued to the requesting client is revoked (SPEC: its
  access tokens and the API keys issued for it).
- §2.2: the answer is 200 with an empty body whether the token was revoked
  or was invalid: unknown, malformed, already revoked or expired, or another
  client's. Another client's token is not refused (§2.1 would allow it):
  SPEC wants revocation unable to probe which credentials exist. Nothing is
  written or published for any of them.
- §2.2.1: `unsupported_token_type` is never answered, since every kind of
  token this server issues can be revoked; a client that fails to
  authenticate gets RFC 6749 §5.2's `invalid_client`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from introspect import credentials, rfc7662
from introspect.credentials import Kind
from introspect.store import Selection

# §2.2: the status of every answer to an authenticated request with a token.
STATUS = 200

# The claims of a JWT access token signed by one of our keys and live, or None (RFC 9068).
JwtClaims = Callable[[str], Awaitable[dict[str, Any] | None]]


def token_parameter(params: dict[str, str]) -> str:
    """§2.1: the `token` to revoke, required as in RFC 7662 §2.1."""
    return rfc7662.token_parameter(params)


async def selection(
    token: str, server_secrets: tuple[bytes, ...], owner: str | None, jwt_claims: JwtClaims
) -> Selection | None:
    """The credentials a presented `token` can name, among `owner`'s (§2.1; None: anyone's, for
    the admin API), or None when it names none: an access token or API key of our format, by
    its keyed hash under each server secret, or a JWT access token we signed. A malformed
    string costs no I/O; a JWT counts only once verified."""
    kind = credentials.parse(token)
    if (kind is not Kind.ACCESS_TOKEN and kind is not Kind.API_KEY) and (
        kind is not None or await jwt_claims(token) is None
    ):
        return None
    hashes = tuple(credentials.keyed_hash(secret, token) for secret in server_secrets)
    return Selection(hashes=hashes, client_id=owner)
