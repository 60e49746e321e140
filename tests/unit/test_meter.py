"""The meter's decision from memory: the one-window shortcut (`Meter._spent_from_one`) gives
exactly the answer and spends exactly what the general loop (`Meter._decide`) does, and
steps aside in every case it does not cover.

Deciding from leases already held touches neither store, so these meters have none."""

from __future__ import annotations

import dataclasses
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from introspect.limits import meter as meter_module
from introspect.limits.meter import Meter, _WindowLease
from introspect.store.records import Limits, Window

ANSWER = b'{"active":true}'
NOW = 1_796_000_000.5


@st.composite
def _states(draw: st.DrawFn) -> tuple[Limits, dict[tuple[str, str, int, int], _WindowLease]]:
    """A limit set (one window or more, credits or not) and the window leases a worker holds
    for it: none, one of an earlier window, or one of this window with some uses left."""
    owner = draw(st.sampled_from(["api_key:key_a", "client:client_b"]))
    windows = tuple(
        Window(f"w{i}", draw(st.integers(1, 10**9)), draw(st.sampled_from([1, 60, 3600, 86400])))
        for i in range(draw(st.integers(1, 3)))
    )
    limits = Limits(owner, windows, credits=draw(st.booleans()))
    leases = {}
    for window in windows:
        number = int(NOW) // window.window
        held = draw(st.sampled_from(["none", "earlier", "current"]))
        if held != "none":
            leases[(owner, window.name, window.window, window.limit)] = _WindowLease(
                number - 1 if held == "earlier" else number,
                left=draw(st.integers(0, 50)),
                free=draw(st.integers(0, 10**6)),
            )
    return limits, leases


def _meter(limits: Limits, leases: dict[tuple[str, str, int, int], _WindowLease]) -> Meter:
    meter = Meter(None, None)  # type: ignore[arg-type]  # (no take: no store)
    meter._windows = {key: dataclasses.replace(lease) for key, lease in leases.items()}
    meter._plans[limits.owner] = meter_module._plan(limits)
    return meter


@given(_states(), st.integers(0, 5))
def test_the_one_window_shortcut_decides_as_the_general_loop(
    state: tuple[Limits, dict[tuple[str, str, int, int], _WindowLease]], cost: int
) -> None:
    """Whenever the shortcut answers, `_decide` gives the same answer (body, fields, active)
    and leaves the same leases; it answers exactly when the set is one window, no credits,
    and this window's lease holds the use; otherwise it changes nothing."""
    limits, leases = state
    fast, general = _meter(limits, leases), _meter(limits, leases)
    with mock.patch("time.time", return_value=NOW):
        spent = fast._spent_from_one(limits, cost, ANSWER)
        decided = general._decide([limits], cost, ANSWER)
    (window, *others) = limits.windows
    lease = leases.get((limits.owner, window.name, window.window, window.limit))
    covered = (
        not others
        and not limits.credits
        and lease is not None
        and lease.number == int(NOW) // window.window
        and lease.left >= max(cost, 1)
    )
    assert (spent is not None) == covered
    if spent is None:
        assert fast._windows == leases
    else:
        assert spent == decided
        assert fast._windows == general._windows


def test_a_limit_set_read_again_is_decided_by_the_general_loop_first() -> None:
    """An equal copy of the limits (an entry read again) is not the planned object: the
    shortcut steps aside, `decide` replans through the general loop, and from then on the
    shortcut answers for the copy, counting on from the same lease."""
    window = Window("day", 100, 86_400)
    limits = Limits("api_key:key_c", (window,))
    number = int(NOW) // window.window
    meter = _meter(limits, {("api_key:key_c", "day", 86_400, 100): _WindowLease(number, 10)})
    copy = dataclasses.replace(limits)
    with mock.patch("time.time", return_value=NOW):
        assert meter._spent_from_one(copy, 1, ANSWER) is None
        first = meter.decide([copy], 1, ANSWER)
        second = meter._spent_from_one(copy, 1, ANSWER)
    assert first is not None
    assert second is not None
    assert [a.headers["RateLimit"] for a in (first, second)] == [
        '"key.day";r=9;t=' + str((number + 1) * 86_400 - int(NOW)),
        '"key.day";r=8;t=' + str((number + 1) * 86_400 - int(NOW)),
    ]


@pytest.mark.parametrize("free", [-10, 10**15, 10**16])
def test_the_shortcut_clamps_the_remaining_uses_as_the_fields_do(free: int) -> None:
    """What Redis says is free, added to the lease, can fall outside an sf-integer: the
    shortcut's `RateLimit` item is clamped exactly as the general loop's."""
    window = Window("w0", 10, 60)
    limits = Limits("api_key:key_d", (window,))
    held = {("api_key:key_d", "w0", 60, 10): _WindowLease(int(NOW) // 60, 5, free)}
    fast, general = _meter(limits, held), _meter(limits, held)
    with mock.patch("time.time", return_value=NOW):
        spent = fast._spent_from_one(limits, 1, ANSWER)
        decided = general._decide([limits], 1, ANSWER)
    assert spent is not None
    assert spent == decided
