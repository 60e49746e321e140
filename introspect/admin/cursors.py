"""Pagination of the admin lists: `?limit=` and opaque `?cursor=` positions."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

import asyncpg
import orjson

from introspect.admin import validation
from introspect.errors import Invalid

T = TypeVar("T")

MAX_BIGINT = 2**63 - 1
DEFAULT_PAGE = 50
MAX_PAGE = 500


def _encode_cursor(position: Sequence[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(position)).rstrip(b"=").decode()


def _cursor_part(value: object, kind: type) -> bool:
    if isinstance(value, bool) or type(value) is not kind:
        return False
    if isinstance(value, int):
        return 0 <= value <= MAX_BIGINT
    return isinstance(value, str) and _printable(value)


def decode(raw: str, shape: tuple[type, ...]) -> list[Any]:
    """The position a cursor of this list encodes; anything else is `Invalid`."""
    try:
        position = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError):
        position = None
    valid = (
        isinstance(position, list)
        and len(position) == len(shape)
        and all(_cursor_part(value, kind) for value, kind in zip(position, shape, strict=True))
    )
    if not valid:
        raise Invalid("cursor: not a cursor of this list")
    return cast(list[Any], position)


def _printable(value: str) -> bool:
    return 0 < len(value) <= validation.MAX_TEXT and value.isprintable()


def page_request(query: Mapping[str, str], filters: Sequence[str]) -> tuple[int, dict[str, str]]:
    """(limit, filters) of a list request; unknown parameters are `Invalid`."""
    for name in query:
        if name not in filters and name not in ("limit", "cursor"):
            raise Invalid(f"unknown parameter {name[:40]!r}")
    raw = query.get("limit")
    limit = DEFAULT_PAGE
    if raw is not None:
        if not (len(raw) <= 3 and raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_PAGE):
            raise Invalid(f"limit: must be an integer from 1 to {MAX_PAGE}")
        limit = int(raw)
    return limit, {name: validation.text(query[name], name) for name in filters if name in query}


def page(
    rows: Sequence[T],
    limit: int,
    render: Callable[[T], dict[str, Any]],
    position: Callable[[T], Sequence[Any]],
) -> dict[str, Any]:
    """One page from up to `limit + 1` rows: the extra row only says that more follow."""
    shown = rows[:limit]
    more = len(rows) > limit
    return {
        "items": [render(row) for row in shown],
        "next_cursor": _encode_cursor(position(shown[-1])) if more else None,
    }


async def in_creation_order(
    query: Mapping[str, str],
    pool: asyncpg.Pool,
    fetch: Callable[..., Awaitable[list[T]]],
    public: Callable[[T], dict[str, Any]],
    position_of: Callable[[T], Sequence[Any]],
) -> dict[str, Any]:
    """A page of records listed by (created_at, id), `?cursor=` naming the last one seen."""
    limit, _ = page_request(query, ())
    after = query.get("cursor")
    position = None if after is None else tuple(decode(after, (int, str)))
    rows = await fetch(pool, limit=limit + 1, after=position)
    return page(rows, limit, public, position_of)
