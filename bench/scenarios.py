"""The scenarios: which credentials each one presents, in what order, to which server.

The seeded live credentials are cut into disjoint slices, so that no
scenario warms a cache for another: a small hot set (in-process hits), a
Redis set (hits in Redis with the in-process cache off), credentials for
the revocations, a long run never presented before (cold, with both cache
layers off as well), and the rest to fill the in-process caches for the
memory figure. The mix draws from everything.

The JWT access tokens (issued apart, see `seed.issue_jwts`) are cut the same
way: a hot set of the same size, and a set as large as the Redis one, so
that `jwt-hit` and `jwt-verify` differ from `local-hit` and `redis-hit` only
by the kind of credential presented.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from bench.seed import Registered, Seeded

HOT = 1_000
REDIS_SET = 10_000
JWTS = HOT + REDIS_SET  # JWT access tokens to issue: a hot set, then a set held in Redis
ZIPF_EXPONENT = 1.0
# The realistic mix: shares of what resource servers present.
MIX_REVOKED = 0.05
MIX_EXPIRED = 0.02
MIX_UNKNOWN = 0.05
# The credentials the mix draws from (issue 19's "Zipf over 1M"): with more seeded, this many
# of them chosen at random, so that 10,000,000 seeded measures the same traffic over ten times
# the data, not a traffic of ten times as many callers (see `mix`). 0: all seeded.
MIX_POPULATION = 1_000_000

# Server configurations: the environment each adds to the server's.
DEFAULT = "default"
NO_LOCAL = "no-local"
NO_CACHE = "no-cache"
CONFIGS: dict[str, dict[str, str]] = {
    DEFAULT: {},
    NO_LOCAL: {"INTROSPECT_LOCAL_CACHE_SIZE": "0"},
    NO_CACHE: {"INTROSPECT_LOCAL_CACHE_SIZE": "0", "INTROSPECT_REDIS_CACHE_TTL": "0"},
}


@dataclass(frozen=True, slots=True)
class Scenario:
    """One load scenario: what to send, where, and what it is measured against."""

    name: str
    title: str
    config: str  # a key of CONFIGS
    path: str
    client: Registered
    bodies: Path  # the measured sequence, one form body per line
    warmup: Path  # the warmup sequence (a different slice when bodies must be unseen)
    prefill: Path | None = None  # sent once each before the warmup, untimed
    # Sent once to each worker (over connections pinned to it) before the prefill, untimed.
    everywhere: Sequence[str] = ()
    open_loop: bool = False  # measured at a fixed offered rate rather than closed loop
    # What (nearly) every request must do, by the server's counters, for the scenario to be
    # what it says: a key of scrape.Delta.per_request.
    expect: str | None = None


@dataclass(frozen=True, slots=True)
class Slices:
    """Disjoint slices of the live credentials, one per use."""

    hot: Sequence[str]
    redis: Sequence[str]
    revocation: Sequence[tuple[str, int]]
    cold: Sequence[str]
    cold_warmup: Sequence[str]
    fill: Sequence[str]
    jwt_hot: Sequence[str]
    jwt_redis: Sequence[str]


def slices(seeded: Seeded, revocations: int, cold: int) -> Slices:
    """Cut the live credentials (already in random order) into the scenarios' slices."""
    active = seeded.active
    redis_set = min(REDIS_SET, len(active) // 10)
    a = min(HOT, len(active) // 20)
    b = a + redis_set
    c = b + revocations
    cold = max(0, min(cold, (len(active) - c) // 2))
    d = c + cold
    e = d + max(1, cold // 10)
    if e > len(active):
        raise ValueError(f"{len(active)} live credentials are too few for these scenarios")
    owners = seeded.active_owner
    return Slices(
        hot=active[:a],
        redis=active[a:b],
        revocation=list(zip(active[b:c], owners[b:c], strict=True)),
        cold=active[c:d],
        cold_warmup=active[d:e],
        fill=active[e:],
        jwt_hot=seeded.jwt[:HOT],
        jwt_redis=seeded.jwt[HOT:],
    )


def _write(path: Path, tokens: Sequence[str]) -> Path:
    with open(path, "w") as f:
        f.writelines(f"token={token}\n" for token in tokens)
    return path


def _repeat_shuffled(tokens: Sequence[str], length: int, rng: random.Random) -> list[str]:
    out: list[str] = []
    while len(out) < length:
        batch = list(tokens)
        rng.shuffle(batch)
        out += batch
    return out[:length]


def zipf(tokens: Sequence[str], count: int, rng: random.Random) -> list[str]:
    """`count` draws from `tokens` with P(rank k) proportional to 1/k**ZIPF_EXPONENT."""
    weights = itertools.accumulate(1.0 / (k**ZIPF_EXPONENT) for k in range(1, len(tokens) + 1))
    return rng.choices(tokens, cum_weights=list(weights), k=count)


@dataclass(frozen=True, slots=True)
class Mix:
    """The realistic mix's sequence, and the distinct values in it whose answer is final
    (revoked, expired, unknown)."""

    sequence: list[str]
    final: list[str]


def mix(seeded: Seeded, count: int, rng: random.Random, population: int = MIX_POPULATION) -> Mix:
    """The realistic mix: Zipf over live and revoked credentials, some expired and unknown.

    Every share draws from a fixed pool, so values repeat: Zipf over the live and over the
    revoked credentials, uniform over the expired ones and over the `seed.UNKNOWN`
    well-formed values never stored (not a fresh value per request). Most draws are the
    Zipf head, but the tail is long: in a 5 s quick run (100,000 seeded) about 31 % of the
    requests present a credential for the first time, hence the mix scenario's prefill.

    With more than `population` seeded (0: no bound), the live, revoked and expired pools
    are each that share of their kind, chosen at random over the whole table. Drawn over
    all of 10,000,000, the mix is another traffic: 38 % more distinct live credentials in a
    20 s run (137,000 against 99,000), each a miss the first time each worker meets it, which
    no in-process cache can save.
    """
    share = min(1.0, population / seeded.total) if population and seeded.total else 1.0

    def pool(values: list[str]) -> list[str]:
        return values if share == 1.0 else rng.sample(values, round(len(values) * share))

    revoked = int(count * MIX_REVOKED)
    expired = int(count * MIX_EXPIRED)
    unknown = int(count * MIX_UNKNOWN)
    out = zipf(pool(seeded.active), count - revoked - expired - unknown, rng)
    live = len(out)
    out += zipf(pool(seeded.revoked), revoked, rng)
    out += rng.choices(pool(seeded.expired), k=expired)
    out += rng.choices(seeded.unknown, k=unknown)
    final = list(dict.fromkeys(out[live:]))
    rng.shuffle(out)
    return Mix(out, final)


def mix_prefill(drawn: Mix) -> list[str]:
    """The live values the mix scenario presents before its warmup (untimed), each once, so
    that it measures a server that has seen this mix for hours (into Redis and one worker's
    memory; how many each worker then holds is the cache's to say).

    Its final values (revoked, expired, unknown) go to every worker before them
    (`Scenario.everywhere`): a worker keeps those without age, but Redis keeps an unknown
    one only INTROSPECT_NEGATIVE_CACHE_TTL (30 s), so one presented to a single worker was
    read from Postgres during the measured run by the other. The live ones go last: a
    worker keeps a live entry INTROSPECT_LOCAL_CACHE_TTL (60 s) unless presented again, and
    live entries filled early in a long prefill were read from Redis again during the run.
    (The final values used to be sent HIT_PREFILL times over every connection, three
    quarters of a prefill that, with both sides of --against at once, lasted 96 s.)
    """
    final = set(drawn.final)
    return [value for value in dict.fromkeys(drawn.sequence) if value not in final]


# How many times a hit scenario presents each of its credentials before its warmup: with
# connections hashed at random over 2 workers, a worker misses one with odds 2 x 2^-16.
HIT_PREFILL = 16


def build(
    seeded: Seeded,
    cut: Slices,
    workdir: Path,
    sequence: int,
    rng: random.Random,
    population: int = MIX_POPULATION,
) -> dict[str, Scenario]:
    """Every load scenario by name, its body files written under `workdir`.

    The JWT scenarios are there only when JWTs were issued.
    """
    rs, app = seeded.resource_server, seeded.apps[0]

    def local_hit(name: str, title: str, tokens: Sequence[str]) -> Scenario:
        bodies = _write(workdir / f"{name}.txt", _repeat_shuffled(tokens, sequence, rng))
        # Each credential presented HIT_PREFILL times before the warmup (untimed), over every
        # connection, so that every worker holds it: a short warmup on a busy machine left
        # keys unseen by one worker, and their first uses (a Redis read; for a limited key a
        # window take too) were then what the row measured.
        warm = _repeat_shuffled(tokens, HIT_PREFILL * len(tokens), rng)
        return Scenario(
            name,
            title,
            DEFAULT,
            "/introspect",
            rs,
            bodies,
            bodies,
            prefill=_write(workdir / f"{name}-prefill.txt", warm),
            expect="local_hits",
        )

    def redis_hit(name: str, title: str, tokens: Sequence[str]) -> Scenario:
        bodies = _write(workdir / f"{name}.txt", _repeat_shuffled(tokens, sequence, rng))
        return Scenario(
            name,
            title,
            NO_LOCAL,
            "/introspect",
            rs,
            bodies,
            bodies,
            prefill=_write(workdir / f"{name}-prefill.txt", tokens),
            expect="redis_hits",
        )

    local = local_hit("local-hit", "hit in the in-process cache", cut.hot)
    cold = _write(workdir / "cold.txt", cut.cold)
    drawn = mix(seeded, sequence, rng, population)
    mixed = _write(workdir / "mix.txt", drawn.sequence)
    token = workdir / "token.txt"
    token.write_text("grant_type=client_credentials\n")
    ceiling = Scenario(
        "ceiling",
        "ceiling: parse + orjson, no I/O",
        DEFAULT,
        "/introspect",
        rs,
        local.bodies,
        local.bodies,
    )
    scenarios = [
        ceiling,
        local,
        replace(
            local, name="local-hit-open", title=f"{local.title}, at a fixed rate", open_loop=True
        ),
        redis_hit("redis-hit", "hit in Redis (in-process cache off)", cut.redis),
        Scenario(
            "cold",
            "cold: both caches off, each credential new, Postgres answers",
            NO_CACHE,
            "/introspect",
            rs,
            cold,
            _write(workdir / "cold-warmup.txt", cut.cold_warmup),
            expect="uncached",
        ),
        Scenario(
            "mix",
            "realistic mix (Zipf, revoked, expired, unknown), steady state: each credential"
            " of the sequence presented once before (untimed)",
            DEFAULT,
            "/introspect",
            rs,
            mixed,
            mixed,
            # Without it, a few seconds over a sequence drawn from 100,000 or more credentials
            # measure the start of a server's day: about 31 % of the requests (quick run) were
            # a credential's first presentation, going to Postgres; a server seeing this mix
            # for hours has presented nearly every one of them before (see `mix`).
            prefill=_write(workdir / "mix-prefill.txt", mix_prefill(drawn)),
            everywhere=drawn.final,
        ),
        Scenario(
            "mix-open",
            "realistic mix at a fixed offered rate",
            DEFAULT,
            "/introspect",
            rs,
            mixed,
            mixed,
            open_loop=True,
        ),
        Scenario("token", "token issuance (POST /token)", DEFAULT, "/token", app, token, token),
    ]
    if seeded.limited:
        scenarios.append(
            local_hit(
                "limited-hit",
                "hit in the in-process cache, API key with a (never exhausted) rate limit",
                seeded.limited,
            )
        )
    if cut.jwt_hot and cut.jwt_redis:
        scenarios += [
            local_hit(
                "jwt-hit", "JWT, hit in the in-process cache (no signature check)", cut.jwt_hot
            ),
            redis_hit(
                "jwt-verify",
                "JWT, ES256 signature verified, then hit in Redis (in-process cache off)",
                cut.jwt_redis,
            ),
        ]
    return {s.name: s for s in scenarios}
