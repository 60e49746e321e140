"""One run of the bench: start what is needed, seed, drive each scenario, report, stop it all.

Order: the stores (embedded under the bench's own data dir unless URLs were
given), the seed, the ceiling (its own processes, measured alone on the
machine, then again just before and after each closed-loop scenario, which is
compared with the mean of the two; an open-loop scenario runs in rounds, each
after the ceiling at the same offered rate),
then the server in its default configuration (in-process hit, the same
for keys with a rate limit and for JWTs, mix, mix at a fixed rate, /token,
revocation, credits, over-limit, memory), then with
the in-process cache off (Redis hit, then JWTs verified and found in
Redis), then with both cache layers off (cold). Everything started is registered on one
ExitStack, closed with Ctrl-C ignored, so a run always stops what it
started, in reverse order, whatever happened.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import math
import os
import platform
import random
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import asyncpg

from bench import limits, loadgen, openloop, procs, report, scenarios, seed, slices, wrkrun
from bench.http import Connection, basic_auth, form_request, request_head
from bench.loadgen import Load, Outcome
from bench.profile import Profiler
from bench.report import MIB, Memory, Results, Row
from bench.scenarios import DEFAULT, MIX_POPULATION, NO_CACHE, NO_LOCAL, Scenario, Slices
from bench.scrape import Delta, scrape
from bench.workers import fill_local_caches, revocations
from introspect import embedded
from introspect.config import Settings, load_settings
from introspect.server import apply_migrations
from introspect.service import Authority, open_authority

HOST = "127.0.0.1"
LOAD_SCENARIOS = (
    "local-hit",
    "local-hit-open",
    "limited-hit",
    "jwt-hit",
    "redis-hit",
    "jwt-verify",
    "cold",
    "mix",
    "mix-open",
    "token",
)
JWT_SCENARIOS = ("jwt-hit", "jwt-verify")
# Phases of their own, on the server in its default configuration.
EXTRA_SCENARIOS = ("revocation", "credits", "over-limit", "memory")
ALL_SCENARIOS = (*LOAD_SCENARIOS, *EXTRA_SCENARIOS)
# The server flushes its counters to /metrics once a second: wait longer before a scrape.
SCRAPE_SETTLE = 1.5
PREFILL_TIMEOUT = 120.0
# An open-loop scenario runs in this many rounds, each after the ceiling at its rate.
OPEN_ROUNDS = 4
# A scenario measured beside a twin (PAIRED, and with --against cold and mix on the other
# stores' server) runs in this many rounds alternating with the twin's.
PAIR_ROUNDS = 8
PAIRED = {"limited-hit": "local-hit"}
AGAINST = ("cold", "mix")
EXPECTED_SHARE = 0.9  # of requests that must do what their scenario is about (see Scenario)
NOISY = 0.25  # cores used by other processes above which a comparison is flagged
# A ceiling beside a scenario is measured once the server and its stores are idle: below
# SETTLED cores over a SETTLE_STEP, waiting at most SETTLE_TIMEOUT seconds.
SETTLED = 0.1
SETTLE_STEP = 0.5
SETTLE_TIMEOUT = 20.0
# A server's issuer is its listen address unless configured, and every server of a run
# listens on a port of its own: the JWTs, signed at seeding, need one issuer they all share.
ISSUER = f"http://{HOST}"


@dataclass(frozen=True, slots=True)
class Options:
    """Everything `python -m bench` can be told."""

    data_dir: Path
    out: Path
    workers: int = 2
    connections: int = 32
    duration: float = 20.0
    warmup: float = 2.0
    credentials: int = 1_000_000
    revocations: int = 1000
    rate: float | None = None  # every load scenario open loop at this rate
    # The rate of the open-loop scenarios (local-hit-open, mix-open); None: half the ceiling's
    # closed-loop throughput, measured first in the same run.
    open_rate: float | None = None
    generator: str = "auto"  # auto (wrk closed, openloop.c open), wrk, or builtin for both
    open_reuse: str = "oldest"  # openloop.c's choice of idle connection (openloop.REUSE)
    processes: int = 2  # of the built-in generator
    wrk_threads: int = 1
    scenarios: tuple[str, ...] = ALL_SCENARIOS
    database_url: str | None = None
    redis_url: str | None = None
    fill_seconds: float = 240.0
    profile: bool = False
    # Also seed this many credentials into a second pair of embedded stores, and run cold and
    # mix in rounds alternating with the same scenario on a server over them (AGAINST).
    against: int | None = None
    # The credentials the mix draws from (scenarios.MIX_POPULATION; 0: all seeded).
    mix_over: int = MIX_POPULATION
    slices: bool = False  # record the workers' event-loop slices (bench/slices.py)
    quick: bool = False


def open_rate(chosen: float | None, ceiling: Row | None) -> float:
    """The offered rate of the open-loop scenarios: `chosen`, else half the ceiling's
    closed-loop throughput (issue 19: the tail at half the capacity), in hundreds."""
    if chosen is not None:
        return chosen
    if ceiling is None or not ceiling.rate:
        return 1000.0
    return max(100.0, round(ceiling.rate / 2, -2))


class Progress:
    """One line per phase on stderr, updated in place on a terminal."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.tty = sys.stderr.isatty()
        self.open = False
        self.last = 0.0

    def _clock(self) -> str:
        seconds = int(time.monotonic() - self.started)
        return f"{seconds // 60:02d}:{seconds % 60:02d}"

    def phase(self, text: str) -> None:
        """Start a phase."""
        self._close()
        print(f"[{self._clock()}] {text}", file=sys.stderr, flush=True)

    def tick(self, text: str) -> None:
        """Show how the phase is going (in place on a terminal, every 5 s otherwise)."""
        if self.tty:
            sys.stderr.write(f"\r         {text}\x1b[K")
            sys.stderr.flush()
            self.open = True
        elif time.monotonic() - self.last >= 5:
            self.last = time.monotonic()
            print(f"[{self._clock()}]   {text}", file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        """A result worth keeping on screen, always printed."""
        self._close()
        print(f"[{self._clock()}]   {text}", file=sys.stderr, flush=True)

    def _close(self) -> None:
        if self.open:
            sys.stderr.write("\n")
            self.open = False


def _interrupt(_signum: int, _frame: object) -> NoReturn:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _uninterrupted() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait while what was started is being stopped."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _local(url: str) -> int | None:
    """The port of a store URL when the store runs on this machine (its CPU is then counted)."""
    parts = urlsplit(url)
    if parts.hostname in ("127.0.0.1", "localhost", "::1"):
        return parts.port or (5432 if parts.scheme.startswith("postgres") else 6379)
    return None


def _count(n: int) -> str:
    """1,000,000 as `1M`, 100,000 as `100k`."""
    for size, unit in ((1_000_000, "M"), (1_000, "k")):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n:,}"


def _percents(shares: list[float]) -> str:
    """Each round's share: `83 % 79 % ...`."""
    return " ".join(f"{s:.0f} %" for s in shares) or "-"


def _store_pids(db: str, rd: str) -> list[int]:
    """The processes of the stores at URLs `db` and `rd` that run on this machine."""
    return [pid for port in (_local(db), _local(rd)) if port for pid in procs.pids_listening(port)]


@dataclass(frozen=True, slots=True)
class Ceiling:
    """The ceiling as measured just before a scenario."""

    rate: float
    cpu_us: float | None  # server CPU per request
    other: float  # cores busy with other processes meanwhile

    @staticmethod
    def around(before: Ceiling | None, after: Ceiling | None) -> Ceiling | None:
        """The ceiling measured before and after a scenario, averaged: drift cancels out."""
        if before is None or after is None:
            return before or after
        cpu = [c for c in (before.cpu_us, after.cpu_us) if c is not None]
        return Ceiling(
            (before.rate + after.rate) / 2,
            sum(cpu) / len(cpu) if cpu else None,
            max(before.other, after.other),
        )


def cpu_us(cores: dict[str, float | None], outcome: Outcome) -> float | None:
    """CPU microseconds the server and its stores spent per request."""
    answered = outcome.ok + outcome.error_count
    if not answered:
        return None
    busy = (cores["server"] or 0.0) + (cores["stores"] or 0.0)
    return busy * outcome.duration * 1e6 / answered


class Cpu:
    """CPU used over a window: by the server workers, the stores, and the whole machine."""

    def __init__(self, workers: list[int], store_roots: list[int]) -> None:
        self.workers = workers
        self.roots = store_roots
        self.wall = time.monotonic()
        self.each = [procs.cpu_seconds([pid]) for pid in workers]
        self.server = sum(self.each)
        self.stores = self._stores()
        self.machine = procs.machine_busy_seconds()
        self.own = time.process_time()

    def _stores(self) -> dict[int, float]:
        pids = [p for root in self.roots for p in procs.descendants(root)]
        return {pid: procs.cpu_seconds([pid]) for pid in pids}

    def per_worker(self) -> list[float]:
        """Average cores each worker used since the window opened, busiest first."""
        wall = time.monotonic() - self.wall
        now = [procs.cpu_seconds([pid]) for pid in self.workers]
        return sorted(((b - a) / wall for a, b in zip(self.each, now, strict=True)), reverse=True)

    def cores(self, generator_cpu: float) -> dict[str, float | None]:
        """Average cores busy since the window opened."""
        wall = time.monotonic() - self.wall
        stores_now = self._stores()
        server = (procs.cpu_seconds(self.workers) - self.server) / wall
        stores = sum(v - self.stores.get(p, 0.0) for p, v in stores_now.items()) / wall
        generator = (generator_cpu + time.process_time() - self.own) / wall
        machine = (procs.machine_busy_seconds() - self.machine) / wall
        return {
            "server": server,
            "stores": stores if self.roots else None,
            "generator": generator,
            "other": max(0.0, machine - server - stores - generator),
        }


@dataclass(frozen=True, slots=True)
class Twin:
    """What a scenario is measured beside, in alternating rounds (`Bench._paired`): a twin
    scenario on this server (limited-hit's local-hit, measured before it: `row` False) or the
    same scenario on the server of the other stores (--against: a row of its own, `label`)."""

    scenario: Scenario
    service: procs.Service
    port: int
    label: str
    row: bool


@dataclass(frozen=True, slots=True)
class Window:
    """One drive of a scenario's load and the CPU used meanwhile (see `Cpu`)."""

    outcome: Outcome
    cores: dict[str, float | None]
    each: list[float]  # cores busy per worker, busiest first
    spread: list[int]  # connections each worker held halfway through (may be empty)

    @staticmethod
    def pooled(windows: list[Window]) -> Window:
        """Several drives as one: outcomes pooled, cores averaged over their durations."""
        total = sum(w.outcome.duration for w in windows) or 1.0
        share = [w.outcome.duration / total for w in windows]

        def mean(values: list[float | None]) -> float | None:
            if any(v is None for v in values):
                return None
            return sum(v * s for v, s in zip(values, share, strict=True) if v is not None)

        cores = {key: mean([w.cores[key] for w in windows]) for key in windows[0].cores}
        each = [mean([w.each[i] for w in windows]) or 0.0 for i in range(len(windows[0].each))]
        spread = next((w.spread for w in windows if w.spread), [])
        return Window(loadgen.pooled([w.outcome for w in windows]), cores, each, spread)


class Bench:
    """The run: its options, what it started (on `stack`), and what it measured."""

    def __init__(self, opts: Options, stack: contextlib.ExitStack, results: Results) -> None:
        self.opts = opts
        self.stack = stack
        self.results = results
        self.progress = Progress()
        self.logs = Path(results.meta["results_dir"])
        self.workdir = opts.data_dir / "run"
        self.env: dict[str, str] = {}
        self.store_roots: list[int] = []
        self.profiler = Profiler(self.logs) if opts.profile else None
        self.ceiling: tuple[Scenario, int, procs.Service] | None = None

    # --- setup -------------------------------------------------------------------------------

    def _stores(self) -> tuple[str, str, bool]:
        opts = self.opts
        if opts.database_url and opts.redis_url:
            return opts.database_url, opts.redis_url, False
        if opts.database_url or opts.redis_url:
            raise ValueError("give both --database-url and --redis-url, or neither")
        self.progress.phase(f"starting embedded Postgres and Valkey under {opts.data_dir}")
        started = embedded.start(opts.data_dir)
        if started.owned:
            self.stack.callback(self._stop_embedded)
        return started.database_url, started.redis_url, True

    def _stop_embedded(self) -> None:
        self.progress.phase("stopping the embedded stores")
        embedded.stop(self.opts.data_dir)

    async def _seed(
        self, settings: Settings, db: str, rd: str, own: bool, total: int
    ) -> seed.Seeded:
        await apply_migrations(db)
        conn = await asyncpg.connect(db)
        try:
            if own:
                await seed.reset(conn)
            async with open_authority(settings, db, rd, listen=False) as authority:
                seeded = await seed.register_clients(authority)
                if not own:
                    self.stack.callback(lambda: asyncio.run(self._unseed(db, seeded)))
                if any(n in self.opts.scenarios for n in JWT_SCENARIOS):
                    await self._issue_jwts(authority, seeded)
                if "limited-hit" in self.opts.scenarios:
                    self.progress.tick(f"{limits.LIMITED_KEYS:,} API keys with a rate limit")
                    seeded.limited = await limits.limited_keys(
                        authority, seeded.apps[0], limits.LIMITED_KEYS
                    )
            await seed.copy_credentials(
                conn,
                seeded,
                settings.secrets[0],
                total,
                bulk=own,
                on_progress=lambda n: self.progress.tick(f"{n:,} / {total:,} credentials"),
            )
            if own:
                # Settle the load before measuring anything: the first scenarios otherwise
                # share the cores with autovacuum's pass over the new rows and with the
                # checkpointer writing them out (spread over minutes by default). Then read
                # what lookups and last-use writes read (the table, its hash and id indexes)
                # into Postgres's buffers, where a server that has served for a while holds
                # it: COPY and VACUUM go through small rings of buffers, so a fresh load leaves
                # the buffers nearly empty, and at 10,000,000 credentials the cold scenario
                # would measure reads through the kernel rather than the server.
                self.progress.tick("vacuum, checkpoint and prewarm")
                await conn.execute("VACUUM (ANALYZE) credentials")
                await conn.execute("CHECKPOINT")
                await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
                await conn.execute(
                    "SELECT pg_prewarm('credentials'), pg_prewarm('credentials_hash_key'),"
                    " pg_prewarm('credentials_pkey')"
                )
        finally:
            await conn.close()
        return seeded

    async def _issue_jwts(self, authority: Authority, seeded: seed.Seeded) -> None:
        count = scenarios.JWTS
        began = time.monotonic()
        await seed.issue_jwts(
            authority,
            seeded,
            count,
            on_progress=lambda n: self.progress.tick(f"{n:,} / {count:,} JWTs issued"),
        )
        seconds = time.monotonic() - began
        self.progress.note(
            f"{count:,} JWT access tokens issued and signed by the server's code in"
            f" {seconds:.1f} s ({count / seconds:,.0f}/s)"
        )

    async def _unseed(self, db: str, seeded: seed.Seeded) -> None:
        self.progress.phase("removing the bench's clients and credentials from the database")
        conn = await asyncpg.connect(db)
        try:
            await seed.remove(conn, seeded)
        finally:
            await conn.close()

    # --- processes ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _service(
        self, name: str, command: list[str], env: dict[str, str]
    ) -> Iterator[tuple[procs.Service, int]]:
        port = procs.free_port()
        command = [*command, "--port", str(port), "--workers", str(self.opts.workers)]
        service = procs.Service(name, command, env, self.logs / f"{name}.log")
        try:
            service.wait_ready(port, self.opts.workers)
            yield service, port
        finally:
            with _uninterrupted():
                service.stop()

    def _server_env(self, config: str) -> dict[str, str]:
        env = {**self.env, **scenarios.CONFIGS[config]}
        if self.opts.slices:
            env[slices.SLICES_ENV] = str(self.logs)
            env["PYTHONPATH"] = os.pathsep.join(
                [str(slices.SITE), str(Path(__file__).resolve().parent.parent)]
                + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
            )
        return env

    def _drive(self, load: Load, label: str, *, builtin: bool = False) -> Outcome:
        opts = self.opts
        wrk = (
            not builtin
            and load.rate is None
            and load.wrap
            and opts.generator != "builtin"
            and wrkrun.available() is not None
        )
        if opts.generator == "wrk" and not wrk and not builtin and load.rate is None:
            raise RuntimeError("--generator wrk, but wrk is not installed")

        def tick(elapsed: float, answers: int | None) -> None:
            rate = f", {answers / elapsed:,.0f} answers/s" if answers and elapsed > 0 else ""
            self.progress.tick(f"{label}: {elapsed:4.0f} / {load.duration:g} s{rate}")

        if wrk:
            return wrkrun.run(load, opts.wrk_threads, tick)
        if load.rate is not None and load.wrap and not builtin and opts.generator != "builtin":
            if openloop.compiler() is not None:
                return openloop.run(load, tick, opts.open_reuse)
            self.progress.note("no C compiler for bench/openloop.c: open loop with the built-in")
        return loadgen.run(load, opts.processes, tick)

    # --- measuring ---------------------------------------------------------------------------

    def _rate_for(self, scenario: Scenario) -> float | None:
        if self.opts.rate is not None:
            return self.opts.rate
        if not scenario.open_loop:
            return None
        return open_rate(self.opts.open_rate, self.results.row("ceiling"))

    def _ceiling_load(self, duration: float, rate: float | None = None) -> Load:
        assert self.ceiling is not None
        scenario, port, _service = self.ceiling
        headers = {"Authorization": basic_auth(scenario.client.client_id, scenario.client.secret)}
        return Load(
            HOST,
            port,
            scenario.path,
            headers,
            scenario.bodies,
            self.opts.connections,
            duration,
            rate=rate,
        )

    def _ceiling_again(self, workers: list[int]) -> Ceiling | None:
        """The ceiling right now (a shorter run), just before or after a scenario, once the
        server's `workers` and the stores have settled."""
        if self.ceiling is None:
            return None
        self._settle(workers)
        duration = float(max(2, round(self.opts.duration / 4)))
        cpu = Cpu(self.ceiling[2].workers(), [])
        outcome = self._drive(self._ceiling_load(duration), "ceiling, again")
        cores = cpu.cores(outcome.generator_cpu)
        return Ceiling(outcome.rate, cpu_us(cores, outcome), cores["other"] or 0.0)

    def _settle(self, workers: list[int]) -> None:
        """Wait until the server's `workers` and the stores are idle, or SETTLE_TIMEOUT.

        What a scenario leaves behind would otherwise be measured as the machine's
        noise and lower the ceiling it is compared with: a server's start (its
        workers connecting and warming), and after cold lookups the last-use
        writes (`usage.UsageLog`, every 10 s) and Postgres's work on them.
        """
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while True:
            cpu = Cpu(workers, self.store_roots)
            time.sleep(SETTLE_STEP)
            cores = cpu.cores(0.0)
            busy = (cores["server"] or 0.0) + (cores["stores"] or 0.0)
            if busy < SETTLED:
                return
            if time.monotonic() > deadline:
                self.progress.note(f"still {busy:.2f} cores busy after {SETTLE_TIMEOUT:.0f} s")
                return

    def _window(self, load: Load, label: str, workers: list[int], stores: bool) -> Window:
        """Drive `load`, with the CPU the workers, the stores and the rest used meanwhile."""
        spread: list[int] = []
        # Halfway through: how SO_REUSEPORT spread the load's connections over the workers.
        sampler = threading.Timer(
            load.duration / 2,
            lambda: spread.extend(procs.connections_per_worker(load.port, workers)),
        )
        cpu = Cpu(workers, self.store_roots if stores else [])
        sampler.start()
        try:
            outcome = self._drive(load, label)
        finally:
            sampler.cancel()
        return Window(outcome, cpu.cores(outcome.generator_cpu), cpu.per_worker(), spread)

    def _alternating(
        self, load: Callable[[float], Load], rate: float, name: str, workers: list[int]
    ) -> tuple[Window, dict[str, float], list[float]]:
        """An open-loop scenario in OPEN_ROUNDS rounds, each after the ceiling at the same rate.

        On a shared 2-core machine the ceiling's own p99 at a fixed rate moved
        between 1.5 and 16 ms from one run to the next (issue 19): a ceiling
        measured once, before, compares the scenario with another moment of
        the machine. Alternating short rounds expose both to the same moments;
        each round's p99 ratio is kept, and the median of them is the figure.
        Returns the scenario's rounds pooled, the ceiling's latencies pooled,
        and the per-round ratios.
        """
        piece = self.opts.duration / OPEN_ROUNDS
        ceilings: list[Outcome] = []
        windows: list[Window] = []
        for n in range(1, OPEN_ROUNDS + 1):
            ceilings.append(self._drive(self._ceiling_load(piece, rate), f"ceiling, round {n}"))
            windows.append(self._window(load(piece), f"{name}, round {n}", workers, True))
        ratios = [
            w.outcome.percentiles["p99"] / c.percentiles["p99"]
            for c, w in zip(ceilings, windows, strict=True)
            if w.outcome.percentiles.get("p99") and c.percentiles.get("p99")
        ]
        return Window.pooled(windows), loadgen.pooled(ceilings).percentiles, ratios

    def _load(
        self, scenario: Scenario, port: int, bodies: Path, duration: float, rate: float | None
    ) -> Load:
        """`scenario`'s load on the server at `port`: `bodies` for `duration` seconds, closed
        loop unless `rate`."""
        client = scenario.client
        return Load(
            HOST,
            port,
            scenario.path,
            {"Authorization": basic_auth(client.client_id, client.secret)},
            bodies,
            self.opts.connections,
            duration,
            rate=rate,
        )

    def _prefill(self, scenario: Scenario, port: int, workers: list[int]) -> None:
        """Send `scenario`'s untimed presentations, when it has them: each of `everywhere`
        to every worker of `workers`, then the prefill once."""
        if scenario.everywhere:
            everywhere = scenario.everywhere
            asyncio.run(
                fill_local_caches(
                    HOST,
                    port,
                    workers,
                    scenario.client,
                    everywhere,
                    len(everywhere),
                    time.monotonic() + PREFILL_TIMEOUT,
                    on_progress=lambda n: self.progress.tick(
                        f"to every worker: {n:,} / {len(everywhere) * len(workers):,}"
                    ),
                    same=True,
                )
            )
        if scenario.prefill is not None:
            load = replace(
                self._load(scenario, port, scenario.prefill, PREFILL_TIMEOUT, None), wrap=False
            )
            self._drive(load, "prefill", builtin=True)

    def _paired(
        self, load: Callable[[float], Load], workers: list[int], twin: Twin, label: str
    ) -> tuple[Window, Window, list[float]]:
        """A closed-loop scenario in PAIR_ROUNDS rounds alternating with its twin's.

        Two scenarios measured a minute apart here see different machines: the
        limited hit's share of the in-process hit moved between 70 % and 107 %
        from one run of the same code to the next, and 10M against 1M by more
        than the 5 points judged (issue 19). Short rounds, in the order ABBA,
        expose both to the same moments; each round's rate as a % of the twin's
        is kept, and the median of them is the figure. Returns the scenario's
        rounds pooled, the twin's pooled, and the per-round %.
        """
        piece = math.ceil(self.opts.duration / PAIR_ROUNDS)  # (wrk takes whole seconds)
        twin_workers = twin.service.workers()
        mine: list[Window] = []
        theirs: list[Window] = []
        # Each side's rounds go on through its bodies where its last round stopped, as one
        # run would: the mix's rounds each from the start would all measure its first part.
        sent = [0, 0]
        for n in range(1, PAIR_ROUNDS + 1):
            steps = [
                (0, mine, load(piece), label, workers),
                (
                    1,
                    theirs,
                    self._load(twin.scenario, twin.port, twin.scenario.bodies, piece, None),
                    twin.label,
                    twin_workers,
                ),
            ]
            for side, windows, each, name, pids in steps if n % 2 else reversed(steps):
                window = self._window(
                    replace(each, skip=sent[side]), f"{name}, round {n}", pids, True
                )
                sent[side] += window.outcome.ok + window.outcome.error_count
                windows.append(window)
        shares = [
            100 * a.outcome.rate / b.outcome.rate
            for a, b in zip(mine, theirs, strict=True)
            if b.outcome.rate
        ]
        return Window.pooled(mine), Window.pooled(theirs), shares

    def measure(
        self,
        scenario: Scenario,
        service: procs.Service,
        port: int,
        metrics: bool,
        twin: Twin | None = None,
    ) -> Row:
        """Prefill, warm up, drive one scenario and read what it cost, between two ceilings.

        Each scenario is compared with the ceiling measured just before and
        just after it: on a shared machine the load of the neighbours drifts,
        and a ceiling taken minutes earlier would not be the same machine. With
        a `twin` (closed loop), it runs in rounds alternating with the twin's
        (`_paired`); a twin on the other stores' server gets a row of its own.
        """
        opts = self.opts
        rate = self._rate_for(scenario)
        twin = twin if rate is None else None
        # A twin of its own row (the other stores' server) is prefilled and warmed here too;
        # one on this server (limited-hit's local-hit) was, when measured itself.
        apart = twin if twin is not None and twin.row else None
        self.progress.phase(f"{scenario.name}: {scenario.title}")
        workers = service.workers()
        if apart is None:
            self._prefill(scenario, port, workers)
        else:
            # Both at once, so that they end together: one after the other, the first side's
            # prefilled entries were 70-160 s old when the rounds began (a worker keeps one
            # 60 s unless presented again), the second's 15-100 s (the mix at 10M: 63-65 %
            # local hits against 81-84 % at 1M).
            with concurrent.futures.ThreadPoolExecutor(2) as both:
                done = [
                    both.submit(self._prefill, scenario, port, workers),
                    both.submit(self._prefill, apart.scenario, apart.port, apart.service.workers()),
                ]
                for each in done:
                    each.result()
        bracket = metrics and rate is None
        first = self._ceiling_again(workers) if bracket else None
        if opts.warmup > 0:
            self._drive(self._load(scenario, port, scenario.warmup, opts.warmup, rate), "warmup")
            if apart is not None:
                warm = apart.scenario.warmup
                self._drive(
                    self._load(apart.scenario, apart.port, warm, opts.warmup, None),
                    f"{apart.label}, warmup",
                )
        before = self._scrape(port) if metrics else None
        twin_before = self._scrape(apart.port) if apart is not None and metrics else None
        # An open-loop scenario's tail is judged against the ceiling's at the same rate.
        alternate = metrics and rate is not None and self.ceiling is not None
        paired = 2 if twin is not None else 1
        profiling = (
            self.profiler.start(
                scenario.name, workers[0], opts.duration * (2 if alternate else paired)
            )
            if (self.profiler is not None and metrics)
            else None
        )
        self._slices(workers, metrics)  # what came before is not the scenario's
        same_rate: dict[str, float] = {}
        ratios: list[float] = []
        shares: list[float] = []
        twin_window: Window | None = None

        def load(seconds: float) -> Load:
            return self._load(scenario, port, scenario.bodies, seconds, rate)

        if alternate:
            assert rate is not None
            window, same_rate, ratios = self._alternating(load, rate, scenario.name, workers)
        elif twin is not None:
            window, twin_window, shares = self._paired(load, workers, twin, scenario.name)
        else:
            window = self._window(load(opts.duration), scenario.name, workers, metrics)
        self._slices(workers, metrics)
        notes = []
        work: dict[str, float | None] = {}
        if before is not None:
            delta = Delta(before, self._scrape(port))
            work = delta.per_request(scenario.path) | delta.pauses(scenario.path)
        if profiling is not None:
            notes.append(self.profiler.finish(profiling))
        if opts.slices and metrics:
            notes.append(self._slices_summary(scenario.name, workers))
        adjacent = Ceiling.around(first, self._ceiling_again(workers) if bracket else None)
        if twin is not None:
            notes.append(f"rounds alternating with {twin.label}: {_percents(shares)} of its req/s")
        row = self._row(scenario, window, adjacent, work, notes, rate)
        row.ceiling_latency_ms, row.round_ratios = same_rate, ratios
        if twin is not None:
            row.twin, row.twin_shares = twin.label, shares
        if apart is not None and twin_window is not None:
            twin_work: dict[str, float | None] = {}
            if twin_before is not None:
                delta = Delta(twin_before, self._scrape(apart.port))
                twin_work = delta.per_request(scenario.path) | delta.pauses(scenario.path)
            twin_row = self._row(apart.scenario, twin_window, adjacent, twin_work, [], rate)
            twin_row.name = apart.label
            self.results.rows.append(twin_row)
        self.results.rows.append(row)
        lat = row.latency_ms
        beside = "" if twin is None else f"; rounds at {_percents(shares)} of {twin.label}"
        self.progress.note(
            f"{scenario.name}: {row.rate:,.0f} answers/s, p99 {lat.get('p99', 0):.2f} ms,"
            f" {sum(row.errors.values())} errors{beside}"
        )
        return row

    def _row(
        self,
        scenario: Scenario,
        window: Window,
        adjacent: Ceiling | None,
        work: dict[str, float | None],
        notes: list[str],
        rate: float | None,
    ) -> Row:
        """The row of `scenario` as `window` measured it beside the `adjacent` ceiling."""
        outcome, cores, each, spread = window.outcome, window.cores, window.each, window.spread
        if len(each) > 1:
            # One worker near saturation while another idles makes a tail of its own.
            notes.append("cores busy per worker: " + " / ".join(f"{c:.2f}" for c in each))
        if len(spread) > 1:
            notes.append(
                "connections per worker: "
                + " / ".join(str(n) for n in sorted(spread, reverse=True))
                + " (the kernel hashes each connection to one worker; the busier sets the tail)"
            )
        cost = cpu_us(cores, outcome)
        if adjacent is not None:
            noisy = max(adjacent.other, cores["other"] or 0.0)
            if noisy > NOISY:
                notes.append(
                    f"noisy: other processes used {adjacent.other:.2f} cores during the ceilings"
                    f" and {cores['other'] or 0:.2f} during the scenario; trust cpu % more"
                )
        if outcome.errors:
            notes.append(f"errors: {outcome.errors}")
        share = work.get(scenario.expect) if scenario.expect else None
        if share is not None and share < EXPECTED_SHARE:
            notes.append(
                f"only {share:.0%} of requests counted {scenario.expect}: not the"
                " scenario it claims to be"
            )
        if rate is not None and outcome.rate < 0.95 * rate:
            notes.append(f"offered {rate:,.0f}/s, answered {outcome.rate:,.0f}/s: overloaded")
        return Row(
            scenario.name,
            scenario.title,
            f"{rate:,.0f}/s open" if rate is not None else f"{self.opts.connections} conns",
            outcome.tool,
            outcome.rate,
            adjacent.rate if adjacent else None,
            100 * outcome.rate / adjacent.rate if adjacent and adjacent.rate else None,
            100 * adjacent.cpu_us / cost if adjacent and adjacent.cpu_us and cost else None,
            outcome.percentiles,
            outcome.errors,
            cores,
            cost,
            work,
            notes,
        )

    def _slices(self, workers: list[int], metrics: bool) -> None:
        """With --slices: each worker writes what it recorded since the last time."""
        if self.opts.slices and metrics:
            for pid in workers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGUSR1)
            time.sleep(0.5)  # the signal is handled between two bytecodes of the worker

    def _slices_summary(self, name: str, workers: list[int]) -> str:
        """The scenario's slices per worker into slices-NAME.txt; a one-line digest."""
        found = [d for d in (slices.newest(self.logs, pid) for pid in workers) if d is not None]
        if not found:
            return "slices: none recorded (was the server started by this bench?)"
        text = [line for data in found for line in [*slices.summarize(data), ""]]
        path = self.logs / f"slices-{name}.txt"
        path.write_text("\n".join(text))
        worst = max(
            max(d["callbacks"].values(), key=lambda v: v[2])[2] for d in found if d["callbacks"]
        )
        return (
            f"slices (asyncio's loop): longest callback {worst * 1000:.2f} ms CPU; see {path.name}"
        )

    def _scrape(self, port: int) -> dict[Any, float]:
        time.sleep(SCRAPE_SETTLE)
        return asyncio.run(scrape(HOST, port))

    async def _sanity(self, port: int, seeded: seed.Seeded) -> None:
        """Check the server answers the seeded credentials as seeded, before measuring anything."""
        rs, app = seeded.resource_server, seeded.apps[0]
        introspect = request_head(
            "POST",
            HOST,
            port,
            "/introspect",
            {"Authorization": basic_auth(rs.client_id, rs.secret)},
        )
        token = request_head(
            "POST", HOST, port, "/token", {"Authorization": basic_auth(app.client_id, app.secret)}
        )
        conn = await Connection.open(HOST, port)
        try:
            expect = [
                (seeded.active[0], True),
                (seeded.revoked[0], False),
                (seeded.expired[0], False),
                (seeded.unknown[0], False),
                *((token, True) for token in seeded.jwt[:1]),
            ]
            for value, active in expect:
                status, body = await conn.send(form_request(introspect, f"token={value}".encode()))
                if status != 200 or (b'"active":true' in body) != active:
                    expected = "active" if active else "inactive"
                    raise RuntimeError(
                        f"sanity check: a seeded credential expected {expected} answered"
                        f" {status} {body[:80]!r}; does the server use the bench's secret"
                        " and issuer?"
                    )
            status, body = await conn.send(form_request(token, b"grant_type=client_credentials"))
            if status != 200 or b"access_token" not in body:
                raise RuntimeError(f"sanity check: /token answered {status} {body[:120]!r}")
        finally:
            conn.close()

    # --- the run -----------------------------------------------------------------------------

    def _seeded(
        self, settings: Settings, db: str, rd: str, own: bool, total: int
    ) -> tuple[seed.Seeded, float]:
        """`total` credentials seeded into `db`, told; and the seconds it took."""
        self.progress.phase(f"seeding {total:,} credentials")
        began = time.monotonic()
        seeded = asyncio.run(self._seed(settings, db, rd, own, total))
        seconds = time.monotonic() - began
        self.progress.note(
            f"{seeded.total:,} credentials in {seconds:.1f} s:"
            f" {len(seeded.active):,} live, {len(seeded.revoked):,} revoked,"
            f" {len(seeded.expired):,} expired"
        )
        return seeded, seconds

    def _against(self, settings: Settings) -> tuple[dict[str, str], seed.Seeded] | None:
        """With --against: the other stores (embedded, under the data dir's `against`),
        seeded with that many credentials, and the environment of a server on them."""
        count = self.opts.against
        if count is None:
            return None
        if self.opts.database_url or self.opts.redis_url:
            raise ValueError("--against compares two pairs of embedded stores: no store URLs")
        where = self.opts.data_dir / "against"
        started = embedded.start(where)
        if started.owned:
            self.stack.callback(embedded.stop, where)
        db, rd = started.database_url, started.redis_url
        self.store_roots += _store_pids(db, rd)
        seeded, seconds = self._seeded(settings, db, rd, True, count)
        self.results.meta["against"] = seeded.total
        self.results.meta["against_seed_seconds"] = seconds
        env = {**self.env, "INTROSPECT_DATABASE_URL": db, "INTROSPECT_REDIS_URL": rd}
        return env | {"INTROSPECT_DATA_DIR": str(where)}, seeded

    def execute(self) -> None:
        """Everything, in order."""
        opts = self.opts
        db, rd, own = self._stores()
        self.store_roots = _store_pids(db, rd)
        self.env = dict(os.environ)
        self.env.update(
            INTROSPECT_DATABASE_URL=db,
            INTROSPECT_REDIS_URL=rd,
            INTROSPECT_DATA_DIR=str(opts.data_dir),
            INTROSPECT_HOST=HOST,
            INTROSPECT_SECRET=os.environ.get("INTROSPECT_SECRET")
            or "bench-" + secrets.token_urlsafe(32),
            INTROSPECT_ISSUER=os.environ.get("INTROSPECT_ISSUER") or ISSUER,
        )
        settings = load_settings(self.env)
        seeded, self.results.meta["seed_seconds"] = self._seeded(
            settings, db, rd, own, opts.credentials
        )
        self.results.meta["seeded"] = seeded.total
        self.results.meta["jwts"] = len(seeded.jwt)
        self.results.meta["mix_over"] = opts.mix_over
        against = self._against(settings)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.stack.callback(shutil.rmtree, self.workdir, True)
        cold = max(opts.connections * 1000, int(opts.duration * 20_000))
        sequence = max(100_000, int(opts.duration * 20_000))

        def built_for(seeded: seed.Seeded, workdir: Path) -> tuple[Slices, dict[str, Scenario]]:
            workdir.mkdir(parents=True, exist_ok=True)
            cut = scenarios.slices(seeded, opts.revocations, cold)
            return cut, scenarios.build(
                seeded, cut, workdir, sequence, random.Random(11), opts.mix_over
            )

        cut, built = built_for(seeded, self.workdir)
        other = None if against is None else built_for(against[1], self.workdir / "against")[1]
        wanted = [n for n in LOAD_SCENARIOS if n in opts.scenarios]
        if wanted:
            # The ceiling stays up (idle) for the whole run, to be measured again before each
            # scenario.
            ceiling_cmd = [sys.executable, "-m", "bench.ceiling"]
            service, port = self.stack.enter_context(
                self._service("ceiling", ceiling_cmd, self.env)
            )
            self.measure(built["ceiling"], service, port, metrics=False)
            self.ceiling = (built["ceiling"], port, service)
        server_cmd = [sys.executable, "-m", "introspect.cli", "serve"]
        for config in (DEFAULT, NO_LOCAL, NO_CACHE):
            names = [n for n in wanted if built[n].config == config]
            extra = [n for n in EXTRA_SCENARIOS if n in opts.scenarios]
            if config != DEFAULT:
                extra = []
            if not names and not extra:
                continue
            self.progress.phase(f"starting the server ({config}, {opts.workers} workers)")
            env = self._server_env(config)
            with contextlib.ExitStack() as servers:
                service, port = servers.enter_context(
                    self._service(f"server-{config}", server_cmd, env)
                )
                asyncio.run(self._sanity(port, seeded))
                twins: dict[str, Twin] = {}
                if against is not None and other is not None and set(names) & set(AGAINST):
                    self.progress.phase(f"starting the server on the other stores ({config})")
                    env_b = {**against[0], **scenarios.CONFIGS[config]}
                    service_b, port_b = servers.enter_context(
                        self._service(f"server-{config}-against", server_cmd, env_b)
                    )
                    asyncio.run(self._sanity(port_b, against[1]))
                    label = f"@{_count(against[1].total)}"
                    twins = {
                        n: Twin(other[n], service_b, port_b, n + label, True)
                        for n in AGAINST
                        if n in names
                    }
                for name in names:
                    twin = twins.get(name)
                    partner = PAIRED.get(name)
                    if twin is None and partner is not None and self.results.row(partner):
                        twin = Twin(built[partner], service, port, partner, False)
                    self.measure(built[name], service, port, metrics=True, twin=twin)
                if "revocation" in extra:
                    self._revocation(service, port, seeded, cut)
                if "credits" in extra or "over-limit" in extra:
                    asyncio.run(self._limits(port, seeded, load_settings(env), extra))
                if "memory" in extra:
                    self._memory(service, port, seeded, cut, load_settings(env))

    def _revocation(
        self, service: procs.Service, port: int, seeded: seed.Seeded, cut: Slices
    ) -> None:
        total = len(cut.revocation)
        self.progress.phase(f"revocation: {total} revocations, every worker caching each")
        self.results.revocation = asyncio.run(
            revocations(
                HOST,
                port,
                service.workers(),
                seeded.resource_server,
                seeded.apps,
                cut.revocation,
                on_progress=lambda n: self.progress.tick(f"revocation: {n} / {total}"),
            )
        )

    async def _limits(
        self, port: int, seeded: seed.Seeded, settings: Settings, extra: list[str]
    ) -> None:
        db, rd = settings.database_url or "", settings.redis_url or ""
        async with open_authority(settings, db, rd, listen=False) as authority:
            rs, owner = seeded.resource_server, seeded.apps[0]
            if "credits" in extra:
                self.progress.phase("credits: keys presented 3x as often as they have credits")
                self.results.credits = await limits.credits_run(HOST, port, authority, rs, owner)
            if "over-limit" in extra:
                self.progress.phase("over-limit: one key driven at 3x its window")
                self.results.over_limit = await limits.over_limit_run(
                    HOST, port, authority, rs, owner
                )
        for line in limits.describe(self.results.credits, self.results.over_limit):
            self.progress.note(line)

    def _memory(
        self,
        service: procs.Service,
        port: int,
        seeded: seed.Seeded,
        cut: Slices,
        settings: Settings,
    ) -> None:
        workers = service.workers()
        size = settings.local_cache_size
        per_worker = min(size, len(cut.fill) // len(workers))
        self.progress.phase(
            f"memory: {per_worker:,} distinct credentials at each of {len(workers)} workers"
            f" (in-process cache size {size:,})"
        )
        before = {pid: procs.rss_bytes(pid) / MIB for pid in workers}
        deadline = time.monotonic() + self.opts.fill_seconds
        sent = asyncio.run(
            fill_local_caches(
                HOST,
                port,
                workers,
                seeded.resource_server,
                cut.fill,
                per_worker,
                deadline,
                on_progress=lambda n: self.progress.tick(
                    f"memory: {n:,} / {per_worker * len(workers):,} introspected"
                ),
            )
        )
        self.results.memory = Memory(
            rss_before_mib=before,
            rss_mib={pid: procs.rss_bytes(pid) / MIB for pid in workers},
            entries_sent=sent,
            cache_size=size,
            seeded=seeded.total,
        )


# What a run's code is (see `_code`): what the server and the bench run, not the docs.
CODE_PATHS = ("introspect", "bench", "pyproject.toml")


def _code() -> str | None:
    """The code a run measures: a digest of CODE_PATHS as committed, and of their uncommitted
    changes if any (runs of one code are compared as one: report.scale_targets; a commit
    of docs alone does not change it); None outside a git checkout."""
    git = shutil.which("git")
    if git is None:
        return None
    root = Path(__file__).resolve().parent.parent
    try:
        trees, diff = (
            subprocess.run([git, *a], cwd=root, capture_output=True, check=True, timeout=30).stdout
            for a in (
                ["rev-parse", *(f"HEAD:{path}" for path in CODE_PATHS)],
                ["diff", "HEAD", "--", *CODE_PATHS],
            )
        )
    except (OSError, subprocess.SubprocessError):
        return None
    code = hashlib.sha256(trees).hexdigest()[:12]
    return f"{code}+{hashlib.sha256(diff).hexdigest()[:8]}" if diff else code


def run(opts: Options) -> int:
    """Run the bench with `opts`; print and write the results; the exit status."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results_dir = opts.out / stamp
    results_dir.mkdir(parents=True, exist_ok=True)
    results = Results(
        meta={
            "started": stamp,
            "results_dir": str(results_dir),
            "options": {
                k: str(v) if isinstance(v, Path) else v
                for k, v in asdict(opts).items()
                if k not in ("database_url", "redis_url")
            },
            "workers": opts.workers,
            "connections": opts.connections,
            "duration": opts.duration,
            "cpus": os.cpu_count(),
            "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "python": platform.python_version(),
            "code": _code(),
            "wrk": wrkrun.available(),
            "seeded": 0,
            "jwts": 0,
            "seed_seconds": 0.0,
        }
    )
    # Ctrl-C and SIGTERM both unwind the run (SIGINT even when the shell started it ignored).
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    stack = contextlib.ExitStack()
    status = 0
    bench = Bench(opts, stack, results)
    try:
        bench.execute()
    except KeyboardInterrupt:
        bench.progress.phase("interrupted: stopping everything the bench started")
        status = 130
    except (
        RuntimeError,
        ValueError,
        OSError,
        asyncpg.PostgresError,
        embedded.EmbeddedError,
    ) as exc:
        bench.progress.phase(f"failed: {exc}")
        status = 1
    finally:
        with _uninterrupted():
            stack.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    bench.progress.phase(f"done in {time.monotonic() - bench.progress.started:.0f} s")
    seeded = results.meta["seeded"]
    checks = report.targets(
        results, full_size_run=seeded >= 1_000_000, earlier=report.earlier_runs(opts.out)
    )
    text = report.render(results, checks)
    print(text)
    (results_dir / "results.txt").write_text(text + "\n")
    report.write_json(results, checks, results_dir / "results.json")
    drawn = report.draw(results, results_dir / "results.png")
    print(
        f"\nwritten: {results_dir}/results.txt, results.json"
        + (", results.png" if drawn else " (no PNG: pip install -e '.[bench]' for matplotlib)")
        + ", and the server logs",
        file=sys.stderr,
    )
    return status
