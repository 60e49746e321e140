"""Fast bulk generation of credentials in the server's exact format.

`introspect.credentials.generate` draws each character with
`secrets.choice`, which is far too slow for a million tokens. Here the
bodies come from `os.urandom` in bulk: bytes below 248 map to base62 by
`% 62` (uniform, since 248 = 4 x 62) and the rest are dropped, all inside
`bytes.translate`. The checksum is the server's own `checksum`, so every
token parses exactly as one the server issued.
"""

from __future__ import annotations

import os

from introspect.credentials import ALPHABET, BODY_LENGTH, PREFIXES, Kind, checksum

_KEEP = 248  # the largest multiple of 62 that fits in a byte
_TABLE = bytes(ord(ALPHABET[b % 62]) if b < _KEEP else 0 for b in range(256))
_DROP = bytes(range(_KEEP, 256))


def random_base62(count: int, width: int) -> list[str]:
    """`count` uniformly random base62 strings of `width` characters, from the OS CSPRNG."""
    need = count * width
    text = b""
    while len(text) < need:
        missing = need - len(text)
        text += os.urandom(missing + missing // 16 + 64).translate(_TABLE, _DROP)
    ascii_text = text[:need].decode("ascii")
    return [ascii_text[i : i + width] for i in range(0, need, width)]


def generate(kind: Kind, count: int) -> list[str]:
    """`count` new credentials of `kind`: prefix, 32 random base62 characters, checksum."""
    prefix = PREFIXES[kind] + "_"
    heads = [prefix + body for body in random_base62(count, BODY_LENGTH)]
    return [head + checksum(head) for head in heads]


def public_ids(prefix: str, count: int) -> list[str]:
    """`count` public identifiers like the server's `new_id`: prefix, `_`, 22 base62."""
    return [f"{prefix}_{tail}" for tail in random_base62(count, 22)]
