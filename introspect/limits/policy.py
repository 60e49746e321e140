"""The pure parts of usage limits: the `cost` parameter, window arithmetic, and the RateLimit
fields of draft-ietf-httpapi-ratelimit-headers (revision -10/-11 syntax: `RateLimit-Policy`
and `RateLimit` are Structured Field Lists of policy Items with parameters `q`, `w` and `r`,
`t`). No I/O here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from introspect.errors import InvalidRequest

MAX_COST = 1000
# RFC 8941 sf-integer: at most 15 digits.
MAX_SF_INTEGER = 999_999_999_999_999


def cost(value: str | None) -> int:
    """The `cost` extension parameter of an introspection request: 0 to MAX_COST (1 when
    absent); anything else is `invalid_request` naming it."""
    if value is None:
        return 1
    if not (0 < len(value) <= 4 and value.isascii() and value.isdigit()):
        raise InvalidRequest(f"cost: must be an integer from 0 to {MAX_COST}")
    n = int(value)
    if n > MAX_COST:
        raise InvalidRequest(f"cost: must be an integer from 0 to {MAX_COST}")
    return n


def window_number(t: float, window: int) -> int:
    """The fixed window (epoch seconds // window) that instant `t` falls in."""
    return int(t // window)


def reset_in(t: float, window: int) -> int:
    """Whole seconds from `t` until its window ends (at least 1: the end is not yet reached)."""
    return max(1, math.ceil((window_number(t, window) + 1) * window - t))


@dataclass(frozen=True, slots=True)
class Quota:
    """One policy as the fields show it: quota `q` per `w` seconds (None: no window), `r`
    remaining, reset in `t` seconds (None: unknown or never)."""

    name: str
    q: int
    w: int | None
    r: int
    t: int | None


def _string(name: str) -> str:
    """An sf-string (names are validated to printable ASCII without quotes or backslashes)."""
    return '"' + name + '"'


def _integer(n: int) -> int:
    return max(0, min(n, MAX_SF_INTEGER))


def policy_field(quotas: Iterable[Quota]) -> str:
    """The `RateLimit-Policy` field value: `"name";q=Q;w=W, ...`."""
    return ", ".join(
        f"{_string(q.name)};q={_integer(q.q)}" + ("" if q.w is None else f";w={q.w}")
        for q in quotas
    )


def ratelimit_field(quotas: Iterable[Quota]) -> str:
    """The `RateLimit` field value: `"name";r=R;t=T, ...`."""
    return ", ".join(
        f"{_string(q.name)};r={_integer(q.r)}" + ("" if q.t is None else f";t={_integer(q.t)}")
        for q in quotas
    )
