"""Two `introspect serve` instances x 2 workers on a 3+3 Valkey Cluster (SPEC: Scale-out).

The consistency promises hold across instances (7): a change made on one is
seen by every worker of both before it returns; a primary killed under load
(its replica promoted) and a slot moved under load never bring back an old
state, never cost a 5xx, and the instances use the cluster again without a
restart (6).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from redis.crc import key_slot

from introspect import credentials
from introspect.admin import create_admin_key
from introspect.cache import KEY_PREFIX, client_key
from introspect.config import Settings
from introspect.embedded.cluster import DevCluster, Node
from introspect.service import Authority
from tests.helpers import (
    Registered,
    eventually,
    post_form,
    register,
    revoke_during_storm,
    serve_subprocess,
)

INSTANCES = 2
WORKERS = 2
ROUNDS = 20
# Revocations made after a slot move, 0.2 s apart: past every worker's once-a-second watch.
AFTER_MOVE = 8


@pytest.fixture(scope="module")
def bases(
    settings: Settings, cluster_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[str]]:
    """Two instances (standing in for hosts) sharing the session's Postgres and cluster."""
    extra = {"INTROSPECT_REDIS_URL": cluster_url, "INTROSPECT_REDIS_CLUSTER": "true"}
    with contextlib.ExitStack() as stack:
        envs = [
            stack.enter_context(
                serve_subprocess(
                    settings, tmp_path_factory.mktemp(f"instance{i}"), workers=WORKERS, extra=extra
                )
            )
            for i in range(INSTANCES)
        ]
        yield [env["BASE"] for env in envs]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # A new connection per request, so the kernel spreads requests over every worker.
    connector = aiohttp.TCPConnector(limit=200, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


@pytest.fixture
async def bearer(authority: Authority) -> dict[str, str]:
    key = (await create_admin_key(authority, "test", {"name": "cluster"}))["key"]
    return {"Authorization": f"Bearer {key}"}


async def test_no_worker_of_either_instance_answers_active_after_revoke_returns(
    bases: list[str], authority: Authority, http: aiohttp.ClientSession
) -> None:
    """200 introspections in flight over both instances while one revokes, 20 times."""
    app = await register(authority)
    rs = await register(authority, scopes=(), can_introspect=True)
    for _ in range(ROUNDS):
        await revoke_during_storm(http, bases, app, rs)


async def test_a_patch_on_one_instance_is_seen_by_every_worker_of_both(
    bases: list[str], authority: Authority, http: aiohttp.ClientSession, bearer: dict[str, str]
) -> None:
    """After PATCH of an API key on one instance returns, both answer the new scopes."""
    rs = await register(authority, scopes=(), can_introspect=True)
    async with http.post(
        f"{bases[0]}/admin/api-keys",
        json={"sub": "cluster-user", "scopes": ["old"]},
        headers=bearer,
    ) as resp:
        assert resp.status == 201, await resp.text()
        created = await resp.json()
    form = {"token": created["key"]}
    warm = await introspect_everywhere(http, bases, form, rs, 40)
    assert all(body["scope"] == "old" for body in warm)
    async with http.patch(
        f"{bases[1]}/admin/api-keys/{created['id']}", json={"scopes": ["new"]}, headers=bearer
    ) as resp:
        assert resp.status == 200, await resp.text()
    after = await introspect_everywhere(http, bases, form, rs, 80)
    assert all(body["scope"] == "new" for body in after)


async def test_a_client_disabled_on_one_instance_is_inactive_on_both(
    bases: list[str], authority: Authority, http: aiohttp.ClientSession, bearer: dict[str, str]
) -> None:
    """Disabling a client on one instance makes its tokens inactive on every worker of both,
    and the change counts every worker of both as a listener."""
    app = await register(authority)
    rs = await register(authority, scopes=(), can_introspect=True)
    _, tok = await post_form(http, f"{bases[0]}/token", {"grant_type": "client_credentials"}, app)
    form = {"token": tok["access_token"]}
    assert all(b["active"] for b in await introspect_everywhere(http, bases, form, rs, 40))
    async with http.patch(
        f"{bases[1]}/admin/clients/{app.client_id}", json={"disabled": True}, headers=bearer
    ) as resp:
        assert resp.status == 200, await resp.text()
    assert all(not b["active"] for b in await introspect_everywhere(http, bases, form, rs, 80))
    async with http.post(
        f"{bases[0]}/admin/revocations", json={"client_id": app.client_id}, headers=bearer
    ) as resp:
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["listeners"] == INSTANCES * WORKERS


async def test_readiness_names_every_primary_of_the_cluster(
    bases: list[str], http: aiohttp.ClientSession
) -> None:
    """/readyz of an instance on a cluster says, per primary, whether it is reachable."""
    await eventually(lambda: redis_ok_everywhere(http, bases), within=30)
    for base in bases:
        async with http.get(f"{base}/readyz") as resp:
            body = await resp.json()
        assert len(body["redis_nodes"]) == 3
        assert set(body["redis_nodes"].values()) == {"reachable"}


async def introspect_everywhere(
    http: aiohttp.ClientSession,
    bases: list[str],
    form: dict[str, str],
    rs: Registered,
    count: int,
) -> list[dict[str, Any]]:
    """`count` introspections spread over the instances, at once; their answers."""
    answers = await asyncio.gather(
        *(post_form(http, f"{bases[i % len(bases)]}/introspect", form, rs) for i in range(count))
    )
    return [body for _, body in answers]


class Load:
    """Introspections of some tokens over both instances, in a loop, every answer recorded."""

    def __init__(self, http: aiohttp.ClientSession, bases: list[str], rs: Registered) -> None:
        self.http, self.bases, self.rs = http, bases, rs
        # (sent, token, HTTP status, active)
        self.answers: list[tuple[float, str, int, bool | None]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self, tokens: list[str]) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(tokens))

    async def stop(self) -> None:
        if self._task is None:  # never started
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _one(self, base: str, token: str) -> None:
        sent = time.monotonic()
        async with self.http.post(
            f"{base}/introspect", data={"token": token}, headers=self.rs.auth
        ) as resp:
            active = (await resp.json())["active"] if resp.status == 200 else None
            self.answers.append((sent, token, resp.status, active))

    async def _run(self, tokens: list[str]) -> None:
        while True:
            await asyncio.gather(*(self._one(b, t) for b in self.bases for t in tokens))

    def stale(self, revoked: dict[str, float]) -> list[tuple[float, str, int, bool | None]]:
        """Answers sent after their token's revocation returned that still say active."""
        return [a for a in self.answers if a[1] in revoked and a[0] > revoked[a[1]] and a[3]]

    def failed(self) -> list[tuple[float, str, int, bool | None]]:
        return [a for a in self.answers if a[2] != 200]


async def tokens_on_one_node(
    http: aiohttp.ClientSession,
    bases: list[str],
    app: Registered,
    settings: Settings,
    cluster: DevCluster,
    count: int,
) -> tuple[Node, list[str]]:
    """`count` fresh tokens whose cache entries live on the same primary, and that primary."""
    by_node: dict[int, list[str]] = {}
    while True:
        _, tok = await post_form(
            http, f"{bases[0]}/token", {"grant_type": "client_credentials"}, app
        )
        token = tok["access_token"]
        key = KEY_PREFIX + credentials.keyed_hash(settings.secrets[0], token)
        node = cluster.primary_of_slot(key_slot(key))
        found = by_node.setdefault(node.port, [])
        found.append(token)
        if len(found) == count:
            return node, found


async def revoke(http: aiohttp.ClientSession, base: str, token: str, app: Registered) -> float:
    """Revoke on one instance (RFC 7009); when the call returned."""
    await post_form(http, f"{base}/revoke", {"token": token}, app)
    return time.monotonic()


async def redis_ok_everywhere(http: aiohttp.ClientSession, bases: list[str]) -> bool:
    """Every instance's workers (asked a few times each) use Redis again."""
    for base in bases * 2 * WORKERS:
        async with http.get(f"{base}/readyz") as resp:
            if (await resp.json())["redis"] != "ok":
                return False
    return True


async def test_killing_the_hot_primary_under_load_serves_no_stale_answer_and_no_5xx(
    bases: list[str],
    authority: Authority,
    http: aiohttp.ClientSession,
    settings: Settings,
    valkey_cluster: DevCluster,
) -> None:
    """SIGKILL the primary holding the hot tokens' entries, revoking before and during the
    failover: no answer after a revocation returned is active, none is a 5xx, and both
    instances use the cluster again (its replica promoted) without a restart."""
    app = await register(authority)
    rs = await register(authority, scopes=(), can_introspect=True)
    node, tokens = await tokens_on_one_node(http, bases, app, settings, valkey_cluster, 4)
    for token in tokens:
        await introspect_everywhere(http, bases, {"token": token}, rs, 8)
    load = Load(http, bases, rs)
    revoked = {tokens[0]: await revoke(http, bases[0], tokens[0], app)}
    load.start(tokens)
    try:
        await asyncio.sleep(0.3)
        await asyncio.to_thread(valkey_cluster.kill, node)
        revoked[tokens[1]] = await revoke(http, bases[1], tokens[1], app)
        await asyncio.sleep(0.5)
        revoked[tokens[2]] = await revoke(http, bases[0], tokens[2], app)
        await eventually(lambda: asyncio.to_thread(valkey_cluster.healthy), within=30)
        await eventually(lambda: redis_ok_everywhere(http, bases), within=30)
        revoked[tokens[3]] = await revoke(http, bases[1], tokens[3], app)
        await asyncio.sleep(0.3)
    finally:
        await load.stop()
        await asyncio.to_thread(restart, valkey_cluster, node)
    assert len(load.answers) > 100
    assert load.failed() == []
    assert load.stale(revoked) == []


async def test_a_failed_primary_sends_only_its_own_slots_to_postgres(
    bases: list[str],
    authority: Authority,
    http: aiohttp.ClientSession,
    settings: Settings,
    valkey_cluster: DevCluster,
) -> None:
    """SIGKILL the primary serving credential A's entry while credential B's (and the
    clients' records) live on others: once every worker met the loss, B is answered by the
    in-process cache or Redis (no miss read from Postgres, by /metrics), A from Postgres,
    correctly (revoked before and during the failover: inactive; live: active), no 5xx, and
    both instances use every primary again without a restart once the replica is promoted."""
    app = await register(authority)
    rs = await register(authority, scopes=(), can_introspect=True)
    records = {
        valkey_cluster.primary_of_slot(key_slot(KEY_PREFIX + client_key(c.client_id))).port
        for c in (app, rs)
    }
    node, a_tokens, b_token = await tokens_apart(
        http, bases, app, settings, valkey_cluster, records
    )
    for token in [*a_tokens, b_token]:
        await introspect_everywhere(http, bases, {"token": token}, rs, 8)
    revoked = {a_tokens[0]: await revoke(http, bases[0], a_tokens[0], app)}
    load = Load(http, bases, rs)
    try:
        await asyncio.to_thread(valkey_cluster.kill, node)
        await eventually(lambda: loss_seen_everywhere(http, bases), within=30)
        await asyncio.sleep(FLUSHED)
        before = await layers(http, bases)
        answers = await introspect_everywhere(http, bases, {"token": b_token}, rs, 40)
        await asyncio.sleep(FLUSHED)
        after = await layers(http, bases)
        assert all(body["active"] for body in answers)
        # Every one answered by the in-process cache or Redis: no miss went to Postgres.
        assert after["hits local"] + after["misses local"] == (
            before["hits local"] + before["misses local"] + 40
        )
        assert after["misses local"] - after["hits redis"] == (
            before["misses local"] - before["hits redis"]
        )
        load.start(a_tokens)
        revoked[a_tokens[1]] = await revoke(http, bases[1], a_tokens[1], app)
        await eventually(lambda: asyncio.to_thread(valkey_cluster.healthy), within=30)
        await eventually(lambda: redis_ok_everywhere(http, bases), within=30)
        await asyncio.sleep(0.3)
    finally:
        await load.stop()
        await asyncio.to_thread(restart, valkey_cluster, node)
    assert len(load.answers) > 20
    assert load.failed() == []
    assert load.stale(revoked) == []
    assert all(a[3] for a in load.answers if a[1] == a_tokens[2])


# Past every worker's flush of its counters into /metrics (introspect/metrics.py).
FLUSHED = 1.2


async def tokens_apart(
    http: aiohttp.ClientSession,
    bases: list[str],
    app: Registered,
    settings: Settings,
    cluster: DevCluster,
    avoid: set[int],
) -> tuple[Node, list[str], str]:
    """A primary whose port is not in `avoid`, 3 fresh tokens whose entries live on it, and
    one whose entry lives on another."""
    on: dict[int, list[str]] = {}
    while True:
        token = await issue(http, bases[0], app)
        key = KEY_PREFIX + credentials.keyed_hash(settings.secrets[0], token)
        on.setdefault(cluster.primary_of_slot(key_slot(key)).port, []).append(token)
        for port, tokens in on.items():
            others = [t for p, ts in on.items() if p != port for t in ts]
            if port not in avoid and len(tokens) >= 3 and others:
                return next(n for n in cluster.nodes if n.port == port), tokens[:3], others[0]


async def loss_seen_everywhere(http: aiohttp.ClientSession, bases: list[str]) -> bool:
    """Every instance's workers (asked a few times each) no longer use every primary."""
    for base in bases * 2 * WORKERS:
        async with http.get(f"{base}/readyz") as resp:
            if (await resp.json())["redis"] == "ok":
                return False
    return True


async def layers(http: aiohttp.ClientSession, bases: list[str]) -> dict[str, float]:
    """Every instance's cache hits and misses by layer so far (`hits local`...): an
    introspection hits or misses the in-process layer, and a miss Redis does not answer
    (a hit there) is read from Postgres."""
    found = dict.fromkeys(("hits local", "misses local", "hits redis", "misses redis"), 0.0)
    for base in bases:
        async with http.get(f"{base}/metrics") as resp:
            for line in (await resp.text()).splitlines():
                for name in found:
                    kind, layer = name.split()
                    if line.startswith(f'introspect_cache_{kind}_total{{layer="{layer}"}} '):
                        found[name] += float(line.split()[-1])
    return found


def restart(cluster: DevCluster, node: Node) -> None:
    """Start a killed node again: it rejoins as a replica of its promoted one."""
    cluster.start_node(node)
    deadline = time.monotonic() + 30
    while not cluster.healthy():
        assert time.monotonic() < deadline, "the restarted node did not rejoin"
        time.sleep(0.1)


async def test_moving_the_hot_slot_under_load_serves_no_stale_answer_and_loses_nothing(
    bases: list[str],
    authority: Authority,
    http: aiohttp.ClientSession,
    settings: Settings,
    valkey_cluster: DevCluster,
    bearer: dict[str, str],
) -> None:
    """Move the slot of a hot token to another primary (SETSLOT MIGRATING/IMPORTING, MIGRATE,
    SETSLOT NODE) under load, revoking before, while its keys are half moved and after: no
    stale answer, no 5xx, and every revocation reaches every worker of both instances (a slot
    moved between two healthy primaries loses nothing: no worker stops listening for it)."""
    app = await register(authority)
    rs = await register(authority, scopes=(), can_introspect=True)
    source, tokens = await tokens_on_one_node(http, bases, app, settings, valkey_cluster, 1)
    hot = tokens[0]
    others = [await issue(http, bases[0], app) for _ in range(AFTER_MOVE + 1)]
    slot = key_slot(KEY_PREFIX + credentials.keyed_hash(settings.secrets[0], hot))
    await introspect_everywhere(http, bases, {"token": hot}, rs, 8)
    load = Load(http, bases, rs)
    load.start([hot, *others])
    revoked: dict[str, float] = {}
    listeners: dict[str, int] = {}

    async def admin_revoke(token: str) -> None:
        async with http.post(
            f"{bases[1]}/admin/revocations", json={"token": token}, headers=bearer
        ) as resp:
            assert resp.status == 200, await resp.text()
            body = await resp.json()
        revoked[token] = time.monotonic()
        listeners[token] = body["listeners"]
        assert body["revoked"] == 1

    async def every_worker_listens() -> bool:  # run first: a worker may still be subscribing
        async with http.post(
            f"{bases[1]}/admin/revocations",
            json={"token": await issue(http, bases[0], app)},
            headers=bearer,
        ) as resp:
            return bool((await resp.json())["listeners"] == INSTANCES * WORKERS)

    await eventually(every_worker_listens, within=30)
    try:
        await asyncio.sleep(0.2)
        await admin_revoke(others[0])
        target = await asyncio.to_thread(begin_moving, valkey_cluster, slot, source)
        await admin_revoke(hot)  # its entry is on the target now: the tombstone follows ASK
        await asyncio.to_thread(finish_moving, valkey_cluster, slot, target)
        # Every worker sees the new layout within its once-a-second watch: revoke all along.
        for token in others[1:]:
            await admin_revoke(token)
            await asyncio.sleep(0.2)
    finally:
        await load.stop()
    assert load.failed() == []
    assert load.stale(revoked) == []
    assert list(listeners.values()) == [INSTANCES * WORKERS] * len(listeners)


async def issue(http: aiohttp.ClientSession, base: str, app: Registered) -> str:
    """A fresh access token of `app`."""
    _, tok = await post_form(http, f"{base}/token", {"grant_type": "client_credentials"}, app)
    return str(tok["access_token"])


def begin_moving(cluster: DevCluster, slot: int, source: Node) -> Node:
    """Mark `slot` migrating from `source` to another primary and move its keys; the target."""
    target = next(
        n
        for n in cluster.nodes
        if n.alive and n is not source and cluster.command(n, "ROLE")[0] == b"master"
    )
    source_id = cluster.command(source, "CLUSTER", "MYID").decode()
    target_id = cluster.command(target, "CLUSTER", "MYID").decode()
    cluster.command(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
    cluster.command(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
    keys = cluster.command(source, "CLUSTER", "GETKEYSINSLOT", slot, 1000)
    cluster.command(
        source, "MIGRATE", "127.0.0.1", target.port, "", 0, 5000,
        "AUTH", cluster.password, "KEYS", *keys,
    )  # fmt: skip
    return target


def finish_moving(cluster: DevCluster, slot: int, target: Node) -> None:
    """Give `slot` to `target` on every primary."""
    target_id = cluster.command(target, "CLUSTER", "MYID").decode()
    for node in cluster.nodes:
        if node.alive and cluster.command(node, "ROLE")[0] == b"master":
            cluster.command(node, "CLUSTER", "SETSLOT", slot, "NODE", target_id)
