"""The portal's form validation: a table of accepted and refused inputs, and a property that
any submitted form is either a valid body or a friendly `Invalid`, never another error."""

from __future__ import annotations

import contextlib
import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from introspect.errors import Invalid
from introspect.portal import forms
from introspect.portal.sessions import return_url

NOW = 1_800_000_000
DAY = 86_400
ALLOWED = ("read", "write")


def midnight(day: str) -> int:
    """00:00 UTC of a YYYY-MM-DD day."""
    return int(dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC).timestamp())


@pytest.mark.parametrize(
    ("form", "body"),
    [
        ({"scope": ["read"]}, {"scopes": ["read"]}),
        ({"scope": ["read", "write", "read"]}, {"scopes": ["read", "write"]}),
        ({"scope": ["read"], "name": ["  ci  "]}, {"scopes": ["read"], "name": "ci"}),
        ({"scope": ["read"], "name": ["   "]}, {"scopes": ["read"]}),
        ({"scope": ["read"], "expiry": ["never"]}, {"scopes": ["read"]}),
        ({"scope": ["read"], "expiry": ["30"]}, {"scopes": ["read"], "expires_in": 30 * DAY}),
        ({"scope": ["read"], "expiry": ["90"]}, {"scopes": ["read"], "expires_in": 90 * DAY}),
        (
            {"scope": ["read"], "expiry": ["date"], "expires_on": ["2030-01-01"]},
            {"scopes": ["read"], "expires_in": midnight("2030-01-01") - NOW},
        ),
    ],
)
def test_create_forms_accepted(form: dict[str, list[str]], body: dict[str, object]) -> None:
    """Valid create forms give the admin API body they mean."""
    assert forms.create_body(form, ALLOWED, NOW) == body


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({}, "Scopes: choose at least one"),
        ({"scope": ["admin"]}, "you may not give a key admin"),
        ({"scope": ["read"], "name": ["x" * 101]}, "Name: at most 100"),
        ({"scope": ["read"], "name": ["a\u200bb\n"]}, "Name: only printable"),
        ({"scope": ["read"], "name": ["a", "b"]}, "name: sent more than once"),
        ({"scope": ["read"], "expiry": ["365"]}, "Expiry: choose never"),
        ({"scope": ["read"], "expiry": ["date"]}, "Expiry date: give a date"),
        ({"scope": ["read"], "expiry": ["date"], "expires_on": ["tomorrow"]}, "not a date"),
        ({"scope": ["read"], "expiry": ["date"], "expires_on": ["2020-01-01"]}, "after today"),
    ],
)
def test_create_forms_refused(form: dict[str, list[str]], message: str) -> None:
    """Invalid create forms are `Invalid` with a message that says what to fix."""
    with pytest.raises(Invalid, match=message):
        forms.create_body(form, ALLOWED, NOW)


@pytest.mark.parametrize(
    ("form", "body"),
    [
        ({"name": ["new"]}, {"name": "new"}),
        ({"name": ["new"], "expiry": ["keep"]}, {"name": "new"}),
        ({}, {"name": None}),
        ({"expiry": ["never"]}, {"name": None, "expires_at": None}),
        ({"expiry": ["30"]}, {"name": None, "expires_at": NOW + 30 * DAY}),
    ],
)
def test_update_forms(form: dict[str, list[str]], body: dict[str, object]) -> None:
    """The key page's form renames, keeps or sets the expiry."""
    assert forms.update_body(form, NOW) == body


@pytest.mark.parametrize(
    ("raw", "seconds"), [(None, 0), ("0", 0), ("3600", 3600), ("604800", 7 * DAY)]
)
def test_grace_accepted(raw: str | None, seconds: int) -> None:
    """A grace period of none up to 7 days, in seconds."""
    assert forms.grace_field({} if raw is None else {"grace": [raw]}) == seconds


@pytest.mark.parametrize("raw", ["604801", "-1", "1.5", "1h", "٣", "9" * 30])
def test_grace_refused(raw: str) -> None:
    """Anything but a whole number of seconds up to 7 days is refused."""
    with pytest.raises(Invalid, match="Grace period"):
        forms.grace_field({"grace": [raw]})


@pytest.mark.parametrize(
    "url",
    ["https://app.example/x?y=1", "http://127.0.0.1:3000/", "http://[::1]/", "http://localhost/"],
)
def test_return_urls_accepted(url: str) -> None:
    """https anywhere, http only on loopback."""
    assert return_url(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "http://app.example/",
        "http://127.0.0.1.example/",
        "javascript:alert(1)",
        "data:text/html,hi",
        "//app.example/",
        "/relative",
        "https://user:pw@app.example/",
        "https://app.example:99999/",
        "https://[::1/",
        "",
        7,
    ],
)
def test_return_urls_refused(url: object) -> None:
    """Anything else is `Invalid` naming return_url."""
    with pytest.raises(Invalid, match="return_url"):
        return_url(url)


FIELD_NAMES = st.sampled_from(["scope", "name", "expiry", "expires_on", "grace", "csrf", "x"])
VALUES = st.one_of(
    st.sampled_from(["read", "write", "never", "30", "90", "date", "keep", "2031-02-03", "0"]),
    st.text(max_size=40),
)


# Timing checks off: on a loaded shared machine the first draws alone can take seconds.
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(FIELD_NAMES, st.lists(VALUES, min_size=1, max_size=3)))
def test_any_form_is_a_body_or_invalid(form: dict[str, list[str]]) -> None:
    """Whatever is submitted, each parser answers a body within the limits or raises `Invalid`."""
    try:
        body = forms.create_body(form, ALLOWED, NOW)
    except Invalid:
        pass
    else:
        assert set(body["scopes"]) <= set(ALLOWED)
        assert body.get("expires_in", 1) > 0
    with contextlib.suppress(Invalid):
        forms.update_body(form, NOW)
    with contextlib.suppress(Invalid):
        assert 0 <= forms.grace_field(form) <= forms.MAX_GRACE
