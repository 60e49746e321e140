"""`introspect dev-cluster`: a 3+3 Valkey Cluster in one command, stopped cleanly."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

from introspect.embedded.processes import wait_gone
from introspect.redis.cluster import ClusterRedis


async def reachable(url: str) -> dict[str, bool]:
    redis = ClusterRedis(url)
    try:
        return await redis.reachable()
    finally:
        redis.close()


def test_dev_cluster_forms_a_3_plus_3_cluster_and_stops_every_node(tmp_path: Path) -> None:
    """It prints the two variables to use; the seeds reach a cluster of 3 primaries whose
    nodes all answer; SIGTERM stops every node process and exits 0."""
    with subprocess.Popen(
        [sys.executable, "-m", "introspect.cli", "dev-cluster", "--dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "INTROSPECT_REDIS_CLUSTER=true"
            name, _, url = proc.stdout.readline().strip().partition("=")
            assert name == "INTROSPECT_REDIS_URL"
            assert len(url.split(",")) == 6
            primaries = asyncio.run(reachable(url))
            assert len(primaries) == 3
            assert all(primaries.values())
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
    for node in sorted(tmp_path.glob("node-*")):
        assert wait_gone(node, 1.0) == []
