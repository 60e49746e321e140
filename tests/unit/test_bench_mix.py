"""The bench's realistic mix and its prefill (bench/scenarios.py)."""

from __future__ import annotations

import random

from bench.scenarios import mix, mix_prefill
from bench.seed import Registered, Seeded

_NOBODY = Registered("client_x", "secret")


def _seeded() -> Seeded:
    return Seeded(
        _NOBODY,
        [_NOBODY],
        _NOBODY,
        active=[f"live{i}" for i in range(2000)],
        revoked=[f"revoked{i}" for i in range(300)],
        expired=[f"expired{i}" for i in range(300)],
        unknown=[f"unknown{i}" for i in range(100)],
    )


def test_the_final_values_of_the_mix_are_its_revoked_expired_and_unknown_ones() -> None:
    """`final` is exactly the distinct values of the sequence whose answer is final."""
    seeded = _seeded()
    drawn = mix(seeded, 5000, random.Random(1))
    dead = {*seeded.revoked, *seeded.expired, *seeded.unknown}
    assert len(drawn.sequence) == 5000
    assert set(drawn.final) == {v for v in drawn.sequence if v in dead}
    assert len(drawn.final) == len(set(drawn.final))


def test_the_prefill_presents_each_live_value_once() -> None:
    """Each live value of the sequence once, and no final one: those go to every worker
    (the scenario's `everywhere`), before it."""
    drawn = mix(_seeded(), 5000, random.Random(2))
    prefill = mix_prefill(drawn)
    final = set(drawn.final)
    assert sorted(prefill) == sorted(set(drawn.sequence) - final)


def test_the_mix_draws_over_its_population_at_random_when_more_are_seeded() -> None:
    """With more seeded than the population, each kind's pool is that share of it, spread
    over the whole table (not its first rows); with fewer, or no bound, every value may
    come. 2,600 seeded, population 260: 200 live, 30 revoked, 30 expired."""
    seeded = _seeded()
    drawn = mix(seeded, 20_000, random.Random(4), population=260)
    values = set(drawn.sequence)
    live = values & set(seeded.active)
    assert len(live) <= 200
    assert len(values & set(seeded.revoked)) <= 30
    assert len(values & set(seeded.expired)) <= 30
    assert max(int(v.removeprefix("live")) for v in live) > 1000
    assert len(set(mix(seeded, 20_000, random.Random(4), population=0).sequence)) > 500
    assert mix(seeded, 5000, random.Random(5), population=10_000) == mix(
        seeded, 5000, random.Random(5), population=0
    )
