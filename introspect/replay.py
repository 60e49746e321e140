"""RFC 7523 §3: a client assertion's `jti` is accepted once, on every worker."""

from __future__ import annotations

from introspect import credentials
from introspect.cache import CredentialCache


class AssertionReplay:
    """The replay memory of client assertions: SET NX in Redis, which every worker shares."""

    def __init__(self, cache: CredentialCache, server_secrets: tuple[bytes, ...]) -> None:
        self.cache = cache
        self.server_secrets = server_secrets

    async def first_use(self, client_id: str, jti: str, presented_from: int, until: int) -> bool:
        """Remember a client assertion's `jti` until `until`; False when seen before.

        A replay on any worker fails. Redis may have lost what it remembered
        (promise 6): an assertion that could have been presented before the
        vouched history started is refused (see introspect/history.py).
        """
        key = b"introspect:jti:" + credentials.keyed_hash(
            self.server_secrets[0], f"{client_id}\x00{jti}"
        )
        if presented_from < self.cache.history.started_at_of(key):
            return False
        return await self.cache.remember_once(key, until)
