"""`python -m bench.cluster_pubsub`: classic against sharded pub/sub on a 3+3 dev cluster.

Publish to receipt by every one of 4 subscribers (4 workers), 2000 times each,
twice: classic PUBLISH with the subscribers spread over the three primaries and
the message sent to another one than the hub (broadcast over the cluster bus);
SPUBLISH with every subscriber on the primary serving `{introspect}` (what
introspect does: see introspect/redis/cluster.py). Prints p50 and p99.
"""

from __future__ import annotations

import asyncio
import time

from introspect.embedded.cluster import dev_cluster
from introspect.redis import resp
from introspect.redis.cluster import HUB_TAG, ClusterRedis, node_url

SUBSCRIBERS = 4
MESSAGES = 2000


async def measure(url: str, sharded: bool) -> tuple[float, float]:
    """p50 and p99 (ms) of publish to receipt by every subscriber."""
    cluster = ClusterRedis(url)
    layout = await cluster.refresh()
    hub = await cluster.hub()
    primaries = [(shard.host, shard.port) for shard in layout.shards]
    channel = (HUB_TAG + b"bench").decode() if sharded else "bench"
    received: dict[bytes, int] = {}
    everyone = asyncio.Event()

    def on_message(_channel: bytes, data: bytes) -> None:
        received[data] = received.get(data, 0) + 1
        if received[data] == SUBSCRIBERS:
            everyone.set()

    subscriptions = []
    for i in range(SUBSCRIBERS):
        host, port = hub if sharded else primaries[i % len(primaries)]
        subscription = resp.Subscription(node_url(cluster.seeds[0], host, port), sharded=sharded)
        await subscription.open([channel], on_message)
        subscriptions.append(subscription)
    other = primaries[(primaries.index(hub) + 1) % len(primaries)]
    publisher = cluster.client(*(hub if sharded else other))
    took = []
    for n in range(MESSAGES):
        everyone.clear()
        started = time.perf_counter()
        await publisher.execute(("SPUBLISH" if sharded else "PUBLISH", channel, b"%d" % n))
        await everyone.wait()
        took.append((time.perf_counter() - started) * 1000)
    for subscription in subscriptions:
        subscription.close()
    cluster.close()
    took.sort()
    return took[len(took) // 2], took[int(len(took) * 0.99)]


async def main(url: str) -> None:
    for _ in range(2):
        for sharded in (False, True):
            p50, p99 = await measure(url, sharded)
            kind = "SPUBLISH, all on the hub" if sharded else "PUBLISH, spread"
            print(f"{kind:26} p50 {p50:.3f} ms  p99 {p99:.3f} ms", flush=True)


if __name__ == "__main__":
    with dev_cluster() as formed:
        asyncio.run(main(formed.url))
