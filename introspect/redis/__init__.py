"""Redis behind a port: the operations the product needs (`port.Redis`) and their
implementations (`lean.LeanRedis`: one server, over the lean RESP client)."""

from introspect.redis.lean import LeanRedis
from introspect.redis.port import Redis, Write

__all__ = ["LeanRedis", "Redis", "Write"]
