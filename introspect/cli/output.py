"""Output of the commands: one JSON object with --json, else tables and `field: value` lines."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

import orjson

TIME_COLUMNS = frozenset(
    {"at", "created_at", "iat", "nbf", "exp", "expires_at", "revoked_at", "last_used_at"}
)


def emit(args: argparse.Namespace, data: dict[str, Any], lines: Sequence[str]) -> None:
    """Print `data` as one JSON object with --json, else the human lines."""
    if getattr(args, "json", False):
        sys.stdout.write(orjson.dumps(data).decode() + "\n")
    else:
        for line in lines:
            print(line)


def emit_new_key(args: argparse.Namespace, made: dict[str, Any], note: str) -> None:
    """Print a new key's id and the key itself, which nobody sees again, with `note`."""
    emit(
        args,
        {"id": made["id"], "key": made["key"]},
        [f"id:  {made['id']}", f"key: {made['key']}  ({note})"],
    )


def cell(column: str, value: object) -> str:
    """A value as a table shows it: times in UTC, lists space-separated, null as `-`."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if column in TIME_COLUMNS and isinstance(value, int):
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(value))
    if isinstance(value, list):
        return " ".join(str(v) for v in value) or "-"
    if isinstance(value, dict):
        return orjson.dumps(value).decode()
    return str(value)


def table(items: Sequence[dict[str, Any]], columns: Sequence[str]) -> list[str]:
    """Aligned rows under a header."""
    rows = [list(columns)] + [[cell(c, item.get(c)) for c in columns] for item in items]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    return [
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def record(data: dict[str, Any]) -> list[str]:
    """One object as `field: value` lines."""
    width = max(len(k) for k in data)
    return [f"{k + ':':<{width + 1}} {cell(k, v)}" for k, v in data.items()]


def page_lines(page: dict[str, Any], columns: Sequence[str]) -> list[str]:
    """A page as a table, and how to ask for the next one."""
    lines = table(page["items"], columns)
    if page["next_cursor"] is not None:
        lines.append(f"(more: --cursor {page['next_cursor']})")
    return lines


def revoked_lines(answer: dict[str, Any]) -> list[str]:
    """The outcome of a revocation, for people."""
    lines = [
        f"revoked {answer['revoked']} credential(s);"
        f" {answer['listeners']} server worker(s) acknowledged"
    ]
    if answer.get("invalidation") == "pending":
        lines.append("invalidation pending: Redis is unreachable; workers replay it on reconnect")
    return lines
