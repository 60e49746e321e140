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

One history per primary. Each primary is vouched for on its own
(introspect/history.py, `ShardedHistory`): its identity is its own run id and
replication id, and it holds its own marker (and replay lock) under a hash
tag it serves (`Shard.tag`). What the read path names (`compose`: each
vouched primary's address with its identity, or its marker) pins every
batch to those very processes. A reader's fill checks it in the same script
as the entry it writes (a script may touch undeclared keys of other slots of
its own node: `allow-cross-slot-keys`), so a flush of one node is seen by the
very command that would write into it. A lookup reads it first, then the
entries, in one pipeline on that pinned connection (plain GETs: a server runs
one connection's commands in order, and a Lua loop of GETs cost several times
as much): every entry is then read after a moment when the node held the
history vouched for, and a node loses writes only by a restart or a
promotion, which the pinned connection does not survive, or by a flush,
after which it holds only writers' tombstones (newer versions, safe anywhere)
and, once replayed and sealed again, fills checked under its new marker.
A primary not named is not read (its keys are absent: Postgres answers) nor
filled; one found lost (failed, replaced, its replica promoted, its marker
gone) is told to `on_lost`, and only its slots wait for its replay. A slot
moved between two vouched primaries changes no history: the layout is read
again (a lookup that meets a key this node no longer serves asks for it).

Lookups are grouped by node: one pipeline per node, all queued at once (each
one write), no task per node. A
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
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar
from urllib.parse import urlsplit

from redis.crc import REDIS_CLUSTER_HASH_SLOTS as SLOTS
from redis.crc import key_slot
from redis.exceptions import ConnectionError, RedisError, ResponseError

from introspect.redis import resp
from introspect.redis.lean import _FILL, _TAKE_WINDOW, HistoryOps, checked, fill_command
from introspect.redis.port import (
    LOCK,
    MARKER,
    HistoryUnknown,
    Looked,
    ServerChanged,
    Unwritten,
    Write,
)

# Pub/sub channels and acknowledgement lists: all on the primary serving this tag.
HUB_TAG = b"{introspect}"
_CROSS = "#!lua flags=allow-cross-slot-keys\n"

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

# What a subscription reaches on a cluster, and the cluster seen as one server (its eviction
# policy aside): invalidations do not depend on which primaries are vouched for.
CLUSTER = resp.Server(run_id="cluster", replid="", role="master", maxmemory_policy="noeviction")
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
    def address(self) -> str:
        return f"{self.host}:{self.port}"

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


class ShardLost(HistoryUnknown):
    """One primary (`address`) failed, or its history cannot be vouched for: its slots only
    are answered from Postgres until it is vouched for again (introspect/history.py)."""

    def __init__(self, address: str, cause: BaseException) -> None:
        super().__init__(f"redis cluster primary {address}: {cause}")
        self.address = address
        self.cause = cause


def compose(values: dict[str, bytes]) -> bytes | None:
    """What a worker vouches for on a cluster, as one value: one value per vouched
    primary (its identity, or its marker) as `host:port=value`, comma-separated; None when
    none is."""
    return b",".join(b"%s=%s" % (a.encode(), v) for a, v in sorted(values.items())) or None


@functools.lru_cache(maxsize=16)
def _parse(value: bytes) -> dict[str, bytes] | None:
    pairs = [item.partition(b"=") for item in value.split(b",")]
    if not all(sep and address and held for address, sep, held in pairs):
        return None
    return {address.decode(): held for address, _sep, held in pairs}


def vouched(value: bytes, error: type[ServerChanged]) -> dict[str, bytes]:
    """`compose` read back (address: value); `error` when `value` is not one."""
    found = _parse(value)
    if found is None:
        raise error("not what a redis cluster history is vouched as")
    return found


class ClusterRedis:
    """`introspect.redis.port.Redis` on a cluster: see the module doc."""

    def __init__(self, url: str, timeout: float = 2.0) -> None:
        self.seeds = [seed.strip() for seed in url.split(",") if seed.strip()]
        self.timeout = timeout
        self._clients: dict[tuple[str, int], resp.Client] = {}
        self._nodes: dict[str, ClusterNode] = {}
        self.layout: Layout | None = None
        self._blocking: resp.Client | None = None
        self._subscriptions: weakref.WeakSet[ClusterSubscription] = weakref.WeakSet()
        self._refreshing: asyncio.Task[Layout] | None = None
        # Told of each primary found lost by a lookup, whose other primaries still answer
        # (introspect/cache/health.py); without it, a lookup raises the loss.
        self.on_lost: Callable[[ShardLost], None] | None = None

    # --- the nodes ----------------------------------------------------------------------------

    def client(self, host: str, port: int) -> resp.Client:
        """The pinned lean client of one node (opened when used)."""
        address = (host, port)
        client = self._clients.get(address)
        if client is None:
            url = node_url(self.seeds[0], host, port)
            client = self._clients[address] = resp.Client(url, self.timeout, identify=True)
        return client

    def node(self, address: str) -> ClusterNode:
        """The history operations on the primary at `address` (`host:port`)."""
        node = self._nodes.get(address)
        if node is None:
            node = self._nodes[address] = ClusterNode(self, address)
        return node

    def address_of(self, key: bytes) -> str | None:
        """The primary serving `key` as last seen (`host:port`), or None."""
        layout = self.layout
        i = 255 if layout is None else layout.owner[key_slot(key)]
        return None if layout is None or i == 255 else layout.shards[i].address

    async def refresh(self) -> Layout:
        """Ask the cluster which primary serves which slot (concurrent callers share one ask)."""
        return await asyncio.shield(self._refresh_soon())

    def _refresh_soon(self) -> asyncio.Task[Layout]:
        if self._refreshing is None or self._refreshing.done():
            task = self._refreshing = asyncio.get_running_loop().create_task(self._refresh())
            task.add_done_callback(_retrieved)
        return self._refreshing

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
            return layout
        raise failure

    def _shard_client(self, shard: Shard) -> resp.Client:
        return self.client(shard.host, shard.port)

    def _lost(self, address: str, cause: BaseException) -> None:
        """A primary a lookup found lost: its keys are absent (Postgres answers them), the loss
        told to `on_lost` (else raised)."""
        lost = ShardLost(address, cause)
        if self.on_lost is None:
            raise lost from cause
        self.on_lost(lost)

    # --- identity and ping -----------------------------------------------------------------

    async def server(self) -> resp.Server:
        """The cluster as one server: `CLUSTER`, with an evicting primary's policy if any."""
        layout = await self.refresh()
        servers = await asyncio.gather(*(self._shard_client(s).server() for s in layout.shards))
        evicting = [s.maxmemory_policy for s in servers if s.maxmemory_policy != "noeviction"]
        return CLUSTER if not evicting else replace(CLUSTER, maxmemory_policy=evicting[0])

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
            shard.address: reply == b"PONG"
            for shard, reply in zip(layout.shards, replies, strict=True)
        }

    # --- the cache ------------------------------------------------------------------------------

    def lookup_then(
        self, keys: Sequence[bytes], marker: bytes, identity: bytes, found: Looked
    ) -> bool:
        """Never at once: keys go to several primaries, each possibly to connect (`lookup`)."""
        return False

    async def lookup(
        self, keys: Sequence[bytes], marker: bytes, identity: bytes
    ) -> list[bytes | None]:
        """The values of `keys`; the keys of a primary not vouched for, lost (see `on_lost`)
        or moving are absent (Postgres answers them)."""
        layout = self.layout or await self.refresh()
        markers, pins = vouched(marker, HistoryUnknown), vouched(identity, ServerChanged)
        groups: dict[int, list[int]] = {}
        owner = layout.owner
        for position, key in enumerate(keys):
            groups.setdefault(owner[key_slot(key)], []).append(position)
        # Every node's batch is queued before any reply is awaited, with no task: each goes
        # out in one write at the end of this loop iteration (see `resp.Client.submit`).
        sent: list[tuple[Shard, bytes, list[int], Awaitable[list[Any]]]] = []
        for i, positions in groups.items():
            if i == 255:  # no primary serves it now (a failover under way): absent
                self._refresh_soon()
                continue
            shard = layout.shards[i]
            held, pin = markers.get(shard.address), pins.get(shard.address)
            if held is None or pin is None:  # not vouched for (yet): Postgres answers
                continue
            batch = [("GET", shard.marker), *(("GET", keys[p]) for p in positions)]
            sent.append(
                (shard, held, positions, self._shard_client(shard).submit(*batch, identity=pin))
            )
        replies: list[list[Any] | BaseException] = []
        for *_, pending in sent:
            try:
                replies.append(await pending)
            except (RedisError, OSError) as exc:
                replies.append(exc)
        found: list[bytes | None] = [None] * len(keys)
        for (shard, held, positions, _), reply in zip(sent, replies, strict=True):
            if isinstance(reply, BaseException):
                self._lost(shard.address, reply)
                continue
            first, *values = reply
            if redirected(first):  # the marker's slot is moving: this node's keys are absent
                continue
            if first != held:
                self._lost(shard.address, HistoryUnknown("redis lost its history marker"))
                continue
            for position, value in zip(positions, values, strict=True):
                if not isinstance(value, ResponseError):
                    found[position] = value
                elif str(value).startswith("MOVED"):  # its slot moved: absent, nothing lost
                    self._refresh_soon()
                # ASK: its slot is being migrated and the key moved already: absent
        return found

    async def write(self, writes: Sequence[Write], identity: bytes | None = None) -> None:
        """Versioned writes. Pinned (`identity`): only to the primaries it names, each to that
        very process; a write of any other primary's key is not sent (a reader's fill is only
        a copy; a replay writes what belongs to its own primary)."""
        if not writes:
            return
        layout = self.layout or await self.refresh()
        pins = None if identity is None else vouched(identity, ServerChanged)
        groups: dict[int, list[resp.Command]] = {}
        plain: dict[int, list[Write]] = {}
        unowned = False
        for write in writes:
            i = layout.owner[key_slot(write.key)]
            if i == 255:  # no primary serves it now (a failover under way)
                unowned = unowned or pins is None  # a writer's: reported once the rest is done
                continue
            if pins is not None and layout.shards[i].address not in pins:
                continue  # not a primary vouched for: not written
            shard = layout.shards[i]
            command = fill_command(write)
            if write.marker is not None:
                held = vouched(write.marker, HistoryUnknown).get(shard.address)
                if held is None:
                    continue
                k, v, value, ttl, _ = write
                command = ("EVAL", _MARKED_FILL, 1, k, v, value, ttl, held, shard.marker)
            groups.setdefault(i, []).append(command)
            plain.setdefault(i, []).append(write)

        async def one(i: int, commands: list[resp.Command]) -> list[Any]:
            shard = layout.shards[i]
            pin = None if pins is None else pins[shard.address]
            try:
                replies = await self._shard_client(shard).execute(*commands, identity=pin)
            except (RedisError, OSError) as exc:
                raise ShardLost(shard.address, exc) from exc
            for j, (write, reply) in enumerate(zip(plain[i], replies, strict=True)):
                if redirected(reply):
                    if write.marker is not None:
                        replies[j] = 0  # a reader's fill is only a copy: dropped
                    elif pin is not None:  # a replay: its slot moved meanwhile, start again
                        raise ServerChanged(f"redis cluster layout changed: {reply}")
                    else:
                        replies[j] = await self._redirect(fill_command(write), reply)
            if -1 in checked(replies):
                raise ShardLost(shard.address, HistoryUnknown("redis lost its history marker"))
            return replies

        found = await _each_group(one, groups, settle=True)
        failures = [f for f in found if isinstance(f, BaseException)]
        if pins is None and self.on_lost is not None:
            # A primary that missed a writer's tombstone is read no more until the change is
            # written to it again: every such primary is told, not only the first.
            for failure in failures:
                if isinstance(failure, ShardLost):
                    self.on_lost(failure)
        if failures:
            raise failures[0]
        if unowned:
            raise ConnectionError("no primary of the redis cluster serves a written key's slot")

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
        layout = self.layout or await self.refresh()
        shard = layout.shards[layout.shard(key)]
        held = vouched(marker, HistoryUnknown).get(shard.address)
        pin = vouched(identity, ServerChanged).get(shard.address)
        if held is None or pin is None:
            raise ShardLost(shard.address, HistoryUnknown("its history is not vouched for yet"))
        try:
            (first,) = checked(
                await self._shard_client(shard).execute(
                    ("EVAL", _ONCE, 1, key, shard.marker, held, until), identity=pin
                )
            )
        except ServerChanged as exc:
            raise ShardLost(shard.address, exc) from exc
        if first == -1:
            raise ShardLost(shard.address, HistoryUnknown("redis lost its history marker"))
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
    """Sharded pub/sub on the hub primary; its `server` is the cluster (`CLUSTER`).

    A failover of the hub primary ends the connection, a move of the hub's slot makes the
    server end the subscription: either way the listener subscribes again (promise 4)."""

    def __init__(self, cluster: ClusterRedis) -> None:
        self._cluster = cluster
        self._inner: resp.Subscription | None = None

    @property
    def server(self) -> resp.Server | None:
        return CLUSTER if self._inner is not None else None

    async def open(
        self, channels: Sequence[str], on_message: Callable[[bytes, bytes], None]
    ) -> asyncio.Future[None]:
        host, port = await self._cluster.hub()
        url = node_url(self._cluster.seeds[0], host, port)
        inner = self._inner = resp.Subscription(url, self._cluster.timeout, sharded=True)
        prefix = len(HUB_TAG)
        return await inner.open(
            [_tagged(c).decode() for c in channels],
            lambda channel, data: on_message(channel[prefix:], data),
        )

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()


class ClusterNode(HistoryOps):
    """The history operations (introspect/history.py) on one primary, with its copy of the
    marker and lock under the hash tag it serves now."""

    def __init__(self, cluster: ClusterRedis, address: str) -> None:
        self._cluster = cluster
        self.address = address
        host, _, port = address.rpartition(":")
        self.client = cluster.client(host, int(port))

    def keys(self) -> tuple[bytes, bytes]:
        layout = self._cluster.layout
        for shard in () if layout is None else layout.shards:
            if shard.address == self.address:
                return shard.marker, shard.lock
        raise ShardLost(self.address, ConnectionError("no longer a primary of the cluster"))


async def _each_group(
    one: Callable[[int, list[T]], Awaitable[list[Any]]],
    groups: dict[int, list[T]],
    *,
    settle: bool = False,
) -> list[Any]:
    """`one` for every (shard, group), at once; the results in order (one group: no task).
    With `settle`, each group's failure is its result, once every group is done."""
    if len(groups) == 1:
        ((i, group),) = groups.items()
        if not settle:
            return [await one(i, group)]
        try:
            return [await one(i, group)]
        except (RedisError, OSError) as exc:
            return [exc]
    found: list[Any] = await asyncio.gather(
        *(one(i, group) for i, group in groups.items()), return_exceptions=settle
    )
    return found


def _tagged(name: str | bytes) -> bytes:
    """A channel or list name under the hub tag."""
    return HUB_TAG + (name.encode() if isinstance(name, str) else name)


def _retrieved(task: asyncio.Task[Layout]) -> None:
    """A layout asked in the background: its failure is seen by the next one asked."""
    if not task.cancelled():
        task.exception()


def _owns(owner: bytes | bytearray, shard: int, slot: int) -> bool:
    return owner[slot] == shard


def _address(url: str) -> tuple[str, int]:
    endpoint = resp.Endpoint.from_url(url)
    return endpoint.host, endpoint.port
