"""The bench report's target rows of issue 19, and how the open-loop rate is chosen."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from bench import report
from bench.report import Results, Row, Target
from bench.run import open_rate
from bench.scenarios import MIX_POPULATION


def _meta(seeded: int = 100_000) -> dict[str, Any]:
    return {
        "started": "now", "workers": 2, "connections": 32, "duration": 5.0, "seeded": seeded,
        "jwts": 0, "seed_seconds": 0.0, "cpus": 2, "load_average": "0",
        "mix_over": MIX_POPULATION,
    }  # fmt: skip


def _row(
    name: str,
    *,
    rate: float = 9000.0,
    pct: float | None = None,
    p99: float = 1.0,
    ceiling_p99: float | None = None,
    errors: dict[str, int] | None = None,
    rounds: list[float] | None = None,
) -> Row:
    mode = "32 conns" if ceiling_p99 is None else f"{rate:,.0f}/s open"
    beside = {} if ceiling_p99 is None else {"p50": 0.2, "p99": ceiling_p99, "max": 9.0}
    return Row(name, name, mode, "tool", rate, None, pct, None, {"p50": 0.3, "p99": p99},
               errors or {}, {}, None, {}, [], beside, rounds or [])  # fmt: skip


def _by_figure(checks: list[Target]) -> dict[str, Target]:
    return {t.figure: t for t in checks}


def _checks(
    *rows: Row, seeded: int = 100_000, earlier: Sequence[dict[str, Any]] = ()
) -> dict[str, Target]:
    results = Results(meta=_meta(seeded), rows=list(rows))
    return _by_figure(report.targets(results, full_size_run=False, earlier=earlier))


LOCAL_OPEN = "in-process hit, open-loop p99 / ceiling's"
MIX_OPEN = "mix, open-loop p99 / ceiling's"


def test_open_loop_p99_ratios_against_their_targets() -> None:
    """local-hit-open passes at 1.3x the ceiling's p99 at the same rate, mix-open fails past
    2x; the measured text gives the ratio, both p99s and the rate."""
    checks = _checks(
        _row("local-hit-open", rate=4700, p99=1.3, ceiling_p99=1.0),
        _row("mix-open", rate=4700, p99=2.1, ceiling_p99=1.0),
    )
    assert checks[LOCAL_OPEN] == Target(
        LOCAL_OPEN, "1.3x (one run; pooled 1.30 / 1.00 ms at 4,700/s)", "<= 1.3x", True
    )
    assert checks[MIX_OPEN].passed is False
    assert checks[MIX_OPEN].target == "<= 2x"


def test_open_loop_ratio_is_the_median_of_the_rounds() -> None:
    """Measured in rounds alternating with the ceiling's, the figure is the median of the
    rounds' ratios, not the ratio of the pooled p99s (which one burst of the machine in one
    round sets): 1.8x passes although the pooled p99s are 5x apart."""
    checks = _checks(
        _row("mix-open", p99=5.0, ceiling_p99=1.0, rounds=[1.6, 9.0, 1.2, 2.0]),
        _row("local-hit-open", p99=1.0, ceiling_p99=1.0, rounds=[1.2, 1.4, 1.5]),
    )
    assert checks[MIX_OPEN] == Target(
        MIX_OPEN, "1.8x (median of 4 rounds; pooled 5.00 / 1.00 ms at 9,000/s)", "<= 2x", True
    )
    assert checks[LOCAL_OPEN].passed is False
    assert checks[LOCAL_OPEN].measured.startswith("1.4x (median of 3 rounds")


def test_open_loop_ratio_read_from_a_run_that_was_all_open() -> None:
    """With --rate, `local-hit` itself ran open loop beside the ceiling: its row counts; a
    closed-loop row without a same-rate ceiling never does."""
    checks = _checks(_row("local-hit", p99=3.0, ceiling_p99=1.0), _row("mix", p99=1.0))
    assert checks[LOCAL_OPEN].passed is False
    assert checks[LOCAL_OPEN].measured.startswith("3.0x")
    assert checks[MIX_OPEN] == Target(MIX_OPEN, "-", "<= 2x", None)


def test_open_loop_with_errors_fails() -> None:
    """A fast p99 with errors beside it is no pass."""
    checks = _checks(_row("local-hit-open", p99=1.0, ceiling_p99=1.0, errors={"timeout": 3}))
    assert checks[LOCAL_OPEN].passed is False


@pytest.mark.parametrize(
    ("name", "figure", "minimum"),
    [
        ("mix", "mix, % of ceiling", 70.0),
        ("redis-hit", "Redis hit, % of ceiling", 65.0),
        ("cold", "cold, % of ceiling", 50.0),
        ("local-hit", "in-process hit, % of ceiling", 85.0),
    ],
)
def test_closed_loop_shares(name: str, figure: str, minimum: float) -> None:
    """Each closed-loop share passes at its minimum and fails just under it."""
    assert _checks(_row(name, pct=minimum))[figure].passed is True
    assert _checks(_row(name, pct=minimum - 0.5))[figure].passed is False
    assert _checks(_row(name, pct=minimum))[figure].target == f">= {minimum:.0f} %"


LIMITED = "limited hit, % of in-process hit"


def test_the_limited_share_compares_shares_of_the_ceiling() -> None:
    """limited-hit against local-hit by their % of the ceiling measured beside each, which
    cancels the machine's drift between them: 182 % against 221 % is 82 % and passes,
    although the req/s (measured in a slower and a faster minute) are 63 % apart."""
    checks = _checks(
        _row("limited-hit", rate=12_600, pct=182.0), _row("local-hit", rate=20_000, pct=221.0)
    )
    assert checks[LIMITED] == Target(LIMITED, "82 % (182 / 221 % of ceiling)", ">= 80 %", True)
    slower = _checks(_row("limited-hit", pct=176.0), _row("local-hit", pct=221.0))
    assert slower[LIMITED].passed is False
    unmeasured = _checks(_row("limited-hit", rate=7_000), _row("local-hit", rate=10_000))
    assert unmeasured[LIMITED] == Target(LIMITED, "70 % (7,000 / 10,000 req/s)", ">= 80 %", False)
    assert _checks(_row("local-hit", pct=221.0))[LIMITED].passed is None


def test_the_limited_share_is_the_median_of_rounds_alternating_with_local_hit() -> None:
    """limited-hit measured in rounds beside local-hit: the median of the rounds' shares,
    whatever their % of the ceiling say (one slow round does not decide)."""
    limited = _row("limited-hit", pct=100.0)
    limited.twin, limited.twin_shares = "local-hit", [84.0, 40.0, 81.0, 86.0]
    checks = _checks(limited, _row("local-hit", pct=221.0))
    assert checks[LIMITED] == Target(
        LIMITED, "82 % (median of 4 alternating rounds: 84 40 81 86)", ">= 80 %", True
    )
    limited.twin_shares = [79.0, 79.5, 95.0]
    assert _checks(limited, _row("local-hit", pct=100.0))[LIMITED].passed is False


def test_the_closed_loop_p99_target_is_kept_beside_the_open_loop_ratios() -> None:
    """The earlier issue's closed-loop p99 line stays (a failing figure is not dropped), next to
    the open-loop ratio."""
    checks = _checks(_row("local-hit", pct=90, p99=6.0))
    assert checks["in-process hit, closed-loop p99"].passed is False
    assert _checks(_row("local-hit", pct=90, p99=4.0))["in-process hit, closed-loop p99"].passed


def _paired(
    seeded: int,
    against: int | None,
    shares: dict[str, list[float]],
    twin_pct: float = 80.0,
    code: str | None = None,
) -> dict[str, Any]:
    """A results.json's data: cold and mix each measured in rounds beside its twin on the
    other stores' server (--against), the twin at `twin_pct` % of the ceiling."""
    rows = []
    for name, each in shares.items():
        rows.append({"name": name, "ceiling_pct": 1.0, "twin": f"{name}@x", "twin_shares": each})
        rows.append({"name": f"{name}@x", "ceiling_pct": twin_pct, "twin": None})
    return {"meta": {**_meta(seeded), "code": code, "against": against}, "scenarios": rows}


COLD_SCALE = "cold, 10M seeded vs 1M, points of ceiling"
MIX_SCALE = "mix, 10M seeded vs 1M, points of ceiling"


def test_ten_million_within_five_points_of_one_million_in_alternating_rounds() -> None:
    """A 10M run against 1M (--against): the 1M twin's % of the ceiling times the median of
    the rounds' shares, less the twin's. Cold at 95 % of a 1M twin at 80 % is 4 points down
    and passes; mix at 92 % of it, 6.4 down, fails; one outlying round does not decide."""
    run = _paired(10_000_000, 1_000_000, {"cold": [95, 40, 96, 94], "mix": [92, 92, 150]})
    checks = _by_figure(report.scale_targets(Results(meta=_meta(1_000_000)), [run]))
    assert checks[COLD_SCALE] == Target(
        COLD_SCALE,
        "-4 (76 % vs 80 %; median of 4 alternating rounds, run now)",
        "within 5 points",
        True,
    )
    assert checks[MIX_SCALE].passed is False
    assert checks[MIX_SCALE].measured.startswith("-6 (74 % vs 80 %")


def test_a_one_million_run_against_ten_million_reads_the_other_way() -> None:
    """`--credentials 1000000 --against 10000000`: the twin is the 10M side; 1M at 105 % of
    a 10M twin at 80 % puts 10M 4 points below."""
    run = _paired(1_000_000, 10_000_000, {"cold": [105.0], "mix": [100.0]})
    checks = _by_figure(report.scale_targets(Results(meta=_meta(1_000_000)), [run]))
    assert checks[COLD_SCALE].measured.startswith("-4 (80 % vs 84 %")
    assert checks[COLD_SCALE].passed is True
    assert checks[MIX_SCALE].measured.startswith("+0 (80 % vs 80 %")


def test_the_rounds_of_every_side_by_side_run_of_the_same_code_are_pooled() -> None:
    """This run's rounds and those of earlier runs of the same code are judged together (one
    run's 8 rounds do not settle 5 points here); a run of other code is not. Cold: 3 rounds
    at -3 to -5 points and one at -40 give a median of -4.4, a pass."""
    code = "abc"
    rows = [_row("cold", pct=76.0), _row("cold@1M", pct=80.0)]
    rows[0].twin, rows[0].twin_shares = "cold@1M", [95.0, 96.0, 94.0]
    meta = {**_meta(10_000_000), "code": code, "against": 1_000_000}
    earlier = [
        _paired(10_000_000, 1_000_000, {"cold": [50.0]}, code=code),
        _paired(10_000_000, 1_000_000, {"cold": [10.0, 10.0, 10.0, 10.0]}, code="old"),
    ]
    checks = _by_figure(report.scale_targets(Results(meta=meta, rows=rows), earlier))
    assert checks[COLD_SCALE].passed is True
    assert checks[COLD_SCALE].measured == (
        "-4 (76 % vs 80 %; median of 4 alternating rounds, runs now, now)"
    )
    assert checks[MIX_SCALE].passed is None  # no run measured it


def test_a_mix_over_another_population_is_not_judged() -> None:
    """`--mix-over 0` draws the mix over all 10M seeded: a traffic of more distinct callers,
    not the same traffic over more data. Cold is judged from that run, the mix is not."""
    run = _paired(10_000_000, 1_000_000, {"cold": [100.0], "mix": [80.0]})
    run["meta"]["mix_over"] = 0
    checks = _by_figure(report.scale_targets(Results(meta=_meta(1_000_000)), [run]))
    assert checks[COLD_SCALE].passed is True
    assert checks[MIX_SCALE].passed is None


@pytest.mark.parametrize(
    ("earlier", "code"),
    [
        ([], "abc"),
        ([_paired(10_000_000, 10_000_000, {"cold": [90.0], "mix": [90.0]}, code="abc")], "abc"),
        ([_paired(100_000, 10_000_000, {"cold": [90.0], "mix": [90.0]}, code="abc")], "abc"),
        ([_paired(10_000_000, None, {"cold": [90.0], "mix": [90.0]}, code="abc")], "abc"),
        ([_paired(10_000_000, 1_000_000, {"cold": [90.0], "mix": [90.0]}, code="old")], "abc"),
        ([_paired(10_000_000, 1_000_000, {"cold": [], "mix": []}, code="abc")], "abc"),
    ],
)
def test_scale_is_not_applicable_without_a_side_by_side_run(
    earlier: list[dict[str, Any]], code: str
) -> None:
    """Without a run of the same code that measured 10M and 1M side by side (sizes of both
    classes, rounds beside a twin), the figures are n/a, not a pass or a fail."""
    results = Results(meta={**_meta(1_000_000), "code": code}, rows=[_row("cold", pct=50.0)])
    checks = _by_figure(report.scale_targets(results, earlier))
    assert checks[COLD_SCALE].passed is None
    assert checks[MIX_SCALE].passed is None


def test_earlier_runs_are_the_readable_results_newest_first(tmp_path: Path) -> None:
    """Every results.json under bench/results, newest first; unreadable files are passed over."""
    for stamp, seeded in (("20260101-000000", 1_000_000), ("20260104-000000", 10_000_000)):
        (tmp_path / stamp).mkdir()
        data = _paired(seeded, None, {"cold": [1.0]})
        (tmp_path / stamp / "results.json").write_text(json.dumps(data))
    (tmp_path / "20260105-000000").mkdir()
    (tmp_path / "20260105-000000" / "results.json").write_text("{not json")
    found = report.earlier_runs(tmp_path)
    assert [run["meta"]["seeded"] for run in found] == [10_000_000, 1_000_000]


def test_open_rate_is_half_the_ceiling() -> None:
    """Open-loop scenarios run at half the ceiling's closed-loop throughput, in hundreds, unless
    a rate was chosen."""
    assert open_rate(None, _row("ceiling", rate=9478.0)) == 4700.0
    assert open_rate(3000.0, _row("ceiling", rate=9478.0)) == 3000.0
    assert open_rate(None, None) == 1000.0
