"""RFC 9701 signed introspection answers: content negotiation and the claims carried."""

from __future__ import annotations

import pytest

from introspect import rfc9701

JWT = rfc9701.MEDIA_TYPE


@pytest.mark.parametrize(
    ("accept", "wanted"),
    [
        (None, False),
        ("", False),
        ("*/*", False),
        ("application/json", False),
        (JWT, True),
        (JWT.upper(), True),
        (f"application/json;q=0.5, {JWT}", True),
        (f"{JWT}; q=0.9, application/json", False),
        (f"{JWT};q=0", False),
        (f"{JWT};q=oops", False),
        (f"{JWT}, application/json", True),
        ("text/html, " * 40 + JWT, False),  # only the first 32 ranges are read
    ],
)
def test_negotiation(accept: str | None, wanted: bool) -> None:
    """The JWT answer is chosen only when Accept prefers it at least as much as JSON."""
    assert rfc9701.wants_jwt(accept) is wanted


def test_claims_hold_the_answer_without_sub_or_exp() -> None:
    """§5: iss, aud (the caller), iat and the answer as token_introspection; no sub, no exp."""
    claims = rfc9701.response_claims(b'{"active":false}', "https://iss", "client_rs", 10)
    assert claims == {
        "iss": "https://iss",
        "aud": "client_rs",
        "iat": 10,
        "token_introspection": {"active": False},
    }
