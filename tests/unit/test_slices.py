"""bench/slices.py's reading of what the workers recorded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench import slices


def _data() -> dict[str, Any]:
    iterations = [0] * slices.BUCKETS
    iterations[0], iterations[25] = 98, 2  # 98 under 0.1 ms, 2 between 2.5 and 2.6 ms
    return {
        "pid": 7,
        "callbacks": {
            "task RequestHandler._handle_request": [100, 0.02, 0.0005, 0.003],
            "task Metrics.flush_forever": [1, 0.0004, 0.0004, 0.0004],
        },
        "iterations": iterations,
        "iterations_wall": iterations,
        "long": [[2.55, 9.0, 12, [[0.5, "task RequestHandler._handle_request"]]]],
        "gc": {"1": [2, 0.004, 0.003]},
    }


def test_summary_lists_callbacks_by_cpu_and_the_long_iterations() -> None:
    """Callbacks by CPU share with their mean and longest slice, iteration quantiles as bucket
    bounds, the GC by generation and each long iteration with what ran in it."""
    lines = slices.summarize(_data())
    assert lines[0] == "worker 7: 100 loop iterations, 20 ms of callback CPU"
    assert lines[1].startswith("iteration CPU ms p50 / p99 / p99.9 (bucket bounds): 0.1 / 2.6")
    rows = [line.split() for line in lines if line.startswith("task ")]
    assert rows[0][:7] == [
        "task",
        "RequestHandler._handle_request",
        "100",
        "20.0",
        "98.0%",
        "200",
        "0.50",
    ]
    assert rows[1][1] == "Metrics.flush_forever"
    assert "GC generation 1: 2 collections, 4.0 ms CPU, 2000 us mean, 3.00 ms max" in lines
    assert lines[-1] == (
        "  2.55 ms CPU, 9.00 ms wall, 12 callbacks: task RequestHandler._handle_request 0.50"
    )


def test_summary_of_an_idle_worker() -> None:
    """A worker that ran nothing says so instead of dividing by zero."""
    data = _data() | {"iterations": [0] * slices.BUCKETS, "callbacks": {}}
    assert slices.summarize(data) == ["worker 7: no loop iteration ran a callback"]


def test_newest_dump_of_each_worker(tmp_path: Path) -> None:
    """The last of a worker's dumps by their time stamp (not by name order), None without."""
    for stamp, pid in ((9, 7), (10, 7), (11, 8)):
        (tmp_path / f"slices-{pid}-{stamp}.json").write_text(json.dumps({"stamp": stamp}))
    assert slices.newest(tmp_path, 7) == {"stamp": 10}
    assert slices.newest(tmp_path, 9) is None
