"""Redis behind a port: the operations the product needs (`port.Redis`) and their
implementations (`lean.LeanRedis`: one server, over the lean RESP client;
`cluster.ClusterRedis`: a Valkey/Redis Cluster)."""

from introspect.redis.cluster import ClusterRedis
from introspect.redis.lean import LeanRedis
from introspect.redis.port import Redis, Write

__all__ = ["ClusterRedis", "LeanRedis", "Redis", "Write", "open_redis"]


def open_redis(url: str, *, cluster: bool, timeout: float = 2.0) -> Redis:
    """The port on the Redis at `url`; with `cluster`, `url` names seed nodes of a cluster."""
    return ClusterRedis(url, timeout) if cluster else LeanRedis(url, timeout)
