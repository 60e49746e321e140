"""The C open-loop generator's pure parts: its schedule, its command line, reading its output."""

from __future__ import annotations

import array
import dataclasses
import itertools
import json
import multiprocessing
from pathlib import Path

import pytest

from bench import loadgen, openloop, report
from bench.loadgen import Load
from bench.report import Results, Row

needs_cc = pytest.mark.skipif(openloop.compiler() is None, reason="no C compiler for openloop.c")


def _load(rate: float | None, connections: int = 32, *, wrap: bool = True) -> Load:
    return Load(
        "127.0.0.1", 8080, "/introspect", {"Authorization": "Basic eDp5"}, Path("b.txt"),
        connections, 5.0, rate=rate, wrap=wrap,
    )  # fmt: skip


def _line(**over: object) -> str:
    data: dict[str, object] = {
        "ok": 5, "sent": 7, "due": 7, "connect": 0, "io": 1, "timeout": 0,
        "duration_us": 2_000_000, "cpu_us": 150_000, "connections": 32,
        "held": 0, "late_1ms": 0, "max_lag_us": 80, "status": {"401": 1},
    }  # fmt: skip
    data |= over
    return "some noise\n" + openloop.MARKER + json.dumps(data) + "\n"


@needs_cc
def test_schedule_is_evenly_spaced_from_zero() -> None:
    """Request i is due i / rate seconds after the start, in whole nanoseconds."""
    assert openloop.schedule(3.0, 4) == [0, 333_333_333, 666_666_666, 1_000_000_000]


@needs_cc
def test_schedule_does_not_drift() -> None:
    """After 70,000 requests at 7,000/s the schedule is exactly 10 s in: no accumulated error."""
    due = openloop.schedule(7000.0, 70_001)
    assert due[-1] == 10_000_000_000
    assert {b - a for a, b in itertools.pairwise(due)} <= {142_857, 142_858}


def test_pool_covers_the_offered_rate() -> None:
    """The pool opened up front holds POOL_SECONDS of requests in flight, at least the load's."""
    argv = openloop.command(Path("/x/openloop"), _load(6000.0), Path("lat"))
    assert argv[argv.index("--conns") + 1] == "300"
    argv = openloop.command(Path("/x/openloop"), _load(100.0), Path("lat"))
    assert argv[argv.index("--conns") + 1] == "32"
    assert argv[argv.index("-H") + 1] == "Authorization: Basic eDp5"


def test_reuse_is_passed_on_and_checked() -> None:
    """The connection order reaches the generator: the oldest idle by default, else as asked;
    any other word is refused before anything runs."""
    argv = openloop.command(Path("/x/openloop"), _load(100.0), Path("lat"))
    assert argv[argv.index("--reuse") + 1] == "oldest"
    argv = openloop.command(Path("/x/openloop"), _load(100.0), Path("lat"), "newest")
    assert argv[argv.index("--reuse") + 1] == "newest"
    with pytest.raises(ValueError, match="reuse"):
        openloop.command(Path("/x/openloop"), _load(100.0), Path("lat"), "random")


@pytest.mark.parametrize("load", [_load(None), _load(100.0, wrap=False)])
def test_only_open_wrapping_loads(load: Load) -> None:
    """A closed loop or a send-each-once load is not the C generator's to drive."""
    with pytest.raises(ValueError, match="open-loop"):
        openloop.command(Path("/x/openloop"), load, Path("lat"))


def test_outcome_reads_counts_and_every_latency() -> None:
    """Counts, errors by kind, CPU and nearest-rank percentiles over every latency written."""
    latencies = array.array("I", [1000 * (i + 1) for i in range(100)]).tobytes()
    out = openloop.outcome(_line(ok=100), latencies)
    assert out.ok == 100
    assert out.errors == {"io": 1, "status 401": 1}
    assert out.duration == 2.0
    assert out.generator_cpu == 0.15
    assert out.percentiles["p50"] == 51.0
    assert out.percentiles["p99"] == 100.0
    assert out.percentiles["max"] == 100.0
    assert out.tool == "openloop (C)"


def test_outcome_names_what_bent_the_schedule() -> None:
    """Requests held back by the pool and late sends are named in the tool column."""
    out = openloop.outcome(_line(held=2, late_1ms=4), b"")
    assert out.tool == "openloop (C), 2 held by the pool of 32, 4 sent >1 ms late"
    assert out.percentiles == {}


def test_rounds_pool_into_one_outcome() -> None:
    """Rounds of one load pooled: counts, errors, time and CPU summed, percentiles over every
    latency of every round (not a mean of the rounds' percentiles)."""
    fast = openloop.outcome(_line(ok=100), array.array("I", [1000] * 100).tobytes())
    slow = array.array("I", [1000] * 98 + [50_000, 60_000]).tobytes()
    out = loadgen.pooled([fast, openloop.outcome(_line(ok=100, held=1), slow)])
    assert (out.ok, out.duration, out.generator_cpu) == (200, 4.0, 0.3)
    assert out.errors == {"io": 2, "status 401": 2}
    assert out.percentiles["p99"] == 50.0  # the 198th of 200 latencies
    assert out.percentiles["max"] == 60.0
    assert out.tool == "openloop (C); openloop (C), 1 held by the pool of 32"
    assert len(out.samples) == 200


def test_rounds_that_report_percentiles_only_pool_into_their_highest() -> None:
    """wrk's rounds carry percentiles, no latencies: pooled, each is the highest of the
    rounds' (the pooled percentile is at most that); one missing in a round is left out."""
    rounds = [
        loadgen.Outcome(10, {}, 1.0, {"p50": 1.0, "p99": 9.0, "max": 20.0}, 0.1, "wrk"),
        loadgen.Outcome(10, {}, 1.0, {"p50": 2.0, "p99": 5.0}, 0.1, "wrk"),
    ]
    assert loadgen.pooled(rounds).percentiles == {"p50": 2.0, "p99": 9.0}


def test_a_closed_loop_part_goes_on_where_the_last_one_stopped(tmp_path: Path) -> None:
    """`Load.skip`: each built-in generator process starts its share of the bodies that far
    in (wrapping), as wrk.lua starts at that line: a load split in rounds sends what one run
    would."""
    bodies = tmp_path / "bodies.txt"
    bodies.write_text("".join(f"token=t{i}\n" for i in range(10)))
    load = Load("127.0.0.1", 1, "/introspect", {}, bodies, 2, 1.0, skip=6)
    progress = multiprocessing.Array("q", 2)
    first, second = (loadgen._Worker(load, i, 2, progress) for i in range(2))
    assert [first.bodies[first.next], second.bodies[second.next]] == [b"token=t6", b"token=t7"]
    wrapped = loadgen._Worker(dataclasses.replace(load, skip=26), 0, 2, progress)
    assert wrapped.bodies[wrapped.next] == b"token=t6"


def test_outcome_without_result_line_is_an_error() -> None:
    """A run that printed no result line fails loudly instead of reporting zeros."""
    with pytest.raises(RuntimeError, match="no result"):
        openloop.outcome("crashed\n", b"")


def _row(name: str, p99: float, ceiling: dict[str, float]) -> Row:
    latency = {"p50": 1.0, "p99": p99, "max": 9.0}
    work: dict[str, float | None] = {"handler_p99_ms": 0.5, "lag_p99_ms": 2.5}
    return Row(name, name, "6,000/s open", "openloop (C)", 6000.0, None, None, None, latency,
               {}, {}, None, work, [], ceiling, [1.2, 2.0])  # fmt: skip


def test_report_sets_open_loop_rows_beside_the_ceiling_at_the_same_rate() -> None:
    """Each open-loop row with a same-rate ceiling gets its p50/p99/max beside it, the ratio,
    and the server's handler p99 and loop lag p99 (work against waiting)."""
    meta = {
        "started": "now", "workers": 2, "connections": 32, "duration": 5.0, "seeded": 0,
        "jwts": 0, "seed_seconds": 0.0, "cpus": 2, "load_average": "0",
    }  # fmt: skip
    rows = [
        _row("ceiling", 2.0, {}),
        _row("local-hit", 3.0, {"p50": 0.5, "p99": 2.0, "max": 4.0}),
    ]
    text = report.render(Results(meta=meta, rows=rows), [])
    table = text[text.index("open loop next to the ceiling") :].splitlines()
    own, ceiling = ["1.00", "3.00", "9.00"], ["0.50", "2.00", "4.00", "1.6x", "1.2", "2.0"]
    assert table[3].split() == ["local-hit", "6,000/s", "open", *own, *ceiling, "0.50", "2.50"]
    assert table[4] == ""  # the ceiling's own row, closed or open, is not set beside itself
