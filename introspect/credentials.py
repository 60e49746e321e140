"""Credential format: generate, checksum, parse, keyed hash.

A credential reads `<prefix>_<body><checksum>`, in the style of GitHub's
token format: a readable kind prefix, a body of 32 base62 characters from
the operating system's CSPRNG (about 190 bits), and six base62 characters
of CRC32 over everything before them. Everything is URL-safe.

`parse` decides with no I/O whether a presented string could be one of
ours; only then does anyone spend a cache or database lookup on it. Only
`keyed_hash` (HMAC-SHA256 under the server secret) of a credential is ever
stored; comparisons of secrets go through `hmac.compare_digest`.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import zlib
from enum import StrEnum

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
BODY_LENGTH = 32
CHECKSUM_LENGTH = 6
MAX_OPAQUE_LENGTH = 512


class Kind(StrEnum):
    """The kinds of opaque credential, each with its own prefix."""

    ACCESS_TOKEN = "access_token"
    API_KEY = "api_key"
    ADMIN_KEY = "admin_key"
    CLIENT_SECRET = "client_secret"


PREFIXES: dict[Kind, str] = {
    Kind.ACCESS_TOKEN: "iat",
    Kind.API_KEY: "ikey",
    Kind.ADMIN_KEY: "iadm",
    Kind.CLIENT_SECRET: "isec",
}
_KIND_BY_PREFIX: dict[str, Kind] = {prefix: kind for kind, prefix in PREFIXES.items()}
_TAIL_LENGTH = BODY_LENGTH + CHECKSUM_LENGTH


def checksum(text: str) -> str:
    """Six base62 characters of CRC32 over `text` (the prefix, separator and body)."""
    n = zlib.crc32(text.encode("ascii"))
    a = ALPHABET
    return (
        a[n // 916_132_832 % 62]
        + a[n // 14_776_336 % 62]
        + a[n // 238_328 % 62]
        + a[n // 3_844 % 62]
        + a[n // 62 % 62]
        + a[n % 62]
    )


# os.urandom bytes 0..247 map uniformly onto the 62 characters (248 = 4 * 62); 248..255
# are dropped, so every character is equally likely.
_TO_BASE62 = bytes(ord(ALPHABET[b % 62]) for b in range(248)) + bytes(8)
_DROPPED = bytes(range(248, 256))


def random_base62(length: int) -> str:
    """`length` characters drawn uniformly from the base62 alphabet by the OS's CSPRNG."""
    out = b""
    while len(out) < length:
        out += os.urandom(length + 8).translate(_TO_BASE62, _DROPPED)
    return out[:length].decode("ascii")


def generate(kind: Kind) -> str:
    """A new random credential of `kind`, with its prefix and checksum."""
    head = f"{PREFIXES[kind]}_{random_base62(BODY_LENGTH)}"
    return head + checksum(head)


# The characters of the body a display prefix shows: enough to tell keys apart, far too few
# to guess the rest (6 of 32 base62 characters).
DISPLAY_BODY = 6


def display_prefix(credential: str) -> str:
    """The first characters of a credential (its kind prefix and a few more), to show it by."""
    head, _, tail = credential.partition("_")
    return f"{head}_{tail[:DISPLAY_BODY]}"


def parse(presented: str) -> Kind | None:
    """The kind of a well-formed credential, or None: no I/O, constant work per length."""
    if len(presented) > MAX_OPAQUE_LENGTH:
        return None
    prefix, sep, tail = presented.partition("_")
    if not sep or len(tail) != _TAIL_LENGTH:
        return None
    kind = _KIND_BY_PREFIX.get(prefix)
    if kind is None or not (tail.isascii() and tail.isalnum()):
        return None
    head = presented[:-CHECKSUM_LENGTH]
    if not hmac.compare_digest(checksum(head), tail[BODY_LENGTH:]):
        return None
    return kind


_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


@functools.lru_cache(maxsize=16)
def _pads(key: bytes) -> tuple[hashlib._Hash, hashlib._Hash]:
    """SHA-256 states after the inner and outer HMAC pads of `key` (RFC 2104), made once."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\0")
    return hashlib.sha256(key.translate(_IPAD)), hashlib.sha256(key.translate(_OPAD))


def keyed_hash(key: bytes, credential: str) -> bytes:
    """HMAC-SHA256 of a credential under one server secret: the only form ever stored.

    The same bytes as `hmac.digest(key, value, "sha256")`, from pad states
    computed once per key: on the hot path this halves the cost of the hash.
    """
    inner_pad, outer_pad = _pads(key)
    inner = inner_pad.copy()
    inner.update(credential.encode("utf-8", "surrogatepass"))
    outer = outer_pad.copy()
    outer.update(inner.digest())
    return outer.digest()


def verify_hash(keys: tuple[bytes, ...], credential: str, stored: bytes) -> bool:
    """Whether `credential` hashes to `stored` under any of the server secrets, in constant time."""
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(keyed_hash(key, credential), stored)
    return ok
