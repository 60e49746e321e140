"""OAuth 2.0 errors as data: one class per RFC error code, each with its status.

RFC 6749 §5.2 defines the token endpoint's codes; RFC 7009 §2.2.1 adds
`unsupported_token_type`; RFC 8707 §2 adds `invalid_target`. Each status is
set on its own class, never inherited, and `tests/unit/test_errors.py`
checks the whole mapping. `description` is safe to show the client; `detail`
goes to the server log only.
"""

from __future__ import annotations

from typing import ClassVar


class OAuth2Error(Exception):
    """Base of every protocol error; `error` is the RFC code."""

    error: ClassVar[str] = "server_error"
    status_code: ClassVar[int] = 500

    def __init__(self, description: str | None = None, *, detail: str | None = None) -> None:
        super().__init__(description or self.error)
        self.description = description
        self.detail = detail

    @property
    def headers(self) -> dict[str, str]:
        """Extra response headers; RFC 6749 §5.2 asks for none but on 401."""
        return {}

    def body(self) -> dict[str, str]:
        """The JSON error object of RFC 6749 §5.2."""
        out = {"error": self.error}
        if self.description:
            out["error_description"] = self.description
        return out


class InvalidRequest(OAuth2Error):
    """The request is missing a required parameter, includes an unsupported parameter
    value (other than grant type), repeats a parameter, includes multiple credentials,
    utilizes more than one mechanism for authenticating the client, or is otherwise
    malformed."""

    error = "invalid_request"
    status_code = 400


class InvalidClient(OAuth2Error):
    """Client authentication failed (e.g., unknown client, no client authentication
    included, or unsupported authentication method). Answered 401 with a
    `WWW-Authenticate` header naming the scheme the client should use."""

    error = "invalid_client"
    status_code = 401

    def __init__(
        self, description: str | None = None, *, detail: str | None = None, scheme: str = "Basic"
    ) -> None:
        super().__init__(description, detail=detail)
        self.scheme = scheme

    @property
    def headers(self) -> dict[str, str]:
        """RFC 6749 §5.2: a 401 carries the authentication scheme the client used or should."""
        return {"WWW-Authenticate": f'{self.scheme} realm="introspect", error="invalid_client"'}


class InvalidGrant(OAuth2Error):
    """The provided authorization grant or refresh token is invalid, expired, revoked,
    does not match the redirection URI used in the authorization request, or was
    issued to another client."""

    error = "invalid_grant"
    status_code = 400


class UnauthorizedClient(OAuth2Error):
    """The authenticated client is not authorized to use this authorization grant type
    (here also: to call this endpoint, e.g. introspection without the right)."""

    error = "unauthorized_client"
    status_code = 403


class UnsupportedGrantType(OAuth2Error):
    """The authorization grant type is not supported by the authorization server."""

    error = "unsupported_grant_type"
    status_code = 400


class InvalidScope(OAuth2Error):
    """The requested scope is invalid, unknown, malformed, or exceeds the scope granted
    by the resource owner."""

    error = "invalid_scope"
    status_code = 400


class InvalidTarget(OAuth2Error):
    """RFC 8707 §2: the requested resource is invalid, missing, unknown, or malformed."""

    error = "invalid_target"
    status_code = 400


class UnsupportedTokenType(OAuth2Error):
    """RFC 7009 §2.2.1: the server does not support the revocation of the presented
    token type."""

    error = "unsupported_token_type"
    status_code = 400


ALL_ERRORS: tuple[type[OAuth2Error], ...] = (
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
    InvalidTarget,
    UnsupportedTokenType,
)


class AdminError(Exception):
    """An admin API error: `{"error": code, "error_description": text}` with a 4xx status."""

    def __init__(self, status: int, code: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.code = code
        self.description = description

    def body(self) -> dict[str, str]:
        """The admin API's JSON error object."""
        return {"error": self.code, "error_description": self.description}


class NotFound(AdminError):
    """An unknown id in the admin API."""

    def __init__(self, what: str) -> None:
        super().__init__(404, "not_found", f"no such {what}")


class Invalid(AdminError):
    """A field of an admin request that fails validation; the message names the field."""

    def __init__(self, description: str) -> None:
        super().__init__(400, "invalid_request", description)


class InvalidClientMetadata(AdminError):
    """RFC 7591 §3.2.2: a client metadata value (`jwks`, `token_endpoint_auth_method`) that
    is invalid; the message names the member at fault."""

    def __init__(self, description: str) -> None:
        super().__init__(400, "invalid_client_metadata", description)


class Conflict(AdminError):
    """An admin change that the target's state forbids (e.g. PATCH of a revoked key)."""

    def __init__(self, description: str) -> None:
        super().__init__(409, "conflict", description)
