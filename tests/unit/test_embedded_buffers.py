"""The embedded Postgres's shared_buffers: a quarter of the memory, within its bounds."""

from __future__ import annotations

import os

import pytest

from introspect.embedded import postgres


@pytest.mark.parametrize(
    ("memory_gib", "expected_mb"), [(0.25, 128), (2, 512), (4, 1024), (24, 6144), (64, 8192)]
)
def test_a_quarter_of_memory_within_bounds(
    monkeypatch: pytest.MonkeyPatch, memory_gib: float, expected_mb: int
) -> None:
    pages = int(memory_gib * 1024**3 / 4096)
    values = {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": pages}
    monkeypatch.setattr(os, "sysconf", values.__getitem__)
    assert postgres.shared_buffers_mb() == expected_mb


def test_without_a_memory_size_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    def unknown(_name: str) -> int:
        raise ValueError("unrecognized configuration name")

    monkeypatch.setattr(os, "sysconf", unknown)
    assert postgres.shared_buffers_mb() == 128
