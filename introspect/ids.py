"""Public identifiers such as `client_...` or `tok_...`: a readable prefix, random base62."""

from __future__ import annotations

from introspect import credentials

ID_LENGTH = 22


def new_id(prefix: str) -> str:
    """A public identifier: a readable prefix and 22 random base62 characters."""
    return prefix + "_" + credentials.random_base62(ID_LENGTH)


def has_id_shape(value: str, prefix: str) -> bool:
    """Whether `value` could have come from `new_id(prefix)`: decided with no I/O."""
    head, sep, tail = value.partition("_")
    return (
        head == prefix
        and bool(sep)
        and len(tail) == ID_LENGTH
        and tail.isascii()
        and tail.isalnum()
    )
