"""The Redis port on a Valkey/Redis Cluster: a lean, identity-pinned client per primary.

Why not a cluster client. redis-py's `RedisCluster` (like coredis and
valkey-glide) follows a MOVED reply by itself to whichever node now serves a
slot, a promoted replica included: it would read a history nobody vouched for
(promise 6). And its connections, pools and background refreshes outlive a
synchronous `close`. So the layout is read here with `CLUSTER SLOTS` (from
the nodes last seen, then the seeds), keys are hashed with redis-py's
`key_slot`, and every command goes to the primary of its keys over a lean
pipelined client of that node (introspect/redis/resp.py), which identifies
the server of every connection it opens: a batch that names an identity is
sent only to that very process.

One history for the whole cluster. The identity of the cluster is a digest of
its layout (which slots each primary serves) and of each primary's own
identity (run id, replication id): a failover, a restart, a node replaced or a
slot moved makes another cluster identity, and the worker stops vouching
(introspect/history.py) until the change log is replayed onto the new one.
Each primary holds a copy of the history marker (and of the replay lock) under
a hash tag it serves (`Shard.tag`): a lookup reads it, and a reader's fill
checks it, in the same script as the entries of that node (a script may touch
undeclared keys of other slots of its own node: `allow-cross-slot-keys`), so
a flush of one node is seen by the very command that would read its state.

Lookups are grouped by node: one script per node, all nodes at once. A
lookup that meets a slot being migrated reads what the source still holds and
an absent key (moved already) as absent: Postgres answers it. Writers'
tombstones follow MOVED and ASK (a newer version is safe anywhere); readers'
fills that meet a redirection are dropped.

Invalidations use sharded pub/sub on one hash-tagged channel family
(`{introspect}`): every worker subscribes (SSUBSCRIBE) on the primary that
serves that tag, every change publishes (SPUBLISH) there, so the count
SPUBLISH returns is every listener of every instance (what `listeners` and
the acknowledgements wait for), and one node orders invalidations and
heartbeats as a single server would. A failover of that primary or a move of
its slot ends the subscriptions (promise 4: the in-process cache is dropped
and they subscribe again). The acknowledgement lists live under that tag too.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from redis.crc import REDIS_CLUSTER_HASH_SLOTS as SLOTS
from redis.crc import key_slot
from redis.exceptions import ConnectionError, RedisError, ResponseError

from introspect.redis import resp
from introspect.redis.lean import _FILL, _RELEASE, _SEAL, _TAKE_WINDOW, checked, fill_command
from introspect.redis.port import LOCK, MARKER, HistoryUnknown, ServerChanged, Unwritten, Write

# Pub/sub channels and acknowledgement lists: all on the primary serving this tag.
HUB_TAG = b"{introspect}"
_CROSS = "#!lua flags=allow-cross-slot-keys\n"

# KEYS[1] this node's marker; ARGV[1] the marker vouched for, then the keys (of this node).
# -1: the marker is not that one.
_LOOKUP = (
    _CROSS
    + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local found = {}
for i = 2, #ARGV do found[i - 1] = redis.call('GET', ARGV[i]) end
return found
"""
)

# A reader's fill: `_FILL` of lean.py, with this node's marker given as ARGV[5].
_MARKED_FILL = _CROSS + _FILL.replace("KEYS[2]", "ARGV[5]")

# KEYS[1] an assertion's key; ARGV[1] this node's marker key, ARGV[2] the marker vouched
# for, ARGV[3] when to forget it. 1: first use; 0: seen before; -1: another history.
_ONCE = (
    _CROSS
    + """
if redis.call('GET', ARGV[1]) ~= ARGV[2] then return -1 end
if redis.call('SET', KEYS[1], '1', 'NX', 'EXAT', ARGV[3]) then return 1 end
return 0
"""
)

_IDENTIFY: list[resp.Command] = [("INFO", "server"), ("INFO", "replication"), ("INFO", "memory")]
_REDIRECTS = ("MOVED", "ASK")
T = TypeVar("T")


def node_url(seed: str, host: str, port: int) -> str:
    """The URL of a node: a seed's scheme, credentials and options, with its address."""
    parts = urlsplit(seed)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@{host}:{port}" if credentials else f"{host}:{port}"
    return parts._replace(netloc=netloc).geturl()


def tag_for(owns: Callable[[int], bool]) -> bytes:
    """The first hash tag (`{0}`, `{1}`...) whose slot `owns` accepts."""
    n = 0
    while not owns(key_slot(b"%d" % n)):
        n += 1
    return b"{%d}" % n


def redirected(reply: Any) -> bool:
    """Whether an error reply sends the command elsewhere (the layout moved meanwhile)."""
    return isinstance(reply, ResponseError) and str(reply).startswith(_REDIRECTS)


@dataclass(frozen=True, slots=True)
class Shard:
    """A primary and the slots it serves; its copy of the marker and lock under `tag`."""

    host: str
    port: int
    ranges: tuple[tuple[int, int], ...]
    tag: bytes

    @property
    def marker(self) -> bytes:
        return MARKER + self.tag

    @property
    def lock(self) -> bytes:
        return LOCK + self.tag


@dataclass(frozen=True, slots=True)
class Layout:
    """Which primary serves each slot, as the cluster told."""

    shards: tuple[Shard, ...]
    owner: bytes  # one byte per slot: the index of its shard in `shards` (255: none)

    @classmethod
    def of(cls, slots: list[Any], asked: str) -> Layout:
        """From a CLUSTER SLOTS reply (of the node at `asked`)."""
        index: dict[tuple[str, int], int] = {}
        owner = bytearray(b"\xff" * SLOTS)
        ranges: dict[int, list[tuple[int, int]]] = {}
        for start, end, primary, *_replicas in sorted(slots):
            host = primary[0].decode() or asked
            i = index.setdefault((host, int(primary[1])), len(index))
            owner[start : end + 1] = bytes([i]) * (end + 1 - start)
            ranges.setdefault(i, []).append((start, end))
        shards = tuple(
            Shard(host, port, tuple(ranges[i]), tag_for(functools.partial(_owns, owner, i)))
            for (host, port), i in index.items()
        )
        return cls(shards, bytes(owner))

    def shard(self, key: bytes) -> int:
        """The index of the shard serving `key`."""
        i = self.owner[key_slot(key)]
        if i == 255:
            raise ConnectionError("no primary of the redis cluster serves this key's slot")
        return i

    def describe(self, servers: Sequence[resp.Server]) -> bytes:
        """Slots and server identities of every shard, as one value (hashed into the identity)."""
        return b";".join(
            b"%s@%s" % (repr(shard.ranges).encode(), server.identity)
            for shard, server in zip(self.shards, servers, strict=True)
        )


class ClusterRedis:
    """`introspect.redis.port.Redis` on a cluster: see the module doc."""

    def __init__(self, url: str, timeout: float = 2.0) -> None:
        self.seeds = [seed.strip() for seed in url.split(",") if seed.strip()]
        self.timeout = timeout
        self._clients: dict[tuple[str, int], resp.Client] = {}
        self.layout: Layout | None = None
        # The primaries of `layout` as identified, and the cluster identity they make.
        self._servers: tuple[resp.Server, ...] = ()
        self._identity: bytes | None = None
        # The last cluster identity seen: when another is seen, subscriptions start again.
        self._announced: bytes | None = None
        self._blocking: resp.Client | None = None
        self._subscriptions: weakref.WeakSet[ClusterSubscription] = weakref.WeakSet()
        self._refreshing: asyncio.Task[Layout] | None = None

    # --- the nodes ----------------------------------------------------------------------------

    def client(self, host: str, port: int) -> resp.Client:
        """The pinned lean client of one node (opened when used)."""
        address = (host, port)
        client = self._clients.get(address)
        if client is None:
            url = node_url(self.seeds[0], host, port)
            client = self._clients[address] = resp.Client(url, self.timeout, identify=True)
        return client

    async def refresh(self) -> Layout:
        """Ask the cluster which primary serves which slot (concurrent callers share one ask)."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.get_running_loop().create_task(self._refresh())
        return await asyncio.shield(self._refreshing)

    async def _refresh(self) -> Layout:
        failure: Exception = ConnectionError("no redis cluster node given")
        known = [_address(seed) for seed in self.seeds]
        if self.layout is not None:  # the nodes found last time first: seeds may be gone
            known = [(s.host, s.port) for s in self.layout.shards] + known
        for host, port in dict.fromkeys(known):
            try:
                slots = await self.client(host, port).call("CLUSTER", "SLOTS")
            except (RedisError, OSError) as exc:
                failure = exc
                continue
            layout = Layout.of(slots, host)
            if not layout.shards:
                raise ConnectionError(f"the redis cluster at {host}:{port} serves no slot yet")
            if layout != self.layout:
                self.layout = layout
                self._identity = None
            return layout
        raise failure

    def _shard_client(self, shard: Shard) -> resp.Client:
        return self.client(shard.host, shard.port)

    def _pins(self, identity: bytes) -> tuple[Layout, tuple[resp.Server, ...]]:
        """The layout and servers of `identity`, or ServerChanged if it is not the current one."""
        layout = self.layout
        if layout is None or self._identity is None or self._identity != identity:
            raise ServerChanged("the cluster's layout or a primary changed")
        return layout, self._servers

    def _compose(self, layout: Layout, servers: Sequence[resp.Server]) -> resp.Server:
        digest = hashlib.sha256(layout.describe(servers)).hexdigest()[:40]
        evicting = [s.maxmemory_policy for s in servers if s.maxmemory_policy != "noeviction"]
        return resp.Server(
            run_id=digest,
            replid="cluster",
            role="master",
            maxmemory_policy=evicting[0] if evicting else "noeviction",
        )

    def _adopt(self, layout: Layout, servers: tuple[resp.Server, ...]) -> resp.Server:
        server = self._compose(layout, servers)
        if self._announced not in (None, server.identity):
            # Subscribers opened on the old cluster identity subscribe again (promise 4).
            for subscription in list(self._subscriptions):
                subscription.close()
        self._announced = server.identity
        if self.layout == layout:
            self._servers, self._identity = servers, server.identity
        return server

    # --- identity and ping -----------------------------------------------------------------

    async def server(self) -> resp.Server:
        layout = await self.refresh()
        servers = await asyncio.gather(*(self._shard_client(s).server() for s in layout.shards))
        return self._adopt(layout, tuple(servers))

    async def ping(self) -> None:
        down = [node for node, up in (await self.reachable()).items() if not up]
        if down:
            raise ConnectionError(f"redis cluster primaries unreachable: {', '.join(down)}")

    async def reachable(self) -> dict[str, bool]:
        """Every primary (`host:port`), and whether it answers PING now."""
        layout = await self.refresh()
        replies = await asyncio.gather(
            *(self._shard_client(s).call("PING") for s in layout.shards), return_exceptions=True
        )
        return {
            f"{shard.host}:{shard.port}": reply == b"PONG"
            for shard, reply in zip(layout.shards, replies, strict=True)
        }

    async def watch(self) -> tuple[resp.Server, bytes | None]:
        layout = await self.refresh()

        async def one(shard: Shard) -> tuple[resp.Server, bytes | None]:
            replies = checked(
                await self._shard_client(shard).execute(*_IDENTIFY, ("GET", shard.marker))
            )
            return resp.Server.from_info(*replies[:3]), replies[3]

        found = await asyncio.gather(*(one(s) for s in layout.shards))
        server = self._adopt(layout, tuple(s for s, _ in found))
        markers = {marker for _, marker in found}
        return server, markers.pop() if len(markers) == 1 else None

    # --- vouching for a history --------------------------------------------------------------

    async def _each(self, identity: bytes, *commands: Callable[[Shard], resp.Command]) -> list[Any]:
        """Commands on every primary of `identity`, at once; the replies of each, in order."""
        layout, servers = self._pins(identity)
        replies = await asyncio.gather(
            *(
                self._shard_client(shard).execute(
                    *(command(shard) for command in commands), identity=server.identity
                )
                for shard, server in zip(layout.shards, servers, strict=True)
            )
        )
        return [reply[0] if len(commands) == 1 else reply for reply in map(checked, replies)]

    async def history_state(self, identity: bytes) -> tuple[bytes | None, bool]:
        states = await self._each(identity, lambda s: ("GET", s.marker), lambda s: ("GET", s.lock))
        markers = [marker for marker, _ in states]
        locks = [lock for _, lock in states]
        common = set(markers)
        return common.pop() if len(common) == 1 else None, any(lock is not None for lock in locks)

    async def lock(self, owner: str, ttl_ms: int, identity: bytes) -> bool:
        taken = await self._each(identity, lambda s: ("SET", s.lock, owner, "NX", "PX", ttl_ms))
        if all(reply is not None for reply in taken):
            return True
        await self.unlock(owner, identity)
        return False

    async def seal(self, owner: str, marker: bytes, identity: bytes) -> bool:
        sealed = await self._each(
            identity, lambda s: ("EVAL", _SEAL, 2, s.lock, s.marker, owner, marker)
        )
        return all(reply == 1 for reply in sealed)

    async def unlock(self, owner: str, identity: bytes) -> None:
        await self._each(identity, lambda s: ("EVAL", _RELEASE, 1, s.lock, owner))

    # --- the cache ------------------------------------------------------------------------------

    async def lookup(
        self, keys: Sequence[bytes], marker: bytes, identity: bytes
    ) -> list[bytes | None]:
        layout, servers = self._pins(identity)
        groups: dict[int, list[int]] = {}
        for position, key in enumerate(keys):
            groups.setdefault(layout.shard(key), []).append(position)

        async def one(i: int, positions: list[int]) -> list[Any]:
            shard = layout.shards[i]
            (reply,) = await self._shard_client(shard).execute(
                ("EVAL", _LOOKUP, 1, shard.marker, marker, *(keys[p] for p in positions)),
                identity=servers[i].identity,
            )
            if redirected(reply):  # a slot is moving: what is not here is absent
                return [None] * len(positions)
            if isinstance(reply, ResponseError):
                # A key of a slot this node no longer serves: another layout.
                raise HistoryUnknown(f"redis cluster layout changed: {reply}")
            if reply == -1:
                raise HistoryUnknown("redis lost its history marker")
            return list(reply)

        found: list[bytes | None] = [None] * len(keys)
        replies = await _each_group(one, groups)
        for positions, values in zip(groups.values(), replies, strict=True):
            for position, value in zip(positions, values, strict=True):
                found[position] = value
        return found

    def _command(self, layout: Layout, write: Write) -> resp.Command:
        marker = write.marker
        if marker is None:
            return fill_command(write)
        shard = layout.shards[layout.shard(write.key)]
        w = write
        return ("EVAL", _MARKED_FILL, 1, w.key, w.version, w.value, w.ttl_ms, marker, shard.marker)

    async def write(self, writes: Sequence[Write], identity: bytes | None = None) -> None:
        if not writes:
            return
        if identity is not None:
            layout, servers = self._pins(identity)
        else:
            layout, servers = self.layout or await self.refresh(), ()
        groups: dict[int, list[Write]] = {}
        for write in writes:
            groups.setdefault(layout.shard(write.key), []).append(write)

        async def one(i: int, group: list[Write]) -> list[Any]:
            shard = layout.shards[i]
            pin = servers[i].identity if servers else None
            replies = await self._shard_client(shard).execute(
                *(self._command(layout, w) for w in group), identity=pin
            )
            for j, (write, reply) in enumerate(zip(group, replies, strict=True)):
                if redirected(reply):
                    if write.marker is not None:
                        replies[j] = 0  # a reader's fill is only a copy: dropped
                    elif identity is not None:
                        raise ServerChanged(f"redis cluster layout changed: {reply}")
                    else:
                        replies[j] = await self._redirect(fill_command(write), reply)
            return checked(replies)

        results = await _each_group(one, groups)
        if any(-1 in replies for replies in results):
            raise HistoryUnknown("redis lost its history marker")

    async def _redirect(self, command: resp.Command, reply: ResponseError) -> Any:
        """Run a command where a MOVED or ASK reply sent it."""
        kind, _, rest = str(reply).partition(" ")
        host, _, port = rest.partition(" ")[2].rpartition(":")
        client = self.client(host, int(port))
        if kind == "ASK":
            _ok, result = await client.execute(("ASKING",), command)
        else:
            await self.refresh()
            (result,) = await client.execute(command)
        if isinstance(result, ResponseError):
            raise result
        return result

    # --- invalidations and their acknowledgements --------------------------------------------

    async def _hub(self, *commands: resp.Command) -> list[Any]:
        """Commands on the primary serving the hub tag (once more after a MOVED)."""
        return await self._on(HUB_TAG, *commands)

    async def _on(self, key: bytes, *commands: resp.Command) -> list[Any]:
        """Commands on the primary serving `key`'s slot, no history pinned (once more after a
        MOVED or ASK, with the layout asked again)."""
        for attempt in range(2):
            layout = self.layout or await self.refresh()
            shard = layout.shards[layout.shard(key)]
            replies = await self._shard_client(shard).execute(*commands)
            if attempt == 0 and any(redirected(r) for r in replies):
                await self.refresh()
                continue
            return checked(replies)
        raise AssertionError("unreachable")

    async def hub(self, *, fresh: bool = True) -> tuple[str, int]:
        """The address of the primary serving the hub tag (as last seen unless `fresh`)."""
        layout = await self.refresh() if fresh or self.layout is None else self.layout
        shard = layout.shards[layout.shard(HUB_TAG)]
        return shard.host, shard.port

    async def publish(
        self, channel: str | bytes, message: bytes, writes: Sequence[Write] = ()
    ) -> int:
        try:
            await self.write(writes)
        except (RedisError, OSError) as exc:
            # Listeners still drop what they hold (a node down does not end subscriptions
            # on the others); the change stays pending for the node that missed it.
            (receivers,) = await self._hub(("SPUBLISH", _tagged(channel), message))
            raise Unwritten(exc, int(receivers)) from exc
        (receivers,) = await self._hub(("SPUBLISH", _tagged(channel), message))
        return int(receivers)

    def subscription(self) -> ClusterSubscription:
        subscription = ClusterSubscription(self)
        self._subscriptions.add(subscription)
        return subscription

    async def acknowledge(self, inbox: str, nonce: str, ttl: int) -> None:
        key = _tagged(inbox)
        await self._hub(("RPUSH", key, nonce), ("EXPIRE", key, ttl))

    async def acknowledgements(self, inbox: str, wait: float, count: int) -> list[bytes]:
        try:
            return await self._pop(inbox, wait, count, fresh=False)
        except ResponseError as exc:
            if not redirected(exc):
                raise
            return await self._pop(inbox, wait, count, fresh=True)  # the hub moved

    async def _pop(self, inbox: str, wait: float, count: int, *, fresh: bool) -> list[bytes]:
        host, port = await self.hub(fresh=fresh)
        blocking = self._blocking
        if blocking is None or blocking.endpoint.port != port or blocking.endpoint.host != host:
            if blocking is not None:
                blocking.close()
            url = node_url(self.seeds[0], host, port)
            blocking = self._blocking = resp.Client(url, timeout=wait + self.timeout)
        got = await blocking.call(
            "BLMPOP", f"{wait:.3f}", 1, _tagged(inbox), "LEFT", "COUNT", count
        )
        return [] if got is None else list(got[1])

    # --- rate-limit windows: counters that may be lost (see introspect/limits), no pinning ------

    async def take_window(
        self, key: bytes, limit: int, want: int, divisor: int, ttl_ms: int
    ) -> tuple[int, int]:
        (reply,) = await self._on(key, ("EVAL", _TAKE_WINDOW, 1, key, limit, want, divisor, ttl_ms))
        return int(reply[0]), int(reply[1])

    async def window_use(self, keys: Sequence[bytes]) -> list[int]:
        if not keys:
            return []
        (values,) = await self._on(keys[0], ("MGET", *keys))
        return [0 if v is None else int(v) for v in values]

    # --- replay memory ---------------------------------------------------------------------------

    async def remember_once(self, key: bytes, until: int, marker: bytes, identity: bytes) -> bool:
        layout, servers = self._pins(identity)
        i = layout.shard(key)
        shard = layout.shards[i]
        (first,) = checked(
            await self._shard_client(shard).execute(
                ("EVAL", _ONCE, 1, key, shard.marker, marker, until),
                identity=servers[i].identity,
            )
        )
        if first == -1:
            raise HistoryUnknown("redis lost its history marker")
        return bool(first == 1)

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        if self._blocking is not None:
            self._blocking.close()
        for subscription in list(self._subscriptions):
            subscription.close()
        if self._refreshing is not None:
            self._refreshing.cancel()


class ClusterSubscription:
    """Sharded pub/sub on the hub primary; its `server` is the cluster it was opened on."""

    def __init__(self, cluster: ClusterRedis) -> None:
        self._cluster = cluster
        self._server: resp.Server | None = None
        self._inner: resp.Subscription | None = None

    @property
    def server(self) -> resp.Server | None:
        return self._server if self._inner is not None else None

    async def open(
        self, channels: Sequence[str], on_message: Callable[[bytes, bytes], None]
    ) -> asyncio.Future[None]:
        server = await self._cluster.server()
        host, port = await self._cluster.hub()
        url = node_url(self._cluster.seeds[0], host, port)
        inner = self._inner = resp.Subscription(url, self._cluster.timeout, sharded=True)
        prefix = len(HUB_TAG)
        lost = await inner.open(
            [_tagged(c).decode() for c in channels],
            lambda channel, data: on_message(channel[prefix:], data),
        )
        self._server = server
        return lost

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()


async def _each_group(
    one: Callable[[int, list[T]], Awaitable[list[Any]]], groups: dict[int, list[T]]
) -> list[list[Any]]:
    """`one` for every (shard, group), at once; the results in order (one group: no task)."""
    if len(groups) == 1:
        ((i, group),) = groups.items()
        return [await one(i, group)]
    return await asyncio.gather(*(one(i, group) for i, group in groups.items()))


def _tagged(name: str | bytes) -> bytes:
    """A channel or list name under the hub tag."""
    return HUB_TAG + (name.encode() if isinstance(name, str) else name)


def _owns(owner: bytes | bytearray, shard: int, slot: int) -> bool:
    return owner[slot] == shard


def _address(url: str) -> tuple[str, int]:
    endpoint = resp.Endpoint.from_url(url)
    return endpoint.host, endpoint.port
