"""The pure parts of rate limits and credits: `cost`, window arithmetic, the RateLimit fields,
and the validation of the limits an admin sets."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from introspect.admin import validation
from introspect.errors import Invalid, InvalidRequest
from introspect.limits import policy
from introspect.store.records import Limits, Refill, Window
from introspect.web.headers import metered_headers
from tests.integration.test_limits import parse_fields

_NAME = st.from_regex(r"[A-Za-z0-9_-]{1,32}", fullmatch=True)


@given(st.integers(0, policy.MAX_COST))
def test_every_cost_in_range_is_read_as_itself(n: int) -> None:
    """`cost` from 0 to 1000, written in decimal, is that many uses."""
    assert policy.cost(str(n)) == n


@given(st.text(max_size=25))
def test_any_other_cost_is_invalid_request_naming_it(value: str) -> None:
    """Anything but a decimal from 0 to 1000 (a sign, spaces, exponents, other digits, huge
    numbers) is `invalid_request` naming `cost`."""
    if value.isascii() and value.isdigit() and 0 < len(value) <= 4 and int(value) <= 1000:
        return
    with pytest.raises(InvalidRequest, match=r"^cost: "):
        policy.cost(value)


def test_no_cost_is_one_use() -> None:
    """Without `cost`, an answer counts one use."""
    assert policy.cost(None) == 1


@given(st.floats(0, 4e9, allow_nan=False), st.integers(1, 86_400))
def test_reset_is_the_time_left_in_the_window_rounded_up(t: float, window: int) -> None:
    """`t` falls in its window, and the reset is the whole seconds left in it (at least 1)."""
    number = policy.window_number(t, window)
    end = (number + 1) * window
    assert number * window <= t < end
    reset = policy.reset_in(t, window)
    assert 1 <= reset <= window
    assert reset == max(1, math.ceil(end - t))


_QUOTAS = st.lists(
    st.tuples(
        _NAME,
        st.integers(0, 10**15),
        st.none() | st.integers(1, 10**7),
        st.integers(-10, 10**16),
        st.none() | st.integers(0, 10**16),
    ),
    min_size=1,
    max_size=5,
    unique_by=lambda q: q[0],
)


@given(_QUOTAS, st.integers(0, policy.MAX_COST))
def test_the_fields_are_structured_lists_that_parse_back(
    quotas: list[tuple[str, int, int | None, int, int | None]], spent: int
) -> None:
    """`RateLimit-Policy` and `RateLimit` list each policy once, as a quoted name with
    non-negative sf-integer parameters (q, w; r after `spent` uses, t), clamped to what
    sf-integers hold."""
    shown = [(name, policy.policy_item(name, q, w), r, t) for name, q, w, r, t in quotas]
    fields = policy.fields(shown, spent)
    policies = parse_fields(fields["RateLimit-Policy"])
    states = parse_fields(fields["RateLimit"])
    for name, q, w, r, t in quotas:
        assert policies[name]["q"] == min(q, policy.MAX_SF_INTEGER)
        assert policies[name].get("w") == w
        assert states[name]["r"] == max(0, min(r - spent, policy.MAX_SF_INTEGER))
        assert states[name].get("t") == (None if t is None else min(t, policy.MAX_SF_INTEGER))


_WINDOWS = st.lists(
    st.fixed_dictionaries(
        {"name": _NAME, "limit": st.integers(1, 10**9), "window": st.integers(1, 86_400)}
    ),
    max_size=4,
    unique_by=lambda w: w["name"],
)


@given(_WINDOWS)
def test_valid_rate_limits_are_taken_as_given(windows: list[dict[str, object]]) -> None:
    """Up to 4 rate limits with unique names, limits and windows in range, are kept in order."""
    assert validation.rate_limits(windows, "rate_limits") == tuple(
        Window(str(w["name"]), int(w["limit"]), int(w["window"]))  # type: ignore[call-overload]
        for w in windows
    )


@given(_WINDOWS.filter(bool), st.data())
def test_a_fifth_limit_or_a_repeated_name_is_refused(
    windows: list[dict[str, object]], data: st.DataObject
) -> None:
    """A fifth rate limit, or a name given twice, is refused naming the field."""
    repeated = [*windows, {**data.draw(st.sampled_from(windows)), "limit": 1}]
    if len(repeated) > validation.MAX_RATE_LIMITS:
        with pytest.raises(Invalid, match=r"^rate_limits: at most 4"):
            validation.rate_limits(repeated, "rate_limits")
    else:
        with pytest.raises(Invalid, match=rf"^rate_limits\[{len(windows)}\]\.name: "):
            validation.rate_limits(repeated, "rate_limits")


@given(
    st.integers(-(10**13), 10**13),
    st.none() | st.tuples(st.integers(-5, 10**13), st.integers(-5, 10**8)),
)
def test_credits_are_taken_in_range_and_refused_naming_the_member(
    remaining: int, refill: tuple[int, int] | None
) -> None:
    """`credits` holds 0 to 10^12 remaining and a refill of 0 to 10^12 every 60 s or more;
    anything out of range is refused naming the member."""
    body: dict[str, object] = {"remaining": remaining}
    if refill is not None:
        body["refill"] = {"amount": refill[0], "interval": refill[1]}
    ok_remaining = 0 <= remaining <= validation.MAX_CREDITS
    ok_refill = refill is None or (
        0 <= refill[0] <= validation.MAX_CREDITS
        and validation.MIN_REFILL_INTERVAL <= refill[1] <= validation.MAX_REFILL_INTERVAL
    )
    if ok_remaining and ok_refill:
        assert validation.credits(body, "credits") == (
            remaining,
            None if refill is None else Refill(*refill),
        )
    else:
        with pytest.raises(
            Invalid, match=r"^credits\.(remaining|refill\.amount|refill\.interval): "
        ):
            validation.credits(body, "credits")


@given(_WINDOWS, st.booleans(), st.integers(0, 2**40))
def test_limits_read_back_as_stored(
    windows: list[dict[str, object]], credits: bool, generation: int
) -> None:
    """The JSON kept in Postgres and Redis reads back as the same limits."""
    limits = Limits(
        "client:c",
        validation.rate_limits(windows, "rate_limits"),
        credits,
        generation if credits else 0,
        Refill(5, 60) if credits else None,
    )
    assert Limits.from_stored("client:c", limits.stored()) == limits


@given(_QUOTAS, st.integers(0, policy.MAX_COST), st.none() | st.integers(1, 86_400), _QUOTAS)
def test_a_limited_answer_carries_its_fields_once_and_is_never_stored(
    quotas: list[tuple[str, int, int | None, int, int | None]],
    spent: int,
    retry_after: int | None,
    before: list[tuple[str, int, int | None, int, int | None]],
) -> None:
    """The headers of a limited credential's answer: JSON, `no-store` (and no `Pragma`, which
    no introspection answer carries), each RateLimit field once as the meter made it, and
    `Retry-After` only when refused with one; nothing left over from an answer built before
    (the fixed part is shared)."""
    metered_headers(
        policy.fields([(q[0], policy.policy_item(q[0], q[1], q[2]), q[3], q[4]) for q in before])
    )
    shown = [(name, policy.policy_item(name, q, w), r, t) for name, q, w, r, t in quotas]
    fields = policy.fields(shown, spent)
    if retry_after is not None:
        fields["Retry-After"] = str(retry_after)
    headers = metered_headers(fields)
    assert sorted(headers) == sorted(
        ["Content-Type", "Cache-Control", "RateLimit-Policy", "RateLimit"]
        + ([] if retry_after is None else ["Retry-After"])
    )
    assert headers["Content-Type"] == "application/json"
    assert headers["Cache-Control"] == "no-store"
    assert "Pragma" not in headers
    for name in ("RateLimit-Policy", "RateLimit"):
        assert parse_fields(headers[name]) == parse_fields(fields[name])
        assert set(parse_fields(headers[name])) == {q[0] for q in quotas}
    assert headers.get("Retry-After") == (None if retry_after is None else str(retry_after))
