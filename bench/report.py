"""The results: one table per run, the targets beside the figures, JSON and a PNG."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.limits import Credits, OverLimit, describe
from bench.scenarios import MIX_POPULATION
from bench.workers import Propagation

MIB = 1024 * 1024


@dataclass(slots=True)
class Row:
    """One scenario as measured."""

    name: str
    title: str
    mode: str  # "closed, 32 conns" or "open, 5000/s"
    tool: str
    rate: float  # successful answers per second
    ceiling_rate: float | None  # the ceiling, measured again just before and after it
    ceiling_pct: float | None  # rate as a % of ceiling_rate
    # The ceiling's server CPU per request as a % of this scenario's (server and stores): the
    # same comparison by cost rather than by throughput, which other processes on the machine
    # disturb far less.
    ceiling_cpu_pct: float | None
    latency_ms: dict[str, float]
    errors: dict[str, int]
    cpu: dict[str, float | None]  # cores busy on average: server, stores, generator, other
    cpu_us: float | None  # server and stores CPU microseconds per request
    # Per request, from the server's /metrics; and its full GCs and loop lag (Delta.pauses).
    work: dict[str, float | None]
    notes: list[str] = field(default_factory=list)
    # Open loop: the ceiling's latencies at the same offered rate, in rounds alternating with
    # the scenario's (pooled), and each round's p99 ratio (scenario's / ceiling's).
    ceiling_latency_ms: dict[str, float] = field(default_factory=dict)
    round_ratios: list[float] = field(default_factory=list)
    # Closed loop beside a twin (limited-hit's local-hit; with --against, the same scenario on
    # the other stores' server): the twin, and each round's req/s as a % of the twin's in the
    # round alternating with it.
    twin: str | None = None
    twin_shares: list[float] = field(default_factory=list)

    @property
    def p99_ratio(self) -> float | None:
        """The open-loop p99 against the ceiling's: the median of the rounds' ratios (the
        pooled p99s' ratio for a row measured without rounds)."""
        if self.round_ratios:
            return statistics.median(self.round_ratios)
        p99, ceiling = self.latency_ms.get("p99"), self.ceiling_latency_ms.get("p99")
        return p99 / ceiling if p99 is not None and ceiling else None


@dataclass(slots=True)
class Memory:
    """Worker memory once every worker's in-process cache was filled."""

    rss_before_mib: dict[int, float]  # by worker pid, before the fill
    rss_mib: dict[int, float]  # by worker pid, after it
    entries_sent: dict[int, int]  # distinct live credentials introspected at each worker
    cache_size: int
    seeded: int

    @property
    def full(self) -> bool:
        """Whether every worker saw at least as many distinct credentials as its cache holds."""
        return bool(self.entries_sent) and min(self.entries_sent.values()) >= self.cache_size


@dataclass(frozen=True, slots=True)
class Target:
    """One figure against its target."""

    figure: str
    measured: str
    target: str
    passed: bool | None  # None: not measured in this run


@dataclass(slots=True)
class Results:
    """Everything a run measured."""

    meta: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    revocation: Propagation | None = None
    memory: Memory | None = None
    credits: Credits | None = None
    over_limit: OverLimit | None = None

    def row(self, name: str) -> Row | None:
        """The row of scenario `name`, if it ran."""
        return next((r for r in self.rows if r.name == name), None)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _collections(work: dict[str, float | None]) -> str:
    """`count x mean ms` of the full collections a scenario saw."""
    mean = work.get("gc_full_ms")
    return "-" if mean is None else f"{work.get('gc_full') or 0:.0f} x {mean:.0f}"


BESIDE_CEILING = (
    "ceil p50",
    "ceil p99",
    "ceil max",
    "p99 / ceil",
    "rounds",
    "handler p99",
    "lag p99",
)


def _beside(row: Row) -> list[str]:
    """An open-loop row's latencies, the ceiling's at the same rate, the ratio of the p99s, and
    from the server's /metrics its handlers' own p99 and its event loop's lag p99 (bucket
    bounds): a p99 far above the handlers' is waiting (for the loop, for a core), not work."""
    own, ceiling = row.latency_ms, row.ceiling_latency_ms
    ratio = row.p99_ratio
    keys = ("p50", "p99", "max")
    return [
        row.name,
        row.mode,
        *(_fmt(own.get(k)) for k in keys),
        *(_fmt(ceiling.get(k)) for k in keys),
        "-" if ratio is None else f"{ratio:.1f}x",
        " ".join(f"{r:.1f}" for r in row.round_ratios) or "-",
        _fmt(row.work.get("handler_p99_ms")),
        _fmt(row.work.get("lag_p99_ms")),
    ]


# The issues' targets (2 workers, 32 connections): share of the same run's ceiling, and more.
CEILING_SHARE = {"local-hit": 85.0, "redis-hit": 65.0, "cold": 50.0, "mix": 70.0}
TOKEN_RATE = 3000.0
# An earlier issue's closed-loop target, kept as it was: at 32 connections on saturated workers
# it measures queue depth (the ceiling's own p99 is near it), so the open-loop ratios below
# say more, but a figure that fails is not dropped for failing.
LOCAL_P99_MS = 5.0
RSS_MIB = 200.0
_LABELS = {"local-hit": "in-process hit", "redis-hit": "Redis hit", "cold": "cold", "mix": "mix"}
# Issue 19, at a fixed offered rate of half the ceiling's closed-loop throughput: the p99 of
# each scenario at most this many times the ceiling's p99 at the same rate.
OPEN_P99_RATIO = {"local-hit": 1.3, "mix": 2.0}
# Issue 19: a run seeded with 10M credentials keeps cold and mix within this many points (of
# % of ceiling) of a 1M run, the mix drawn over MIX_POPULATION credentials at both sizes.
# Measured side by side (`python -m bench --credentials 10000000 --against 1000000`): each
# scenario in rounds alternating with its twin on the other stores' server, judged over the
# rounds of every such run of the same code (`scale_targets`).
SCALE_POINTS = 5.0
SCALE_SEEDED = (1_000_000, 10_000_000)

# Each JWT scenario and the opaque one it differs from only by the credential presented.
JWT_TWINS = {"jwt-hit": "local-hit", "jwt-verify": "redis-hit"}


@dataclass(frozen=True, slots=True)
class Comparison:
    """A JWT scenario next to its opaque twin, both measured in the same run."""

    jwt: str
    opaque: str
    rate_pct: float  # the JWT scenario's req/s as a % of its twin's
    extra_cpu_us: float | None  # server and stores CPU per request, JWT minus opaque


def comparisons(results: Results) -> list[Comparison]:
    """Each JWT scenario of the run against its opaque twin, when both ran."""
    out = []
    for jwt, opaque in JWT_TWINS.items():
        a, b = results.row(jwt), results.row(opaque)
        if a is None or b is None or not b.rate:
            continue
        extra = None if a.cpu_us is None or b.cpu_us is None else a.cpu_us - b.cpu_us
        out.append(Comparison(jwt, opaque, 100 * a.rate / b.rate, extra))
    return out


LIMITED_SHARE = 80.0  # limited-hit, % of local-hit in the same run (each as % of ceiling)
OVER_ADMISSION = 1.05  # over-limit: admitted / limit in the worst window


def _limited_share(limited: Row | None, local: Row | None) -> tuple[float, str] | None:
    """limited-hit as a % of local-hit, and how it was compared: the median of the rounds
    in which they alternated (`Row.twin_shares`), else their % of the ceiling measured beside
    each (the machine's speed drifts by 10-20 % between two scenarios a minute apart, which
    their req/s alone carry), else their req/s."""
    if limited is None or local is None:
        return None
    if limited.twin == local.name and limited.twin_shares:
        shares = limited.twin_shares
        each = " ".join(f"{s:.0f}" for s in shares)
        return statistics.median(shares), f"median of {len(shares)} alternating rounds: {each}"
    if limited.ceiling_pct and local.ceiling_pct:
        share = 100 * limited.ceiling_pct / local.ceiling_pct
        return share, f"{limited.ceiling_pct:.0f} / {local.ceiling_pct:.0f} % of ceiling"
    if local.rate:
        return 100 * limited.rate / local.rate, f"{limited.rate:,.0f} / {local.rate:,.0f} req/s"
    return None


def _limit_targets(results: Results) -> list[Target]:
    """limited-hit beside local-hit, credits exactness, the worst window of over-limit."""
    share = _limited_share(results.row("limited-hit"), results.row("local-hit"))
    credits, over = results.credits, results.over_limit
    return [
        Target(
            "limited hit, % of in-process hit",
            "-" if share is None else f"{share[0]:.0f} % ({share[1]})",
            f">= {LIMITED_SHARE:.0f} %",
            None if share is None else share[0] >= LIMITED_SHARE,
        ),
        Target(
            "credits: active answers per key / credits",
            "-"
            if credits is None
            else f"{min(credits.active)}-{max(credits.active)} / {credits.credits}",
            "exact",
            None if credits is None else credits.exact,
        ),
        Target(
            "over-limit: admitted / limit, worst window",
            "-" if over is None else f"{over.worst:.2f}",
            f"<= {OVER_ADMISSION:.2f}",
            None if over is None else over.worst <= OVER_ADMISSION,
        ),
    ]


def open_row(results: Results, name: str) -> Row | None:
    """The open-loop row of scenario `name` measured beside the ceiling at the same rate:
    `NAME-open` of a default run, or `NAME` itself when the whole run was open (--rate)."""
    for candidate in (results.row(f"{name}-open"), results.row(name)):
        if candidate is not None and candidate.ceiling_latency_ms.get("p99"):
            return candidate
    return None


def _open_targets(results: Results) -> list[Target]:
    """Issue 19: each scenario's open-loop p99 against the ceiling's at the same rate."""
    out = []
    for name, most in OPEN_P99_RATIO.items():
        row = open_row(results, name)
        figure = f"{_LABELS[name]}, open-loop p99 / ceiling's"
        target = f"<= {most:g}x"
        ratio = row.p99_ratio if row is not None else None
        if row is None or ratio is None:
            out.append(Target(figure, "-", target, None))
            continue
        p99, ceiling = row.latency_ms["p99"], row.ceiling_latency_ms["p99"]
        how = f"median of {len(row.round_ratios)} rounds" if row.round_ratios else "one run"
        measured = (
            f"{ratio:.1f}x ({how}; pooled {p99:.2f} / {ceiling:.2f} ms at {row.mode.split()[0]})"
        )
        out.append(Target(figure, measured, target, ratio <= most and not row.errors))
    return out


def _size(seeded: int) -> int | None:
    """0 for a 1M-class run, 1 for a 10M-class one, None for a smaller one."""
    small, large = SCALE_SEEDED
    return 1 if seeded >= large else 0 if seeded >= small else None


def _scale_rounds(run: dict[str, Any], name: str) -> list[tuple[float, float]]:
    """Scenario `name` with 10M seeded against 1M from `run` (a results.json's data), when it
    measured them side by side (--against): each round's (10M, 1M) % of the ceiling, the
    twin's % of the ceiling and that times the round's share. None measured: []."""
    meta = run.get("meta", {})
    sizes = _size(meta.get("seeded", 0)), _size(meta.get("against") or 0)
    if set(sizes) != {0, 1}:
        return []
    if name == "mix" and meta.get("mix_over") != MIX_POPULATION:
        return []  # the mix of another population (--mix-over) is another traffic
    rows = {row["name"]: row for row in run.get("scenarios", [])}
    row = rows.get(name)
    twin = rows.get(row.get("twin") or "") if row is not None else None
    if row is None or twin is None or not twin.get("ceiling_pct"):
        return []
    theirs = twin["ceiling_pct"]
    mine = [theirs * share / 100 for share in row.get("twin_shares") or ()]
    return [(m, theirs) if sizes[0] == 1 else (theirs, m) for m in mine]


def scale_targets(results: Results, earlier: Sequence[dict[str, Any]]) -> list[Target]:
    """Issue 19: with 10M credentials seeded, cold and mix (% of ceiling) within SCALE_POINTS
    of 1M (either way): the median of the points of every round measured side by side
    (`_scale_rounds`) by this run and the earlier ones (results.json data, newest first: see
    `earlier_runs`) of the same code (meta `code`). One run's 8 rounds do not settle 5
    points here: cold at 10M came out at -7, -3 and +1 in three runs an hour apart. n/a when
    no run measured them."""
    code = results.meta.get("code")
    mine = {"meta": results.meta, "scenarios": [asdict(r) for r in results.rows]}
    runs = [mine, *(run for run in earlier if run.get("meta", {}).get("code") == code)]
    out = []
    for name in ("cold", "mix"):
        figure = f"{_LABELS[name]}, 10M seeded vs 1M, points of ceiling"
        target = f"within {SCALE_POINTS:g} points"
        measured = [(run["meta"].get("started", "?"), _scale_rounds(run, name)) for run in runs]
        measured = [(started, rounds) for started, rounds in measured if rounds]
        pairs = [pair for _started, rounds in measured for pair in rounds]
        if not pairs:
            out.append(Target(figure, "-", target, None))
            continue
        points = statistics.median(big - one for big, one in pairs)
        big = statistics.median(big for big, _one in pairs)
        one = statistics.median(one for _big, one in pairs)
        started = ", ".join(started for started, _rounds in measured)
        how = (
            f"{points:+.0f} ({big:.0f} % vs {one:.0f} %; median of {len(pairs)} alternating"
            f" rounds, run{'s' if len(measured) > 1 else ''} {started})"
        )
        out.append(Target(figure, how, target, abs(points) <= SCALE_POINTS))
    return out


def earlier_runs(out: Path) -> list[dict[str, Any]]:
    """The readable results.json files under `out`, newest first."""
    runs = []
    for path in sorted(out.glob("*/results.json"), reverse=True):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("scenarios"), list):
            runs.append(data)
    return runs


def targets(
    results: Results, *, full_size_run: bool, earlier: Sequence[dict[str, Any]] = ()
) -> list[Target]:
    """Each target figure of the run next to its target; n/a when it was not measured.
    `earlier`: results of earlier runs, newest first, for the 10M figures (see `scale_targets`)."""
    out = []
    for name, minimum in CEILING_SHARE.items():
        row = results.row(name)
        value = row.ceiling_pct if row is not None else None
        measured = "-" if value is None else f"{value:.0f} %"
        if row is not None and row.ceiling_cpu_pct is not None:
            noisy = any(n.startswith("noisy") for n in row.notes)
            measured += f" (cpu {row.ceiling_cpu_pct:.0f} %{', noisy' if noisy else ''})"
        out.append(
            Target(
                f"{_LABELS[name]}, % of ceiling",
                measured,
                f">= {minimum:.0f} %",
                None if value is None else value >= minimum and not (row and row.errors),
            )
        )
        if name == "local-hit":
            p99 = row.latency_ms.get("p99") if row is not None else None
            out.append(
                Target(
                    "in-process hit, closed-loop p99",
                    "-" if p99 is None else f"{p99:.2f} ms",
                    f"< {LOCAL_P99_MS:g} ms",
                    None if p99 is None else p99 < LOCAL_P99_MS,
                )
            )
    out += _open_targets(results)
    out += scale_targets(results, earlier)
    out += _limit_targets(results)
    token = results.row("token")
    out.append(
        Target(
            "/token, tokens/s",
            "-" if token is None else f"{token.rate:,.0f}",
            f">= {TOKEN_RATE:,.0f}",
            None if token is None else token.rate >= TOKEN_RATE and not token.errors,
        )
    )
    memory = results.memory
    figure, target = "worker RSS, 1M seeded, cache full", f"< {RSS_MIB:.0f} MiB"
    if memory is not None and memory.rss_mib:
        worst = max(memory.rss_mib.values())
        counts = memory.full and full_size_run
        measured = f"{worst:.0f} MiB max" + ("" if counts else " (cache not full or < 1M seeded)")
        # More entries only take more memory: over the target before the cache is full fails.
        passed = worst < RSS_MIB if counts else (False if worst >= RSS_MIB else None)
        out.append(Target(figure, measured, target, passed))
    else:
        out.append(Target(figure, "-", target, None))
    return out


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    lines = [
        "  ".join(
            h.rjust(w) if i else h.ljust(w)
            for i, (h, w) in enumerate(zip(headers, widths, strict=True))
        )
    ]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append(
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    return "\n".join(lines)


def render(results: Results, checks: Sequence[Target]) -> str:
    """The text report: scenarios, revocation, memory, targets."""
    meta = results.meta
    parts = [
        f"introspect bench, {meta['started']}: {meta['workers']} workers, "
        f"{meta['connections']} connections, {meta['duration']:g} s per scenario, "
        f"{meta['seeded']:,} credentials and {meta['jwts']:,} JWTs seeded in"
        f" {meta['seed_seconds']:.0f} s, "
        f"{meta['cpus']} CPUs, load average {meta['load_average']} at start",
        "",
        "ceil/s: the ceiling measured again just before and after the scenario (mean); % ceil:"
        " req/s as a % of it; cpu %: the same by CPU cost (the ceiling's CPU per request as a %"
        " of the scenario's), which other processes disturb less; latency in ms; CPU in cores busy"
        " (srv: server workers, db: Postgres and Redis, gen: the load generator, other:"
        " everything else on the machine); us/req: srv and db CPU microseconds per request;"
        " Redis calls and Postgres queries per request from the server's /metrics; full GCs:"
        " the workers' generation-2 collections during the scenario x their mean pause (ms); lag"
        " p99: the event loop's lag (ms, bucket bound) from the same /metrics",
        "",
    ]
    headers = [
        "scenario",
        "mode",
        "req/s",
        "ceil/s",
        "% ceil",
        "cpu %",
        "p50",
        "p90",
        "p99",
        "max",
        "errors",
        "srv",
        "db",
        "gen",
        "other",
        "us/req",
        "redis/req",
        "pg/req",
        "full GCs",
        "lag p99",
    ]
    rows = []
    for r in results.rows:
        lat = r.latency_ms
        rows.append(
            [
                r.name,
                r.mode,
                f"{r.rate:,.0f}",
                "-" if r.ceiling_rate is None else f"{r.ceiling_rate:,.0f}",
                _fmt(r.ceiling_pct, 0),
                _fmt(r.ceiling_cpu_pct, 0),
                _fmt(lat.get("p50")),
                _fmt(lat.get("p90")),
                _fmt(lat.get("p99")),
                _fmt(lat.get("max")),
                str(sum(r.errors.values())),
                _fmt(r.cpu.get("server")),
                _fmt(r.cpu.get("stores")),
                _fmt(r.cpu.get("generator")),
                _fmt(r.cpu.get("other")),
                _fmt(r.cpu_us, 0),
                _fmt(r.work.get("redis_calls")),
                _fmt(r.work.get("pg_queries")),
                _collections(r.work),
                _fmt(r.work.get("lag_p99_ms")),
            ]
        )
    if rows:
        parts.append(_table(headers, rows))
    beside = [r for r in results.rows if r.ceiling_latency_ms]
    if beside:
        parts += [
            "",
            "open loop next to the ceiling at the same offered rate, in rounds alternating"
            " with the scenario's (latency in ms from the moment each request was due, each"
            " side's rounds pooled; rounds: each round's p99 ratio; p99 / ceil: their median;"
            " handler p99: the server's own time in its handlers, lag p99: its event loop's"
            " lag, both from /metrics, bucket bounds)",
            _table(
                [*("scenario", "mode", "p50", "p99", "max"), *BESIDE_CEILING],
                [_beside(r) for r in beside],
            ),
        ]
    twins = comparisons(results)
    if twins:
        parts += [
            "",
            "JWT next to opaque: the same cache path, presenting a JWT instead of an opaque"
            " credential",
            _table(
                ["scenario", "opaque twin", "req/s, % of twin's", "extra us/req"],
                [
                    [
                        c.jwt,
                        c.opaque,
                        f"{c.rate_pct:.0f} %",
                        "-" if c.extra_cpu_us is None else f"{c.extra_cpu_us:+.0f}",
                    ]
                    for c in twins
                ],
            ),
        ]
    notes = [f"  {r.name}: {n}" for r in results.rows for n in r.notes]
    if notes:
        parts += ["", "notes:", *notes]
    rev = results.revocation
    if rev is not None:
        parts += [
            "",
            f"revocation propagation: {rev.revocations} revocations, "
            f"{rev.workers_probed} workers each holding the credential in its in-process cache",
            _table(
                ["", "p50", "p90", "p99", "max"],
                [
                    [
                        "POST /revoke latency (ms)",
                        *(_fmt(rev.revoke_ms.get(k)) for k in ("p50", "p90", "p99", "max")),
                    ],
                    [
                        "until every worker inactive (ms)",
                        *(_fmt(rev.propagation_ms.get(k)) for k in ("p50", "p90", "p99", "max")),
                    ],
                ],
            ),
            f"active answers to requests sent after /revoke returned: {rev.stale_after_return}"
            f" (must be 0); probes not warm: {rev.not_warm}; errors: {rev.errors}",
        ]
    mem = results.memory
    if mem is not None:
        before = ", ".join(f"{v:.0f}" for v in mem.rss_before_mib.values())
        rss = ", ".join(f"{v:.0f}" for v in mem.rss_mib.values())
        sent = ", ".join(f"{v:,}" for v in mem.entries_sent.values())
        parts += [
            "",
            f"memory: worker RSS {before} MiB before, {rss} MiB after introspecting {sent}"
            f" distinct credentials at each worker (in-process cache size {mem.cache_size:,}:"
            f" {'full' if mem.full else 'not full'}), {mem.seeded:,} seeded",
        ]
    if results.credits is not None or results.over_limit is not None:
        parts += ["", *describe(results.credits, results.over_limit)]
    parts += ["", "targets:"]
    parts.append(
        _table(
            ["figure", "measured", "target", "result"],
            [
                [
                    t.figure,
                    t.measured,
                    t.target,
                    {True: "PASS", False: "FAIL", None: "n/a"}[t.passed],
                ]
                for t in checks
            ],
        )
    )
    return "\n".join(parts)


def write_json(results: Results, checks: Sequence[Target], path: Path) -> None:
    """The same as the text report, as JSON."""
    data = {
        "meta": results.meta,
        "scenarios": [asdict(r) for r in results.rows],
        "revocation": asdict(results.revocation) if results.revocation else None,
        "memory": asdict(results.memory) | {"full": results.memory.full}
        if results.memory
        else None,
        "jwt_vs_opaque": [asdict(c) for c in comparisons(results)],
        "credits": asdict(results.credits) if results.credits else None,
        "over_limit": asdict(results.over_limit) if results.over_limit else None,
        "targets": [asdict(t) for t in checks],
    }
    path.write_text(json.dumps(data, indent=2) + "\n")


def draw(results: Results, path: Path) -> bool:
    """Latency percentiles per scenario and throughput bars, as a PNG; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib import ticker
    except ImportError:
        return False
    rows = [r for r in results.rows if r.latency_ms]
    fig, (left, right) = plt.subplots(1, 2, figsize=(15, 6))
    for r in rows:
        keys = [k for k in ("p50", "p75", "p90", "p99", "p99.9", "max") if k in r.latency_ms]
        left.plot(keys, [r.latency_ms[k] for k in keys], marker="o", label=r.name)
    left.set_yscale("log")
    left.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    left.yaxis.set_minor_formatter(ticker.FormatStrFormatter("%g"))
    left.set_ylabel("latency (ms, log scale)")
    left.set_title("latency percentiles")
    left.grid(True, which="both", alpha=0.3)
    if rows:
        left.legend()
    names = [r.name for r in rows]
    colors = [
        "tab:gray" if r.name == "ceiling" else "tab:orange" if r.name in JWT_TWINS else "tab:blue"
        for r in rows
    ]
    bars = right.bar(names, [r.rate for r in rows], color=colors)
    for bar, r in zip(bars, rows, strict=True):
        if r.mode.endswith("open"):
            bar.set_hatch("//")
        goal = TOKEN_RATE if r.name == "token" else None
        if r.name in CEILING_SHARE and r.ceiling_rate:
            goal = r.ceiling_rate * CEILING_SHARE[r.name] / 100
        if goal is not None:
            x = bar.get_x()
            right.hlines(goal, x, x + bar.get_width(), colors="tab:red", linestyles="dashed")
        label = f"{r.rate:,.0f}" + (f"\n{r.ceiling_pct:.0f} %" if r.ceiling_pct else "")
        right.annotate(
            label,
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    right.set_ylabel("answers per second")
    right.set_title(
        "throughput (% of the ceiling; dashed red: target; hatched: open loop; orange: JWT)"
    )
    right.tick_params(axis="x", rotation=30)
    meta = results.meta
    fig.suptitle(
        f"introspect bench {meta['started']}: {meta['workers']} workers, "
        f"{meta['connections']} connections, {meta['seeded']:,} credentials"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
