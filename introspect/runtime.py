"""Where the stores are: the configured URLs, or the private embedded servers.

`stores()` is used by `introspect serve` and by every CLI command: with
both URLs configured nothing embedded starts; otherwise the servers running
under the data dir are reused, or started for the duration of the block and
stopped after it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from introspect import embedded
from introspect.config import Settings


@dataclass(frozen=True, slots=True)
class Stores:
    """The URLs in effect, and whether embedded servers serve them."""

    database_url: str
    redis_url: str
    embedded: bool


@contextlib.contextmanager
def stores(settings: Settings) -> Iterator[Stores]:
    """The stores for `settings`, starting (and afterwards stopping) embedded ones if needed."""
    if not settings.embedded:
        assert settings.database_url is not None
        assert settings.redis_url is not None
        yield Stores(settings.database_url, settings.redis_url, embedded=False)
        return
    started = embedded.start(settings.data_dir)
    try:
        yield Stores(
            settings.database_url or started.database_url,
            settings.redis_url or started.redis_url,
            embedded=True,
        )
    finally:
        if started.owned:
            embedded.stop(settings.data_dir)
