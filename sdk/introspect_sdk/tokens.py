"""The client side: access tokens for a service client by the client credentials grant (RFC
6749 §4.4), authenticated with a secret or `private_key_jwt` (a private key or an access key
string), each kept until shortly before it expires and refreshed once for all callers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from types import TracebackType

import aiohttp

from introspect_sdk.client_auth import ClientAuth
from introspect_sdk.discovery import DiscoveryError, discover

# A token is replaced this long before it expires (or at half its life, if that is sooner).
REFRESH_MARGIN = 30.0


class TokenError(Exception):
    """No token could be had: the server unreachable, or the grant refused (its RFC 6749 §5.2
    error code is in `error`, empty when the server did not answer one)."""

    def __init__(self, message: str, error: str = "") -> None:
        super().__init__(message)
        self.error = error


class TokenProvider:
    """`await provider.token()`: a valid access token, fetched at most once at a time."""

    def __init__(
        self,
        issuer: str,
        auth: ClientAuth,
        *,
        scope: Sequence[str] | None = None,
        resource: Sequence[str] = (),
        margin: float = REFRESH_MARGIN,
        timeout: float = 5.0,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.auth = auth
        self.scope = scope
        self.resource = tuple(resource)
        self.margin = margin
        self.timeout = timeout
        self.fetches = 0  # tokens fetched from the server
        self._session: aiohttp.ClientSession | None = None
        self._token_endpoint: str | None = None
        self._token: str | None = None
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> TokenProvider:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def token(self) -> str:
        """The current access token, refreshed when it nears expiry (one request for all)."""
        if self._token is not None and time.monotonic() < self._refresh_at:
            return self._token
        async with self._lock:
            if self._token is not None and time.monotonic() < self._refresh_at:
                return self._token
            return await self._fetch()

    def forget(self, token: str) -> None:
        """Stop using `token` (refused by a resource server): the next call fetches anew."""
        if self._token == token:
            self._token = None

    async def _fetch(self) -> str:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        if self._token_endpoint is None:
            try:
                metadata = await discover(self._session, self.issuer, self.timeout)
            except DiscoveryError as exc:
                raise TokenError(str(exc)) from None
            self._token_endpoint = metadata.token_endpoint
        headers, fields = self.auth.apply(self.issuer)
        form: list[tuple[str, str]] = [("grant_type", "client_credentials"), *fields.items()]
        if self.scope is not None:
            form.append(("scope", " ".join(self.scope)))
        form += [("resource", r) for r in self.resource]
        started = time.monotonic()
        try:
            async with self._session.post(
                self._token_endpoint,
                data=form,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as resp:
                body = await resp.json(content_type=None)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise TokenError(f"the token endpoint failed: {type(exc).__name__}") from None
        if not isinstance(body, dict):
            raise TokenError(f"the token endpoint answered {status} without a JSON object")
        if status != 200:
            error = body.get("error")
            raise TokenError(f"the token endpoint answered {status}", str(error or ""))
        token, expires_in = body.get("access_token"), body.get("expires_in")
        if not isinstance(token, str) or not isinstance(expires_in, int | float):
            raise TokenError("the token endpoint's answer has no access_token and expires_in")
        self.fetches += 1
        self._token = token
        self._refresh_at = started + expires_in - min(self.margin, expires_in / 2)
        return token
