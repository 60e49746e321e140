"""The credential format: generation, checksum, parsing and keyed hashes."""

from __future__ import annotations

import hmac
import string
import zlib

from hypothesis import given
from hypothesis import strategies as st

from introspect import credentials
from introspect.credentials import Kind

KINDS = st.sampled_from(list(Kind))


@given(KINDS)
def test_generated_credentials_parse_as_their_kind(kind: Kind) -> None:
    """Every generated credential parses back as the kind it was made for."""
    value = credentials.generate(kind)
    assert credentials.parse(value) is kind
    assert value.startswith(credentials.PREFIXES[kind] + "_")


@given(KINDS)
def test_credentials_are_url_safe_and_long_enough(kind: Kind) -> None:
    """A credential uses only URL-safe characters and carries at least 160 random bits."""
    value = credentials.generate(kind)
    assert set(value) <= set(string.ascii_letters + string.digits + "_")
    assert credentials.BODY_LENGTH * 5.95 >= 160


@given(KINDS, st.data())
def test_any_single_character_change_is_rejected(kind: Kind, data: st.DataObject) -> None:
    """Changing one character anywhere makes the credential fail to parse."""
    value = credentials.generate(kind)
    index = data.draw(st.integers(0, len(value) - 1))
    replacement = data.draw(st.sampled_from(credentials.ALPHABET + "_-."))
    changed = value[:index] + replacement + value[index + 1 :]
    if changed != value:
        # CRC32 catches every single-byte change, and the prefix is inside the checksum.
        assert credentials.parse(changed) is None


@given(st.text(max_size=600))
def test_arbitrary_text_never_crashes_the_parser(text: str) -> None:
    """Any string parses to a kind or to None, never an exception."""
    assert credentials.parse(text) in (*Kind, None)


def test_overlong_input_is_rejected_before_any_work() -> None:
    """A string longer than 512 characters is never a credential."""
    assert credentials.parse("iat_" + "a" * 600) is None


@given(st.binary(min_size=16, max_size=64), st.text(max_size=100))
def test_keyed_hash_is_verified_only_under_its_key(key: bytes, value: str) -> None:
    """A stored hash verifies under the key that made it and not under another."""
    stored = credentials.keyed_hash(key, value)
    assert len(stored) == 32
    assert credentials.verify_hash((b"another-key-0123456789", key), value, stored)
    assert not credentials.verify_hash((key + b"x",), value, stored)


@given(st.binary(min_size=1, max_size=100), st.text(max_size=200))
def test_keyed_hash_is_hmac_sha256(key: bytes, value: str) -> None:
    """The keyed hash is exactly HMAC-SHA256 (RFC 2104), for short and long keys alike."""
    expected = hmac.digest(key, value.encode("utf-8", "surrogatepass"), "sha256")
    assert credentials.keyed_hash(key, value) == expected


@given(st.text(alphabet=credentials.ALPHABET + "_", max_size=60))
def test_checksum_is_base62_crc32(text: str) -> None:
    """The checksum is CRC32 written as six base62 digits, most significant first."""
    digits = credentials.checksum(text)
    value = 0
    for char in digits:
        value = value * 62 + credentials.ALPHABET.index(char)
    assert value == zlib.crc32(text.encode("ascii"))
