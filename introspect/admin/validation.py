"""Validation of the admin operations' JSON input, shared by every resource.

Each check takes a value and the field it came from and returns the value as
the operation uses it, or raises `Invalid` naming that field
(`InvalidClientMetadata` for a client's jwks and authentication method, and
`NotFound` for a path id that cannot name anything).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import orjson

from introspect import jwks, rfc6749, rfc7523
from introspect.errors import Invalid, InvalidClientMetadata, NotFound
from introspect.rfc6749 import SCOPE_TOKEN
from introspect.store import Client
from introspect.store.records import Refill, Window

MAX_TEXT = 256
MAX_KEY_NAME = 100
MAX_SCOPE = 128
MAX_ITEMS = 100
MAX_METADATA = 4096
MAX_JWKS = 16384
MAX_DEPTH = 32
MAX_TOKEN_TTL = 366 * 86_400
MAX_LIFETIME = 10 * 366 * 86_400
MAX_GRACE = 30 * 86_400

_ID_BODY = re.compile(r"[0-9A-Za-z]{22}")

# Rate limits and credits (SPEC "Rate limits and credits").
MAX_RATE_LIMITS = 4
MAX_WINDOW = 86_400
MAX_RATE = 1_000_000_000
MAX_CREDITS = 10**12
MIN_REFILL_INTERVAL = 60
MAX_REFILL_INTERVAL = 366 * 86_400
# A limit's name: it appears quoted in the RateLimit fields, so no quote or backslash.
_LIMIT_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")


def fields(body: object, allowed: Iterable[str]) -> dict[str, Any]:
    """`body` as a JSON object holding only `allowed` fields."""
    if not isinstance(body, dict):
        raise Invalid("the body must be a JSON object")
    known = set(allowed)
    for field in body:
        if field not in known:
            raise Invalid(f"unknown field {field[:40]!r}")
    return body


def required(body: Mapping[str, Any], field: str) -> Any:
    if field not in body:
        raise Invalid(f"{field}: is required")
    return body[field]


def text(value: object, field: str, max_length: int = MAX_TEXT) -> str:
    """A non-empty printable string of at most `max_length` characters."""
    if not isinstance(value, str) or not value:
        raise Invalid(f"{field}: must be a non-empty string")
    if len(value) > max_length:
        raise Invalid(f"{field}: must be at most {max_length} characters")
    if not value.isprintable():
        raise Invalid(f"{field}: must not hold control or unprintable characters")
    return value


def integer(value: object, field: str, minimum: int, maximum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
        raise Invalid(f"{field}: must be an integer from {minimum} to {maximum}")
    return value


def lifetime(value: object, field: str) -> int | None:
    """A lifetime in seconds, at most MAX_LIFETIME; null is none (never expires)."""
    return None if value is None else integer(value, field, 1, MAX_LIFETIME)


def flag(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"{field}: must be true or false")
    return value


def _list(value: object, field: str, item: Callable[[object, str], str]) -> list[str]:
    """A JSON array of at most MAX_ITEMS valid items, duplicates dropped, order kept."""
    if not isinstance(value, list):
        raise Invalid(f"{field}: must be an array of strings")
    if len(value) > MAX_ITEMS:
        raise Invalid(f"{field}: at most {MAX_ITEMS} entries")
    return list(dict.fromkeys(item(v, field) for v in value))


def _scope(value: object, field: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_SCOPE or not SCOPE_TOKEN.fullmatch(value):
        raise Invalid(f"{field}: each must be an RFC 6749 scope token (no spaces or quotes)")
    return value


def scopes(value: object, field: str) -> list[str]:
    return _list(value, field, _scope)


def audiences(value: object, field: str) -> list[str]:
    return _list(value, field, text)


def token_ttl(value: object, field: str) -> int:
    return integer(value, field, 1, MAX_TOKEN_TTL)


def token_format(value: object, field: str) -> str:
    if value not in ("opaque", "jwt"):
        raise Invalid(f"{field}: must be opaque or jwt")
    return str(value)


def _check_nesting(value: object, field: str) -> None:
    """No string (or key) holds NUL, which Postgres cannot store; nesting stays shallow."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise Invalid(f"{field}: nested more than {MAX_DEPTH} levels deep")
        if isinstance(item, str):
            if "\x00" in item:
                raise Invalid(f"{field}: must not hold NUL characters")
        elif isinstance(item, dict):
            stack.extend((k, depth) for k in item)
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


def _json_object(value: object, field: str, max_bytes: int) -> dict[str, Any] | None:
    """A JSON object (or null) of at most `max_bytes` as compact UTF-8 JSON."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise Invalid(f"{field}: must be a JSON object")
    _check_nesting(value, field)
    if len(orjson.dumps(value)) > max_bytes:
        raise Invalid(f"{field}: must be at most {max_bytes} bytes as compact JSON")
    return value


def key_name(value: object, field: str) -> str | None:
    """An API key's name (null: none)."""
    return None if value is None else text(value, field, MAX_KEY_NAME)


def metadata(value: object, field: str) -> dict[str, Any] | None:
    return _json_object(value, field, MAX_METADATA)


def jwk_set(value: object, field: str) -> dict[str, Any] | None:
    """A JWK Set we can verify client assertions with (see `introspect.jwks`), or null."""
    try:
        key_set = _json_object(value, field, MAX_JWKS)
        if key_set is not None:
            jwks.validate(key_set, field)
    except (Invalid, jwks.InvalidKeySet) as exc:
        raise InvalidClientMetadata(str(exc)) from None
    return key_set


def auth_method(value: object, field: str) -> str:
    methods = rfc6749.REGISTRABLE_AUTH_METHODS
    if value not in methods:
        raise InvalidClientMetadata(f"{field}: must be one of {', '.join(methods)}")
    return str(value)


def check_auth_method(method: str, key_set: dict[str, Any] | None) -> None:
    if method == rfc7523.PRIVATE_KEY_JWT and key_set is None:
        raise InvalidClientMetadata(
            "token_endpoint_auth_method: private_key_jwt needs a jwks to verify assertions with"
        )


def grace(body: object) -> int:
    """The `grace_period` of a rotation: seconds, default and null 0."""
    value = fields(body, ("grace_period",)).get("grace_period")
    return 0 if value is None else integer(value, "grace_period", 0, MAX_GRACE)


def known_id(value: str, prefix: str, what: str) -> str:
    """A path id, which names nothing unless it has the shape `new_id(prefix)` gives."""
    head, sep, tail = value.partition("_")
    if head != prefix or not sep or not _ID_BODY.fullmatch(tail):
        raise NotFound(what)
    return value


def check_format(token_format: str, audiences: Sequence[str]) -> None:
    if token_format == "jwt" and not audiences:
        raise Invalid("token_format: jwt needs at least one audience (RFC 9068 requires aud)")


def within(scopes: Sequence[str], client: Client) -> None:
    outside = [s for s in scopes if s not in client.scopes]
    if outside:
        raise Invalid(f"scopes: outside the client's scopes: {' '.join(outside)[:200]}")


def _object(value: object, field: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    """A JSON object holding only `allowed` members (named under `field` when not)."""
    if not isinstance(value, dict):
        raise Invalid(f"{field}: must be a JSON object")
    for member in value:
        if member not in allowed:
            raise Invalid(f"{field}: unknown member {str(member)[:40]!r}")
    return value


def rate_limits(value: object, field: str) -> tuple[Window, ...]:
    """Up to MAX_RATE_LIMITS `{name, limit, window}` with unique names (null: none)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise Invalid(f"{field}: must be an array of {{name, limit, window}}")
    if len(value) > MAX_RATE_LIMITS:
        raise Invalid(f"{field}: at most {MAX_RATE_LIMITS} rate limits")
    windows: list[Window] = []
    for n, item in enumerate(value):
        where = f"{field}[{n}]"
        members = _object(item, where, ("name", "limit", "window"))
        name = members.get("name")
        if not isinstance(name, str) or not _LIMIT_NAME.fullmatch(name):
            raise Invalid(f"{where}.name: 1 to 32 letters, digits, '_' or '-'")
        if any(w.name == name for w in windows):
            raise Invalid(f"{where}.name: {name!r} is named twice; names must be unique")
        limit = integer(members.get("limit"), f"{where}.limit", 1, MAX_RATE)
        window = integer(members.get("window"), f"{where}.window", 1, MAX_WINDOW)
        windows.append(Window(name, limit, window))
    return tuple(windows)


def credits(value: object, field: str) -> tuple[int, Refill | None] | None:
    """`{remaining, refill: {amount, interval} | null}` as (remaining, refill); null: none."""
    if value is None:
        return None
    members = _object(value, field, ("remaining", "refill"))
    remaining = integer(members.get("remaining"), f"{field}.remaining", 0, MAX_CREDITS)
    refill = members.get("refill")
    if refill is None:
        return remaining, None
    parts = _object(refill, f"{field}.refill", ("amount", "interval"))
    amount = integer(parts.get("amount"), f"{field}.refill.amount", 0, MAX_CREDITS)
    interval = integer(
        parts.get("interval"), f"{field}.refill.interval", MIN_REFILL_INTERVAL, MAX_REFILL_INTERVAL
    )
    return remaining, Refill(amount, interval)
