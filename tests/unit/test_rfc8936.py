"""RFC 8936 §2.4 poll requests: parsing, which any JSON value either passes or fails with
invalid_request (never another exception), and the jtis of the SETs."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from introspect import rfc8936
from introspect.errors import InvalidRequest

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
MEMBERS = ("maxEvents", "returnImmediately", "ack", "setErrs", "receiver", "client_secret")
JTIS = st.text(min_size=1, max_size=rfc8936.MAX_JTI)
VALID = st.fixed_dictionaries(
    {},
    optional={
        "maxEvents": st.integers(min_value=0, max_value=10**6),
        "returnImmediately": st.booleans(),
        "ack": st.lists(JTIS, max_size=5),
        "setErrs": st.dictionaries(
            JTIS, st.fixed_dictionaries({"err": st.text(max_size=80)}), max_size=3
        ),
        "receiver": st.from_regex(r"[A-Za-z0-9._~-]{1,64}", fullmatch=True),
        "client_id": st.text(max_size=30),
        "client_secret": st.text(max_size=30),
    },
)


def parsed(raw: bytes) -> rfc8936.Poll | InvalidRequest:
    """The poll in `raw`, or the InvalidRequest it raised (any other exception propagates)."""
    try:
        return rfc8936.parse(raw)
    except InvalidRequest as exc:
        return exc


@given(st.dictionaries(st.sampled_from(MEMBERS), JSON, max_size=4) | JSON)
def test_any_json_body_parses_or_is_invalid_request(body: Any) -> None:
    """Whatever the JSON, parse answers a Poll or raises InvalidRequest."""
    outcome = parsed(orjson.dumps(body))
    if isinstance(outcome, rfc8936.Poll):
        assert 0 <= outcome.max_events <= rfc8936.MAX_EVENTS
    else:
        assert outcome.description


@given(st.binary(max_size=64))
def test_any_bytes_parse_or_are_invalid_request(raw: bytes) -> None:
    """Not even JSON: InvalidRequest, nothing else."""
    parsed(raw)


@given(VALID)
def test_a_well_formed_request_is_read_as_sent(body: dict[str, Any]) -> None:
    """Each member comes back as sent: maxEvents capped, setErrs acknowledged like acks."""
    poll = rfc8936.parse(orjson.dumps(body))
    assert poll.max_events == min(body.get("maxEvents", 100), rfc8936.MAX_EVENTS)
    assert poll.return_immediately == body.get("returnImmediately", False)
    assert poll.acks == (*body.get("ack", []), *body.get("setErrs", {}))
    assert poll.receiver == body.get("receiver", "")
    assert poll.auth == {k: body[k] for k in rfc8936.AUTH_MEMBERS if k in body}


@given(
    st.sampled_from([rfc8936.EVENT, rfc8936.GAP]),
    st.integers(min_value=0, max_value=10**18 - 1),
    st.text(min_size=1, max_size=40),
)
def test_a_jti_names_its_event_for_its_client_only(kind: str, number: int, client: str) -> None:
    """A SET's jti reads back as (kind, number) for its client, and as nothing for another."""
    jti = rfc8936.jti(kind, number, client)
    assert rfc8936.parse_jti(jti, client) == (kind, number)
    assert rfc8936.parse_jti(jti, client + "x") is None


@pytest.mark.parametrize("value", ["", "e", "e.c", "x1.c", "e-1.c", "e1", "e1.other"])
def test_other_jtis_are_not_ours(value: str) -> None:
    """Anything else acknowledges nothing."""
    assert rfc8936.parse_jti(value, "c") is None
