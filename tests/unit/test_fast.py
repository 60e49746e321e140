"""How the shortcut (introspect/web/fast.py) frames what a connection reads: one whole plain
request, the start of one, or anything else (left to aiohttp for good). Without an Authority
it answers nothing, so every outcome here is a framing decision."""

from __future__ import annotations

import itertools
import string

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from introspect.web import fast
from introspect.web.fast import Declined, Shortcut

VALUE = st.text(string.ascii_letters + string.digits + "-._~+/=", min_size=1, max_size=60)


def request(token: str = "tok", *extra: str, body: bytes | None = None) -> bytes:
    """A plain introspection request."""
    content = f"token={token}".encode() if body is None else body
    head = [
        "POST /introspect HTTP/1.1",
        "Host: t",
        "Authorization: Basic eDp5",
        "Content-Type: application/x-www-form-urlencoded",
        *extra,
        f"Content-Length: {len(content)}",
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + content


@pytest.fixture(scope="module")
def shortcut() -> Shortcut:
    return Shortcut(web.Application(client_max_size=64 * 1024))


@given(data=st.binary(max_size=400), idle=st.booleans())
def test_any_bytes_are_framed_without_error(data: bytes, idle: bool) -> None:
    """Whatever a connection reads, the shortcut decides without raising."""
    shortcut = Shortcut(web.Application())
    assert isinstance(shortcut.answer(data, idle), Declined)


@given(token=VALUE, user_agent=VALUE)
def test_a_whole_plain_request_is_one_request(token: str, user_agent: str) -> None:
    """A whole plain request is WHOLE: aiohttp's parser, fed it, ends between requests."""
    shortcut = Shortcut(web.Application())
    assert shortcut.answer(request(token, f"User-Agent: {user_agent}"), True) is Declined.WHOLE


@given(token=VALUE, data=st.data())
def test_the_start_of_a_plain_request_is_held_while_idle(token: str, data: st.DataObject) -> None:
    """Any strict prefix of a plain request is PART while aiohttp is idle; while aiohttp holds
    a request it is OTHER (aiohttp's parser would be left inside it)."""
    shortcut = Shortcut(web.Application())
    whole = request(token)
    cut = data.draw(st.integers(1, len(whole) - 1))
    assert shortcut.answer(whole[:cut], True) is Declined.PART
    assert shortcut.answer(whole[:cut], False) is Declined.OTHER


@given(first=VALUE, second=VALUE)
def test_two_requests_in_one_read_go_to_aiohttp(first: str, second: str) -> None:
    """Pipelined requests are aiohttp's (which answers them in order)."""
    shortcut = Shortcut(web.Application())
    assert shortcut.answer(request(first) + request(second), True) is Declined.OTHER


@pytest.mark.parametrize(
    ("raw", "outcome"),
    [
        (request("t", "Transfer-Encoding: chunked"), Declined.OTHER),
        (request("t", "Content-Length: 7"), Declined.OTHER),  # twice
        (request("t", "X-Bad\x01: 1"), Declined.OTHER),
        (request("t", "X-Obs: caf\xe9"), Declined.OTHER),
        (request("t", "Folded: a\r\n b"), Declined.OTHER),
        (request("t", "X-Request-Id: abc"), Declined.WHOLE),
        (request("t", "Expect: 100-continue"), Declined.WHOLE),
        (request("t", "Connection: close"), Declined.WHOLE),
        (request("t", "Connection: keep-alive"), Declined.WHOLE),
        (request("t", "Authorization: Basic eDp6"), Declined.WHOLE),  # twice
        (request(body=b"x" * 9000), Declined.WHOLE),  # longer than the shortcut takes
        (request("t").replace(b"/introspect", b"/introspect?a=1"), Declined.WHOLE),
        (request("t").replace(b"/introspect", b"/token"), Declined.WHOLE),
        (request("t").replace(b"HTTP/1.1", b"HTTP/1.0", 1), Declined.WHOLE),
        (b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n", Declined.WHOLE),
        (b"GET /health HTTP/1.1\r\nHost: t\r\n\r\nGET", Declined.OTHER),
        (b"\r\n" + request("t"), Declined.OTHER),
        (b"POST /introspect HTTP/1.1\r\nHost: " + b"h" * 9000, Declined.OTHER),
        (b"DELETE /admin/clients/x HTTP/1.1\r\nHost: t\r\n", Declined.OTHER),
    ],
)
def test_framing(shortcut: Shortcut, raw: bytes, outcome: Declined) -> None:
    """What cannot be framed as one request goes to aiohttp for good; a whole request of
    another kind goes to aiohttp once."""
    assert shortcut.answer(raw, True) is outcome


EXTRA = st.sampled_from(
    [
        "User-Agent: rs/1.0",
        "Accept: application/json",
        "Connection: keep-alive",
        "Connection: close",
        "Content-Type: text/plain",
        "Content-Length: 3",
        "Transfer-Encoding: chunked",
        "X-Request-Id: abc",
        "Authorization: Basic eDp6",
        "X-Obs: caf\xe9",
    ]
)
# One Shortcut for every example: it has read (and remembered) the heads of earlier ones.
SEASONED = Shortcut(web.Application())


@given(
    token=VALUE,
    extra=st.lists(EXTRA, max_size=3),
    bodies=st.integers(0, 40).flatmap(lambda n: st.lists(st.binary(min_size=n, max_size=n))),
    tail=st.binary(max_size=8),
    cut=st.integers(0, 8),
)
def test_a_head_read_before_is_framed_as_when_first_read(
    token: str, extra: list[str], bodies: list[bytes], tail: bytes, cut: int
) -> None:
    """The shortcut remembers heads by their bytes: a head it has read, with any body, in any
    state of the connection, frames as a shortcut that never saw it frames it."""
    for body, path, idle in itertools.product(
        bodies or [b""], (b"/introspect", b"/token"), (True, False)
    ):
        whole = request(token, *extra, body=body).replace(b"/introspect", path, 1)
        for raw in (whole, whole + tail, whole[: max(1, len(whole) - cut)]):
            fresh = Shortcut(web.Application()).answer(raw, idle)
            assert SEASONED.answer(raw, idle) is fresh


def test_remembered_heads_are_bounded() -> None:
    """At most MEMO_HEADS heads are remembered, none longer than MEMO_HEAD bytes."""
    shortcut = Shortcut(web.Application())
    for i in range(fast.MEMO_HEADS + 10):
        assert shortcut.answer(request(str(i)), True) is Declined.WHOLE
    assert 0 < len(shortcut._heads) <= fast.MEMO_HEADS
    shortcut._heads.clear()
    long = request("t", "X-Long: " + "a" * fast.MEMO_HEAD)
    assert shortcut.answer(long, True) is Declined.WHOLE
    assert shortcut._heads == {}
