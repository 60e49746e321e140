"""The SDK's pure parts: reading credentials and Cache-Control, the answer's lifetime, the
refusals (RFC 6750), the cache's eviction by identifier, and client authentication."""

from __future__ import annotations

import base64

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from introspect_sdk import ClientAuth, Introspection, Metrics
from introspect_sdk import answers as rfc6750
from introspect_sdk.cache import AnswerCache
from introspect_sdk.guard import lifetime, max_age


def active(**claims: object) -> Introspection:
    """An active answer with `claims`."""
    return Introspection.from_json({"active": True, **claims})


@pytest.mark.parametrize(
    ("value", "age"),
    [
        ("private, max-age=60", 60),
        ("max-age=0", 0),
        ('private, max-age="30"', 30),
        ("MAX-AGE=5, private", 5),
        ("no-store", None),
        ("private, max-age=60, no-store", None),
        ("no-cache, max-age=60", None),
        ("private", None),
        ("s-maxage=60", None),
        (None, None),
    ],
)
def test_max_age_reads_reuse_and_refuses_no_store(value: str | None, age: int | None) -> None:
    """max-age is the reuse limit; no-store, no-cache or no max-age at all mean no reuse."""
    assert max_age(value) == age


def test_lifetime_is_the_smallest_of_setting_max_age_and_exp() -> None:
    """min(own setting, max-age, seconds to exp), never negative; no max-age: not cached."""
    assert lifetime(active(), 60, 30, now=1000) == 30
    assert lifetime(active(), 10, 30, now=1000) == 10
    assert lifetime(active(exp=1005), 60, 30, now=1000) == 5
    assert lifetime(active(exp=900), 60, 30, now=1000) == 0
    assert lifetime(active(), 60, None, now=1000) == 0
    assert lifetime(Introspection.from_json({"active": False}), 60, 30, now=1000) == 30


@given(st.dictionaries(st.text(max_size=10), st.none() | st.booleans() | st.integers() | st.text()))
def test_only_active_true_is_active(claims: dict[str, object]) -> None:
    """Any JSON object reads as an answer without raising; only `"active": true` is active."""
    assert Introspection.from_json(claims).active is (claims.get("active") is True)


@pytest.mark.parametrize(
    ("headers", "found"),
    [
        ({"Authorization": "Bearer abc"}, "abc"),
        ({"Authorization": "bearer  abc "}, "abc"),
        ({"Authorization": "Bearer a b"}, None),
        ({"Authorization": "Basic abc"}, None),
        ({"Authorization": "Bearer"}, None),
        ({"X-API-Key": "ikey_1"}, "ikey_1"),
        ({"Authorization": "Bearer abc", "X-API-Key": "ikey_1"}, "abc"),
        ({}, None),
    ],
)
def test_the_credential_comes_from_bearer_or_the_named_header(
    headers: dict[str, str], found: str | None
) -> None:
    """Bearer first (RFC 6750 §2.1), then the API-key header named."""
    assert rfc6750.bearer(headers, "X-API-Key") == found


def test_refusals_follow_rfc6750() -> None:
    """401 invalid_token, 403 insufficient_scope with the scope, 429 with the limit fields,
    503 with Retry-After; no scope lacking: no refusal."""
    assert dict(rfc6750.missing().headers)["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    refusal = rfc6750.require(active(scope="read"), ["write"])
    assert refusal is not None
    assert refusal.status == 403
    challenge = dict(refusal.headers)["WWW-Authenticate"]
    assert challenge == 'Bearer error="insufficient_scope", scope="write"'
    assert rfc6750.require(active(scope="read write"), ["read", "write"]) is None
    limits = rfc6750.limit_headers({"Retry-After": "7", "RateLimit": "x", "Other": "y"})
    assert limits == (("Retry-After", "7"), ("RateLimit", "x"))
    limited = rfc6750.inactive(limits)
    assert limited.status == 429
    assert {("Retry-After", "7"), ("RateLimit", "x")} <= set(limited.headers)
    assert rfc6750.inactive().status == 401
    assert rfc6750.unavailable().status == 503


def test_events_evict_what_they_name_and_every_inactive_answer() -> None:
    """An event evicts the entries of its jti, client_id or sub, and all inactive entries,
    nothing else; a full cache makes room by its oldest entry."""
    metrics = Metrics()
    cache = AnswerCache(metrics, max_entries=4)
    cache.put(b"a", active(jti="j1", client_id="c1", sub="s1"), until=100)
    cache.put(b"b", active(jti="j2", client_id="c1", sub="s2"), until=100)
    cache.put(b"c", active(jti="j3", client_id="c2", sub="s2"), until=100)
    cache.put(b"n", Introspection.from_json({"active": False}), until=100)
    assert cache.evict([("jti", "j1")]) == 2  # a and the inactive n
    assert cache.get(b"a", 0) is None
    assert cache.get(b"b", 0) is not None
    assert cache.evict([("sub", "s2")]) == 2
    assert len(cache) == 0
    for key in (b"1", b"2", b"3", b"4", b"5"):
        cache.put(key, active(jti=key.decode()), until=100)
    assert cache.get(b"1", 0) is None
    assert metrics.capacity_evictions == 1
    assert cache.get(b"5", 0) is not None
    assert cache.get(b"5", 100) is None  # past its deadline
    assert metrics.evictions == 4


def test_client_auth_by_secret_and_by_key() -> None:
    """A secret gives an RFC 6749 §2.3.1 Basic header; a key gives a fresh assertion per
    request; neither shows in the repr."""
    auth = ClientAuth.with_secret("client_1", "isec_s")
    headers, form = auth.apply("http://issuer")
    assert base64.b64decode(headers["Authorization"].removeprefix("Basic ")) == b"client_1:isec_s"
    assert form == {}
    assert "isec_s" not in repr(auth)
    key = ClientAuth.with_private_key("client_1", ec.generate_private_key(ec.SECP256R1()), "ES256")
    one, two = key.apply("http://issuer")[1], key.apply("http://issuer")[1]
    claims = jwt.decode(one["client_assertion"], options={"verify_signature": False})
    assert claims["aud"] == "http://issuer"
    assert claims["iss"] == claims["sub"] == "client_1"
    assert one["client_assertion"] != two["client_assertion"]
    with pytest.raises(ValueError, match="a secret or a private key"):
        ClientAuth("client_1")
