"""Floods of cheap requests while a resource server introspects a hot token (issue 13, 4 and 5).

Two phases against `introspect serve` (2 workers, embedded stores under a
temp dir, loopback only), each measured against the same hot load alone
just before it:

* `revoke`: 20,000 `/revoke` calls at concurrency 64 from a client with no
  scopes, each with a random token that passes the public checksum. None
  matches a credential of the caller, so none may write a row or publish
  an invalidation.
* `token`: 20,000 `/token` calls at concurrency 64 with random client ids
  of our shape (the ones that cost a lookup). They may cost one read each,
  but no write, and must not push the resource server's client out of the
  workers' memory.

Printed per phase: the hot path's throughput, p99 and in-process hit rate
before and during the flood; Redis `connected_clients` (highest sample);
Postgres rows written (outbox ids taken, audit rows, credentials revoked)
and WAL bytes; invalidations published; Postgres queries per flood call.
Run: `python -m bench.drills floods`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import redis.asyncio as redis

from bench import loadgen, procs
from bench.http import Connection, HttpError, basic_auth, form_request, request_head
from bench.loadgen import Load, percentiles_ms
from bench.scrape import Delta, scrape
from introspect import credentials, embedded
from introspect.config import load_settings
from introspect.credentials import Kind
from introspect.rfc6749 import Grant
from introspect.server import apply_migrations
from introspect.service import open_authority

HOST = "127.0.0.1"
WORKERS = 2
FLOOD = 20_000
CONTROL = 5_000  # calls of the control flood: long enough to measure the hot path during it
CONCURRENCY = 64
GENERATORS = 2  # load generator processes of a flood
HOT_CONNECTIONS = 8
HOT_TIMEOUT = 10.0  # seconds a hot introspection may take before it counts as failed
BASELINE = 5.0  # seconds of hot load alone before each flood
FLOOD_LIMIT = 90.0  # seconds a flood may take
SCRAPE_SETTLE = 1.5  # the server flushes its counters to /metrics once a second
SAMPLE_INTERVAL = 0.1
# The verdict: what the hot path must keep while a flood runs.
MIN_HIT_RATE = 0.99
MIN_THROUGHPUT_SHARE = 0.5  # of the hot path's rate during the control flood
EXTRA_REDIS_CLIENTS = 2


@dataclass(frozen=True, slots=True)
class Cast:
    """The clients of the drill and the hot token."""

    rs_auth: str
    flooder_auth: str
    hot_token: str


@dataclass(slots=True)
class Stores:
    """What the drill reads of Postgres: rows written, WAL bytes."""

    outbox_ids: int
    audit_rows: int
    revoked: int
    wal: int

    @classmethod
    async def read(cls, conn: asyncpg.Connection) -> Stores:
        """The figures now."""
        row = await conn.fetchrow(
            "SELECT (SELECT last_value FROM pg_sequences"
            "   WHERE sequencename = 'invalidation_outbox_id_seq') AS outbox_ids,"
            " (SELECT count(*) FROM audit_log) AS audit_rows,"
            " (SELECT count(*) FROM credentials WHERE revoked_at IS NOT NULL) AS revoked,"
            " pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint AS wal"
        )
        return cls(
            outbox_ids=row["outbox_ids"] or 0,
            audit_rows=row["audit_rows"],
            revoked=row["revoked"],
            wal=row["wal"],
        )

    def minus(self, before: Stores) -> Stores:
        """What changed since `before`."""
        return Stores(
            outbox_ids=self.outbox_ids - before.outbox_ids,
            audit_rows=self.audit_rows - before.audit_rows,
            revoked=self.revoked - before.revoked,
            wal=self.wal - before.wal,
        )

    @property
    def rows(self) -> int:
        """Rows written: outbox, audit, revocations."""
        return self.outbox_ids + self.audit_rows + self.revoked


@dataclass(slots=True)
class Window:
    """The hot load over one window, and what the server and the stores did meanwhile."""

    answered: int
    failures: int
    seconds: float
    p99_ms: float
    hit_rate: float | None
    redis_clients: int
    counters: Delta
    stores: Stores

    @property
    def rate(self) -> float:
        """Hot introspections answered per second."""
        return self.answered / self.seconds if self.seconds else 0.0

    def line(self, label: str) -> str:
        """The window's hot-path figures on one line."""
        hits = "n/a" if self.hit_rate is None else f"{self.hit_rate:.2%}"
        return (
            f"  {label:<7} hot path {self.rate:8,.0f} req/s  p99 {self.p99_ms:6.1f} ms"
            f"  in-process hits {hits}  redis clients <= {self.redis_clients}"
            f"  failed {self.failures}"
        )


@dataclass(slots=True)
class HotAnswers:
    """What the hot load got: each active answer's time (time.perf_counter()) and latency in
    microseconds, and every other outcome (not active, an error status, no answer in time)."""

    answers: list[tuple[float, int]]
    failures: int = 0


async def hot_load(request: bytes, port: int, stop: asyncio.Event) -> HotAnswers:
    """Introspect the hot token on HOT_CONNECTIONS connections until `stop`."""
    got = HotAnswers(answers=[])

    async def one() -> None:
        conn = await Connection.open(HOST, port)
        try:
            while not stop.is_set():
                started = time.perf_counter()
                try:
                    status, body = await asyncio.wait_for(conn.send(request), HOT_TIMEOUT)
                except (TimeoutError, HttpError, OSError):
                    got.failures += 1
                    conn.close()
                    conn = await Connection.open(HOST, port)
                    continue
                done = time.perf_counter()
                if status == 200 and body.startswith(b'{"active":true'):
                    got.answers.append((done, int((done - started) * 1e6)))
                else:
                    got.failures += 1
        finally:
            conn.close()

    await asyncio.gather(*(one() for _ in range(HOT_CONNECTIONS)))
    return got


@contextlib.asynccontextmanager
async def redis_sampler(url: str) -> AsyncIterator[list[int]]:
    """Samples of Redis `connected_clients` every SAMPLE_INTERVAL while the block runs."""
    client = redis.Redis.from_url(url)
    samples: list[int] = []

    async def sample() -> None:
        while True:
            samples.append(int((await client.info("clients"))["connected_clients"]))
            await asyncio.sleep(SAMPLE_INTERVAL)

    task = asyncio.get_running_loop().create_task(sample())
    try:
        yield samples
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.aclose()


Flood = Callable[[Callable[[float, int], None]], loadgen.Outcome]


async def window(
    port: int, rd: str, conn: asyncpg.Connection, hot: bytes, during: Flood | None
) -> tuple[Window, loadgen.Outcome | None]:
    """Run the hot load for BASELINE seconds, or while `during` (a blocking flood) runs; the
    hot path is measured from the flood's first request to its last answer."""
    before, stores_before = await scrape(HOST, port), await Stores.read(conn)
    stop = asyncio.Event()
    async with redis_sampler(rd) as samples:
        start = time.perf_counter()
        load = asyncio.get_running_loop().create_task(hot_load(hot, port, stop))
        result = None
        if during is None:
            await asyncio.sleep(BASELINE)
        else:
            began: list[float] = []

            def progress(elapsed: float, _answers: int) -> None:
                if not began:  # `elapsed` runs from the moment the generators were let go
                    began.append(time.perf_counter() - elapsed)

            result = await asyncio.to_thread(during, progress)
            start = began[0] if began else start
        end = time.perf_counter()
        stop.set()
        got = await load
    inside = [latency for at, latency in got.answers if start <= at <= end]
    answered, latencies, seconds = len(inside), inside, end - start
    await asyncio.sleep(SCRAPE_SETTLE)
    counters = Delta(before, await scrape(HOST, port))
    hits = counters.total("introspect_cache_hits_total", layer="local")
    misses = counters.total("introspect_cache_misses_total", layer="local")
    return Window(
        answered=answered,
        failures=got.failures,
        seconds=seconds,
        p99_ms=percentiles_ms(latencies).get("p99", 0.0),
        hit_rate=hits / (hits + misses) if hits + misses else None,
        redis_clients=max(samples, default=0),
        counters=counters,
        stores=(await Stores.read(conn)).minus(stores_before),
    ), result


def flood(port: int, path: str, headers: dict[str, str], bodies: list[bytes], work: Path) -> Flood:
    """A blocking function sending each body once at CONCURRENCY (for `window`)."""
    file = work / f"bodies-{secrets.token_hex(4)}.txt"
    file.write_bytes(b"\n".join(bodies) + b"\n")
    load = Load(
        host=HOST,
        port=port,
        path=path,
        headers=headers,
        bodies=file,
        connections=CONCURRENCY,
        duration=FLOOD_LIMIT,
        wrap=False,
    )
    return lambda progress: loadgen.run(load, GENERATORS, progress)


@dataclass(frozen=True, slots=True)
class Phase:
    """One flood: where it goes, its bodies, the answer each must get, and its control: as
    many calls of the same route that are refused before any I/O (the yardstick)."""

    name: str
    path: str
    headers: dict[str, str]
    bodies: list[bytes]
    control: list[bytes]
    expect: str
    max_queries: float  # Postgres queries per call, at most


def statuses(outcome: loadgen.Outcome) -> dict[str, int]:
    """A flood's answers by status (transport failures by kind)."""
    return ({"status 200": outcome.ok} if outcome.ok else {}) | outcome.errors


def report(
    phase: Phase, quiet: Window, control: Window, loud: Window, outcome: loadgen.Outcome
) -> bool:
    """Print a phase's figures and its verdict line; whether it passed."""
    answers = statuses(outcome)
    count = sum(answers.values())
    queries = loud.counters.total("introspect_pg_queries_total")
    published = loud.counters.total("introspect_invalidations_sent_total")
    print(
        f"  flood   {count:,} {phase.path} in {outcome.duration:.1f} s"
        f" ({count / outcome.duration:,.0f}/s), answers {answers}"
    )
    print(quiet.line("alone"))
    print(control.line("control"))
    print(loud.line("flood"))
    share = loud.rate / control.rate if control.rate else 0.0
    stores = loud.stores
    print(
        f"  hot path during the flood: {share:.0%} of its rate during the control;"
        f" postgres rows written {stores.rows} (outbox ids {stores.outbox_ids},"
        f" audit {stores.audit_rows}, revoked {stores.revoked}), WAL {stores.wal:,} bytes;"
        f" invalidations published {published:.0f};"
        f" postgres queries {queries:,.0f} ({queries / len(phase.bodies):.2f} per call)"
    )
    failures = []
    if answers != {phase.expect: len(phase.bodies)}:
        failures.append(f"flood answered {answers}, not {phase.expect} to each")
    if loud.failures:
        failures.append(f"{loud.failures} hot introspections failed or timed out")
    if stores.rows:
        failures.append(f"{stores.rows} rows written")
    if published:
        failures.append(f"{published:.0f} invalidations published")
    if loud.hit_rate is None or loud.hit_rate < MIN_HIT_RATE:
        failures.append(f"in-process hit rate {loud.hit_rate or 0:.2%} under {MIN_HIT_RATE:.0%}")
    if loud.redis_clients > quiet.redis_clients + EXTRA_REDIS_CLIENTS:
        failures.append(f"redis clients {quiet.redis_clients} -> {loud.redis_clients}")
    if share < MIN_THROUGHPUT_SHARE:
        failures.append(f"hot path at {share:.0%} of its rate during the control")
    if queries > len(phase.bodies) * phase.max_queries:
        failures.append(f"{queries:,.0f} postgres queries for {len(phase.bodies):,} calls")
    verdict = "FAIL " + "; ".join(failures) if failures else "PASS"
    print(
        f"VERDICT floods-{phase.name}: {verdict} (hot path {control.rate:,.0f} -> {loud.rate:,.0f}"
        f" req/s, in-process hits {loud.hit_rate or 0:.2%}, rows written {stores.rows},"
        f" invalidations {published:.0f}, redis clients {quiet.redis_clients} ->"
        f" {loud.redis_clients})",
        flush=True,
    )
    return not failures


async def run_phase(
    phase: Phase, port: int, rd: str, conn: asyncpg.Connection, hot: bytes, work: Path
) -> bool:
    """The hot load alone, during the control, during the flood; the verdict."""
    print(f"{phase.name}: {len(phase.bodies):,} {phase.path} at concurrency {CONCURRENCY}")
    quiet, _ = await window(port, rd, conn, hot, None)
    yardstick = flood(port, phase.path, phase.headers, phase.control, work)
    control, _ = await window(port, rd, conn, hot, yardstick)
    send = flood(port, phase.path, phase.headers, phase.bodies, work)
    loud, outcome = await window(port, rd, conn, hot, send)
    if outcome is None:
        raise RuntimeError("the flood ran without an outcome")
    return report(phase, quiet, control, loud, outcome)


async def cast(env: dict[str, str], db: str, rd: str) -> Cast:
    """Register the resource server, the hot token's owner and the flooder; issue the token."""
    settings = load_settings(env)
    async with open_authority(settings, db, rd, listen=False) as authority:
        rs, rs_secret = await authority.create_client(
            actor="drill", name="drill-rs", scopes=[], audiences=[], can_introspect=True
        )
        app, _ = await authority.create_client(
            actor="drill", name="drill-app", scopes=["read"], audiences=[]
        )
        flooder, flooder_secret = await authority.create_client(
            actor="drill", name="drill-flooder", scopes=[], audiences=[]
        )
        hot, _ = await authority.issue_access_token(app, Grant(scopes=("read",), audiences=()))
    return Cast(
        rs_auth=basic_auth(rs.client_id, rs_secret),
        flooder_auth=basic_auth(flooder.client_id, flooder_secret),
        hot_token=hot,
    )


async def phases(port: int, env: dict[str, str], db: str, rd: str, work: Path) -> bool:
    """Both phases against the running server; whether both passed."""
    actors = await cast(env, db, rd)
    head = request_head("POST", HOST, port, "/introspect", {"Authorization": actors.rs_auth})
    hot = form_request(head, b"token=" + actors.hot_token.encode())
    kinds = (Kind.ACCESS_TOKEN, Kind.API_KEY)
    revoke = Phase(
        name="revoke",
        path="/revoke",
        headers={"Authorization": actors.flooder_auth},
        bodies=[b"token=" + credentials.generate(kinds[n % 2]).encode() for n in range(FLOOD)],
        control=[b"token=x"] * CONTROL,
        expect="status 200",
        max_queries=1.05,  # one statement that matches nothing, and the hot path's few
    )
    form = b"grant_type=client_credentials&client_id=%s&client_secret=%s"
    token = Phase(
        name="token",
        path="/token",
        headers={},
        bodies=[form % (random_id("client_"), secret()) for _ in range(FLOOD)],
        control=[form % (random_id("nope_"), secret()) for _ in range(CONTROL)],
        expect="status 401",
        max_queries=0.5,  # lookups of one moment share a query: not one query per made-up id
    )
    conn = await asyncpg.connect(db)
    try:
        return all([await run_phase(p, port, rd, conn, hot, work) for p in (revoke, token)])
    finally:
        await conn.close()


def random_id(prefix: str) -> bytes:
    """A random id of our shape under `prefix` (a client id with `client_`)."""
    return (prefix + credentials.random_base62(22)).encode()


def secret() -> bytes:
    """A random client secret that passes the checksum."""
    return credentials.generate(Kind.CLIENT_SECRET).encode()


def run() -> bool:
    """Start the stores and the server, run both phases, stop everything; whether both passed."""
    data_dir = Path(tempfile.mkdtemp(prefix="introspect-drill-floods-"))
    started = embedded.start(data_dir)
    try:
        db, rd = started.database_url, started.redis_url
        asyncio.run(apply_migrations(db))
        port = procs.free_port()
        env = {
            **os.environ,
            "INTROSPECT_DATABASE_URL": db,
            "INTROSPECT_REDIS_URL": rd,
            "INTROSPECT_DATA_DIR": str(data_dir),
            "INTROSPECT_HOST": HOST,
            "INTROSPECT_SECRET": "drill-" + secrets.token_urlsafe(32),
        }
        command = [sys.executable, "-m", "introspect.cli", "serve"]
        command += ["--port", str(port), "--workers", str(WORKERS)]
        server = procs.Service("server", command, env, data_dir / "server.log")
        try:
            server.wait_ready(port, WORKERS)
            return asyncio.run(phases(port, env, db, rd, data_dir))
        finally:
            server.stop()
    finally:
        if started.owned:
            embedded.stop(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)
