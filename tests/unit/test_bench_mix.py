"""The bench's realistic mix and its prefill (bench/scenarios.py)."""

from __future__ import annotations

import random
from collections import Counter

from bench.scenarios import HIT_PREFILL, mix, mix_prefill
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


def test_the_prefill_presents_live_values_once_and_final_ones_to_every_worker() -> None:
    """Each live value of the sequence once; each final one HIT_PREFILL times, so that every
    worker holds it (an unknown one outlives its 30 s in Redis only in a worker's memory).
    The live ones come last, so that none has aged in a worker by the prefill's end."""
    drawn = mix(_seeded(), 5000, random.Random(2))
    prefill = mix_prefill(drawn, random.Random(3))
    counts = Counter(prefill)
    final = set(drawn.final)
    assert set(counts) == set(drawn.sequence)
    assert all(counts[v] == (HIT_PREFILL if v in final else 1) for v in counts)
    first_live = next(i for i, v in enumerate(prefill) if v not in final)
    assert all(v not in final for v in prefill[first_live:])


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
