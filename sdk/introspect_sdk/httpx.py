"""An httpx auth class adding `Authorization: Bearer` from a `TokenProvider` (needs the
`httpx` extra; async clients only, as the provider is async)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator

import httpx

from introspect_sdk.tokens import TokenProvider


class BearerAuth(httpx.Auth):
    """`httpx.AsyncClient(auth=BearerAuth(provider))`; a 401 makes the provider fetch anew."""

    def __init__(self, provider: TokenProvider) -> None:
        self.provider = provider

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        """Not supported: the provider is async."""
        raise RuntimeError("BearerAuth works with httpx.AsyncClient only")

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """Add the current token; forget it when the answer is 401."""
        token = await self.provider.token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            self.provider.forget(token)
