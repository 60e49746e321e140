"""The answer cache: introspection answers by credential digest, each until its own deadline,
indexed by the identifiers feed events name (`jti`, `client_id`, `sub`).

Only the guard writes here, and only while it follows the feed (see `guard`).
Credentials are kept as SHA-256 digests, never as the presented strings. An
inactive answer carries no identifier an event could name, so every event
evicts all inactive entries as well as the active ones it names.
"""

from __future__ import annotations

from dataclasses import dataclass

from introspect_sdk.answers import Introspection
from introspect_sdk.metrics import Metrics

FIELDS = ("jti", "client_id", "sub")


@dataclass(frozen=True, slots=True)
class Entry:
    """A cached answer and the monotonic time it stops being usable."""

    answer: Introspection
    until: float


class AnswerCache:
    """A bounded map digest -> Entry with reverse indexes for eviction by identifier."""

    def __init__(self, metrics: Metrics, max_entries: int = 10_000) -> None:
        self.metrics = metrics
        self.max_entries = max_entries
        self._entries: dict[bytes, Entry] = {}
        self._inactive: set[bytes] = set()
        self._index: dict[tuple[str, str], set[bytes]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes, now: float) -> Introspection | None:
        """The cached answer for `key` while it is usable, else None (a stale one is removed)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.until <= now:
            self._remove(key)
            return None
        return entry.answer

    def put(self, key: bytes, answer: Introspection, until: float) -> None:
        """Keep `answer` for `key` until `until`; the oldest entry makes room when full."""
        self._remove(key)
        while len(self._entries) >= self.max_entries:
            self._remove(next(iter(self._entries)))
            self.metrics.capacity_evictions += 1
        self._entries[key] = Entry(answer, until)
        if not answer.active:
            self._inactive.add(key)
        for name, value in _identifiers(answer):
            self._index.setdefault((name, value), set()).add(key)
        self.metrics.stored += 1

    def evict(self, identifiers: list[tuple[str, str]]) -> int:
        """Remove every entry an event names, and every inactive entry; how many went."""
        keys = set(self._inactive)
        for each in identifiers:
            keys |= self._index.get(each, set())
        for key in keys:
            self._remove(key)
        self.metrics.evictions += len(keys)
        return len(keys)

    def clear(self) -> None:
        """Forget everything."""
        self._entries.clear()
        self._inactive.clear()
        self._index.clear()

    def _remove(self, key: bytes) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self._inactive.discard(key)
        for each in _identifiers(entry.answer):
            keys = self._index.get(each)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._index[each]


def _identifiers(answer: Introspection) -> list[tuple[str, str]]:
    values = (answer.jti, answer.client_id, answer.sub)
    return [(name, value) for name, value in zip(FIELDS, values, strict=True) if value is not None]
