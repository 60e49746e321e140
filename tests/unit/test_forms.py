"""Strict parsing of form bodies and Basic credentials."""

from __future__ import annotations

import base64
from urllib.parse import urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from introspect.errors import InvalidClient, InvalidRequest, OAuth2Error
from introspect.forms import REPEATABLE, parse_basic, parse_form, single

NAMES = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=20)
VALUES = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=50)


@given(st.dictionaries(NAMES, VALUES, max_size=8))
def test_urlencoded_parameters_round_trip(params: dict[str, str]) -> None:
    """Whatever a standard client encodes, the parser reads back unchanged."""
    parsed = parse_form(urlencode(params).encode())
    assert {name: values[0] for name, values in parsed.items()} == params
    assert single(parsed) == {k: v for k, v in params.items() if k not in REPEATABLE}


@given(st.binary(max_size=300))
def test_arbitrary_bytes_parse_or_fail_cleanly(body: bytes) -> None:
    """Any body parses or raises a protocol error, never anything else."""
    status = 200
    try:
        parse_form(body)
    except OAuth2Error as exc:
        status = exc.status_code
    assert status in (200, 400)


def test_empty_values_count_as_omitted() -> None:
    """RFC 6749 §3.1: a parameter without a value is treated as omitted."""
    assert parse_form(b"scope=&token=a") == {"token": ["a"]}


def test_repeated_parameter_is_rejected() -> None:
    """RFC 6749 §3.1: a repeated parameter is invalid_request."""
    with pytest.raises(InvalidRequest):
        single(parse_form(b"token=a&token=b"))


def test_resource_may_repeat() -> None:
    """RFC 8707 resource may be repeated."""
    assert parse_form(b"resource=a&resource=b")["resource"] == ["a", "b"]


@pytest.mark.parametrize("body", [b"token=%00", b"token=%ff%fe", "token=é".encode()])
def test_nul_and_invalid_utf8_are_rejected(body: bytes) -> None:
    """A NUL, invalid UTF-8 after decoding, or raw non-ASCII bytes are invalid_request."""
    with pytest.raises(InvalidRequest):
        parse_form(body)


def test_basic_credentials_are_form_decoded() -> None:
    """RFC 6749 §2.3.1: id and secret are form-urlencoded before base64."""
    header = "Basic " + base64.b64encode(b"my%3Aid:se%2Bcret").decode()
    assert parse_basic(header) == ("my:id", "se+cret")


@pytest.mark.parametrize(
    "header", ["Basic !!!", "Basic " + base64.b64encode(b"nocolon").decode(), "Bearer x", "Basic"]
)
def test_malformed_basic_is_invalid_client(header: str) -> None:
    """Malformed Basic credentials fail authentication cleanly."""
    with pytest.raises(InvalidClient):
        parse_basic(header)
