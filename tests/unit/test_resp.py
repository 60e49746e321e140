"""The lean Redis client's wire encoding and URL parsing, without a server."""

from __future__ import annotations

import ssl

import hiredis
import pytest
from hypothesis import given
from hypothesis import strategies as st

from introspect.redis.resp import Arg, Command, Endpoint, pack

ARGS = st.one_of(
    st.text(max_size=40),
    st.binary(max_size=40),
    st.sampled_from([b"", "", b"\r\n", b"$3\r\nabc\r\n", b"*1\r\n", "\r\n", "é\u2028😀"]),
    st.integers(),
    st.integers(min_value=-(10**60), max_value=10**60),
)
COMMANDS = st.lists(st.lists(ARGS, max_size=8), max_size=12)


def encoded(arg: Arg) -> bytes:
    """What the server should read for one argument."""
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, str):
        return arg.encode("utf-8")
    return str(arg).encode("ascii")


def parsed(data: bytes) -> list[object]:
    """Every complete RESP value in `data`, in order, as hiredis reads them."""
    reader = hiredis.Reader()
    reader.feed(data)
    values = []
    while (value := reader.gets()) is not False:
        values.append(value)
    return values


@given(COMMANDS)
def test_packed_batches_parse_back_to_their_arguments(commands: list[list[Arg]]) -> None:
    """A RESP parser reads back each packed command as the list of its arguments as bytes."""
    assert parsed(pack(commands)) == [[encoded(arg) for arg in command] for command in commands]


@given(COMMANDS, st.data())
def test_packed_batches_parse_back_when_split_anywhere(
    commands: list[list[Arg]], data: st.DataObject
) -> None:
    """Packed bytes fed in two chunks cut at any offset parse to the same commands."""
    wire = pack(commands)
    cut = data.draw(st.integers(min_value=0, max_value=len(wire)))
    reader = hiredis.Reader()
    reader.feed(wire[:cut])
    values = []
    while (value := reader.gets()) is not False:
        values.append(value)
    reader.feed(wire[cut:])
    while (value := reader.gets()) is not False:
        values.append(value)
    assert values == [[encoded(arg) for arg in command] for command in commands]


def test_pack_of_a_known_command_is_exact_resp() -> None:
    """A small command packs to the exact bytes the RESP specification gives."""
    assert pack([("SET", b"k\r\n", -12)]) == b"*3\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$3\r\n-12\r\n"


def test_pack_of_no_commands_is_empty() -> None:
    """An empty batch packs to no bytes at all."""
    assert pack([]) == b""


def test_password_port_and_db_from_url() -> None:
    """A password-only URL gives AUTH with the password alone, then SELECT of its db."""
    endpoint = Endpoint.from_url("redis://:pw@host:1234/3")
    assert (endpoint.host, endpoint.port, endpoint.path, endpoint.tls) == ("host", 1234, None, None)
    assert (endpoint.username, endpoint.password, endpoint.db) == (None, "pw", 3)
    handshake: list[Command] = [("AUTH", "pw"), ("SELECT", 3)]
    assert endpoint.handshake() == handshake


def test_username_and_password_with_db_zero() -> None:
    """A user and password give AUTH user pw, and db 0 needs no SELECT."""
    endpoint = Endpoint.from_url("redis://user:pw@host/0")
    assert (endpoint.host, endpoint.port, endpoint.db) == ("host", 6379, 0)
    assert endpoint.handshake() == [("AUTH", "user", "pw")]


def test_percent_encoded_password_is_decoded() -> None:
    """A password with reserved characters is sent decoded, as redis-py does."""
    endpoint = Endpoint.from_url("redis://:p%40ss%3Aw@host")
    assert endpoint.handshake() == [("AUTH", "p@ss:w")]


def test_url_without_credentials_or_db_needs_no_handshake() -> None:
    """A bare URL connects with no AUTH and no SELECT."""
    endpoint = Endpoint.from_url("redis://localhost")
    assert (endpoint.host, endpoint.port, endpoint.db) == ("localhost", 6379, 0)
    assert endpoint.handshake() == []


def test_rediss_url_sets_a_verifying_tls_context() -> None:
    """A rediss:// URL connects over TLS, verifying the server's certificate by default."""
    endpoint = Endpoint.from_url("rediss://:pw@cache.example:6380/1")
    assert isinstance(endpoint.tls, ssl.SSLContext)
    assert endpoint.tls.verify_mode == ssl.CERT_REQUIRED
    assert endpoint.tls.check_hostname
    assert (endpoint.host, endpoint.port, endpoint.db) == ("cache.example", 6380, 1)


def test_rediss_url_with_ssl_cert_reqs_none_does_not_verify() -> None:
    """ssl_cert_reqs=none in a rediss:// URL turns certificate verification off."""
    endpoint = Endpoint.from_url("rediss://cache.example/0?ssl_cert_reqs=none")
    assert endpoint.tls is not None
    assert endpoint.tls.verify_mode == ssl.CERT_NONE
    assert not endpoint.tls.check_hostname


def test_unix_socket_url_with_db() -> None:
    """A unix:// URL gives the socket path, no TLS, and the db of its query string."""
    endpoint = Endpoint.from_url("unix:///run/valkey/valkey.sock?db=2")
    assert endpoint.path == "/run/valkey/valkey.sock"
    assert endpoint.tls is None
    assert endpoint.db == 2
    assert endpoint.handshake() == [("SELECT", 2)]


@pytest.mark.parametrize("url", ["http://host:6379/0", "host:6379", "valkey://host"])
def test_unknown_scheme_is_rejected(url: str) -> None:
    """A URL whose scheme is not redis, rediss or unix raises ValueError."""
    with pytest.raises(ValueError, match="scheme"):
        Endpoint.from_url(url)
