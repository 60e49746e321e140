"""Each OAuth error code maps to its status explicitly."""

from __future__ import annotations

import pytest

from introspect import errors

EXPECTED = {
    "invalid_request": 400,
    "invalid_client": 401,
    "invalid_grant": 400,
    "unauthorized_client": 403,
    "unsupported_grant_type": 400,
    "invalid_scope": 400,
    "invalid_target": 400,
    "unsupported_token_type": 400,
}


@pytest.mark.parametrize("cls", errors.ALL_ERRORS)
def test_status_is_declared_on_the_class_itself(cls: type[errors.OAuth2Error]) -> None:
    """No error inherits its status or code: each declares both, as mapped here."""
    assert "status_code" in vars(cls)
    assert "error" in vars(cls)
    assert EXPECTED[cls.error] == cls.status_code


def test_every_code_is_covered() -> None:
    """The mapping above covers every error class."""
    assert {cls.error for cls in errors.ALL_ERRORS} == set(EXPECTED)


def test_invalid_client_carries_www_authenticate() -> None:
    """RFC 6749 §5.2: a 401 names the authentication scheme."""
    exc = errors.InvalidClient("nope")
    assert exc.headers["WWW-Authenticate"].startswith("Basic ")
    assert exc.body() == {"error": "invalid_client", "error_description": "nope"}
