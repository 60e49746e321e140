"""Helpers that build the text of statements: only from module constants, values bound."""

from __future__ import annotations

from typing import Any

import orjson

# Columns holding JSON text: written as orjson dumps, read back by `json_value`.
JSON_COLUMNS = frozenset({"jwks", "metadata", "limits"})


def json_value(value: str | None) -> Any:
    """A JSON column's value, parsed (None stays None)."""
    return None if value is None else orjson.loads(value)


def assignments(
    changes: dict[str, Any], allowed: frozenset[str], first: int
) -> tuple[str, list[Any]]:
    """`col = $n, ...` for `changes` (column names checked against `allowed`), and the values."""
    parts, values = [], []
    for n, (column, value) in enumerate(changes.items(), start=first):
        if column not in allowed:
            raise ValueError(f"not a mutable column: {column}")
        parts.append(f"{column} = ${n}")
        dumped = column in JSON_COLUMNS and value is not None
        values.append(orjson.dumps(value).decode() if dumped else value)
    return ", ".join(parts), values


def where_clause(filters: list[tuple[str, Any]], first: int = 1) -> tuple[str, list[Any]]:
    """` WHERE a AND b` from (condition with `{}` for its one parameter, value) pairs, the
    parameters numbered from `first`."""
    parts: list[str] = []
    values: list[Any] = []
    for condition, value in filters:
        parts.append(condition.format(f"${first + len(values)}"))
        values.append(value)
    return (" WHERE " + " AND ".join(parts) if parts else ""), values
