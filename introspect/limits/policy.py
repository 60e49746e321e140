"""The pure parts of usage limits: the `cost` parameter, window arithmetic, and the RateLimit
fields of draft-ietf-httpapi-ratelimit-headers (revision -10/-11 syntax: `RateLimit-Policy`
and `RateLimit` are Structured Field Lists of policy Items with parameters `q`, `w` and `r`,
`t`). No I/O here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from introspect.errors import InvalidRequest

MAX_COST = 1000
# The names of the two fields.
POLICY = "RateLimit-Policy"
RATELIMIT = "RateLimit"
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


# A limit as the fields show it: its name, its `RateLimit-Policy` item (`policy_item`, which
# stays the same while the limit does), the uses remaining, and the seconds until they reset
# (None: never). A plain tuple: the hot path makes one per limit per request.
Shown = tuple[str, str, int, int | None]


def _string(name: str) -> str:
    """An sf-string (names are validated to printable ASCII without quotes or backslashes)."""
    return '"' + name + '"'


def sf_integer(n: int) -> int:
    """`n` clamped to an RFC 8941 sf-integer that is not negative (0 to MAX_SF_INTEGER)."""
    return max(0, min(n, MAX_SF_INTEGER))


def policy_item(name: str, q: int, w: int | None) -> str:
    """One item of the `RateLimit-Policy` field: `"name";q=Q;w=W`."""
    return f"{_string(name)};q={sf_integer(q)}" + ("" if w is None else f";w={w}")


def ratelimit_item(name: str, r: int, t: int | None) -> str:
    """One item of the `RateLimit` field: `"name";r=R;t=T` (on the hot path: one f-string)."""
    if not 0 <= r <= MAX_SF_INTEGER:
        r = sf_integer(r)
    if t is None:
        return f'"{name}";r={r}'
    if not 0 <= t <= MAX_SF_INTEGER:
        t = sf_integer(t)
    return f'"{name}";r={r};t={t}'


def fields(shown: Sequence[Shown], spent: int = 0) -> dict[str, str]:
    """The `RateLimit-Policy` and `RateLimit` fields of `shown`, once `spent` more uses are
    spent from each (`"name";q=Q;w=W, ...` and `"name";r=R;t=T, ...`)."""
    if len(shown) == 1:
        # The usual case (one window), on the hot path: no lists to join.
        name, policy, r, t = shown[0]
        return {POLICY: policy, RATELIMIT: ratelimit_item(name, r - spent, t)}
    return {
        POLICY: ", ".join([x[1] for x in shown]),
        RATELIMIT: ", ".join([ratelimit_item(x[0], x[2] - spent, x[3]) for x in shown]),
    }
