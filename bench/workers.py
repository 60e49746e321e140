"""Talking to each server worker on purpose: revocation propagation and filling the caches.

SO_REUSEPORT gives each new connection to one worker, and keeps it there.
Opening connections until each worker holds some (checked in /proc: which
worker's fds hold the server end of each connection) gives the bench a way
to reach every worker's in-process cache deliberately.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench.http import Connection, basic_auth, form_request, request_head
from bench.loadgen import percentiles_ms
from bench.procs import worker_of
from bench.seed import Registered

INACTIVE = b'{"active":false}'
MAX_CONNECTIONS = 256
POLL = 0.001  # seconds between two probes of a worker that still answers active
FILL_CONNECTIONS = 16  # per worker: the fill goes at the cold path's speed, batched lookups help


async def pinned_connections(
    host: str, port: int, workers: Sequence[int], per_worker: int
) -> dict[int, list[Connection]]:
    """At least `per_worker` connections to each worker, by pid (extra ones are closed)."""
    pinned: dict[int, list[Connection]] = {pid: [] for pid in workers}
    for _ in range(MAX_CONNECTIONS):
        if all(len(c) >= per_worker for c in pinned.values()):
            return pinned
        conn = await Connection.open(host, port)
        # The server end shows up in the worker's fds once it accepted; give it a moment.
        owner = None
        for _attempt in range(50):
            owner = worker_of(port, conn.local_port, workers)
            if owner is not None:
                break
            await asyncio.sleep(0.01)
        if owner is None or len(pinned[owner]) >= per_worker:
            conn.close()
            continue
        pinned[owner].append(conn)
    for conns in pinned.values():
        for conn in conns:
            conn.close()
    raise RuntimeError(f"could not reach every worker with {MAX_CONNECTIONS} connections")


@dataclass(slots=True)
class Propagation:
    """Revocation as the bench measured it, in milliseconds."""

    revocations: int
    revoke_ms: dict[str, float]
    propagation_ms: dict[str, float]
    stale_after_return: int  # active answers to requests sent after /revoke returned
    not_warm: int  # probes that did not see the credential active before the revocation
    errors: int
    workers_probed: int


async def _until_inactive(conn: Connection, ask: bytes) -> tuple[float, int]:
    """Introspect until inactive: when the inactive answer came, and how many active ones."""
    active = 0
    while True:
        _status, body = await conn.send(ask)
        if body == INACTIVE:
            return time.perf_counter(), active
        active += 1
        await asyncio.sleep(POLL)


class _Client:
    def __init__(self, host: str, port: int, path: str, who: Registered) -> None:
        self.head = request_head(
            "POST", host, port, path, {"Authorization": basic_auth(who.client_id, who.secret)}
        )

    def request(self, token: str) -> bytes:
        return form_request(self.head, b"token=" + token.encode())


async def revocations(
    host: str,
    port: int,
    workers: Sequence[int],
    resource_server: Registered,
    apps: Sequence[Registered],
    tokens: Sequence[tuple[str, int]],
    per_worker: int = 1,
    on_progress: Callable[[int], None] | None = None,
    others: Sequence[tuple[int, Sequence[int]]] = (),
) -> Propagation:
    """Revoke each (token, owner app index) once every worker caches it; time until all say so.

    Per credential: every probe connection introspects it (so each worker
    holds it in its in-process cache); then the owner POSTs /revoke; as soon
    as that returns, every probe asks again, and any worker still answering
    active is asked again every millisecond until it answers inactive. Revoke
    latency is the /revoke call; propagation runs from sending /revoke until
    the last worker answered inactive. Since /revoke returns only once every
    worker acknowledged the invalidation, an active answer after it returned
    breaks SPEC promise 2: those are counted. The probes stay idle while
    /revoke runs, so they do not slow down what they measure. With `others`
    (the port and worker pids of more instances), their workers are probed too.
    """
    pinned = await pinned_connections(host, port, workers, per_worker)
    for other_port, other_workers in others:  # more instances: their workers are probed too
        pinned.update(await pinned_connections(host, other_port, other_workers, per_worker))
    probes = [conn for conns in pinned.values() for conn in conns]
    introspect = _Client(host, port, "/introspect", resource_server)
    owners = [_Client(host, port, "/revoke", app) for app in apps]
    revoker = await Connection.open(host, port)
    revoke_us: list[int] = []
    propagation_us: list[int] = []
    stale = not_warm = errors = 0
    try:
        for done, (token, owner) in enumerate(tokens):
            ask = introspect.request(token)
            answers = await asyncio.gather(*(p.send(ask) for p in probes))
            not_warm += sum(1 for status, body in answers if status != 200 or body == INACTIVE)
            started = time.perf_counter()
            status, _ = await revoker.send(owners[owner].request(token))
            returned = time.perf_counter()
            if status != 200:
                errors += 1
            try:
                seen = await asyncio.wait_for(
                    asyncio.gather(*(_until_inactive(p, ask) for p in probes)), timeout=5.0
                )
            except TimeoutError:
                errors += 1
                break  # a probe connection now has a request in flight: stop here
            stale += sum(n for _, n in seen)
            revoke_us.append(int((returned - started) * 1e6))
            propagation_us.append(int((max(t for t, _ in seen) - started) * 1e6))
            if on_progress is not None:
                on_progress(done + 1)
    finally:
        revoker.close()
        for conn in probes:
            conn.close()
    return Propagation(
        revocations=len(revoke_us),
        revoke_ms=percentiles_ms(revoke_us),
        propagation_ms=percentiles_ms(propagation_us),
        stale_after_return=stale,
        not_warm=not_warm,
        errors=errors,
        workers_probed=len(pinned),
    )


async def fill_local_caches(
    host: str,
    port: int,
    workers: Sequence[int],
    resource_server: Registered,
    tokens: Sequence[str],
    per_worker: int,
    deadline: float,
    on_progress: Callable[[int], None] | None = None,
    same: bool = False,
) -> dict[int, int]:
    """Introspect `per_worker` distinct credentials at each worker; how many each got.

    Each answer goes into that worker's in-process cache, so after this every
    worker's cache holds `per_worker` entries (or is full, if that is more
    than its size). Each worker gets credentials of its own, or with `same`
    the same ones, the first `per_worker`. Stops at `deadline`
    (time.monotonic()) if not done.
    """
    pinned = await pinned_connections(host, port, workers, FILL_CONNECTIONS)
    introspect = _Client(host, port, "/introspect", resource_server)
    sent = dict.fromkeys(pinned, 0)
    total = 0

    async def drive(pid: int, conn: Connection, mine: Sequence[str]) -> None:
        nonlocal total
        for token in mine:
            if time.monotonic() > deadline:
                return
            status, _ = await conn.send(introspect.request(token))
            if status == 200:
                sent[pid] += 1
            total += 1
            if on_progress is not None and total % 1000 == 0:
                on_progress(total)

    jobs = []
    for n, (pid, conns) in enumerate(pinned.items()):
        share = tokens[:per_worker] if same else tokens[n * per_worker : (n + 1) * per_worker]
        jobs += [drive(pid, conn, share[i :: len(conns)]) for i, conn in enumerate(conns)]
    try:
        await asyncio.gather(*jobs)
    finally:
        for conns in pinned.values():
            for conn in conns:
                conn.close()
    return sent
