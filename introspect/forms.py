"""Parsing of `application/x-www-form-urlencoded` bodies and Basic credentials, strictly.

RFC 6749 §3.1: a parameter sent without a value is treated as omitted, and
request and response parameters must not be included more than once (RFC
8707 `resource`, and our `audience`, may repeat). Anything that is not valid
UTF-8 after percent-decoding, or holds a NUL, is a malformed request.
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote_plus, unquote_to_bytes

from introspect.errors import InvalidClient, InvalidRequest

REPEATABLE = frozenset({"resource", "audience"})


def _decode(raw: str) -> str:
    """Percent-decoded text (ValueError saying why when it is not valid)."""
    if "%" in raw or "+" in raw:  # most values (tokens, ids) hold neither: nothing to decode
        try:
            raw = unquote_to_bytes(raw.replace("+", " ")).decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("is not valid UTF-8") from None
    if "\x00" in raw:
        raise ValueError("holds a NUL character")
    return raw


def parse_form(body: bytes) -> dict[str, list[str]]:
    """The parameters of a form body, each name with its non-empty values in order."""
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidRequest("the form body must be percent-encoded ASCII") from None
    out: dict[str, list[str]] = {}
    if not text:
        return out
    for pair in text.split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        try:
            key = _decode(name)
        except ValueError as exc:
            raise InvalidRequest(f"a parameter name {exc}") from None
        try:
            val = _decode(value)
        except ValueError as exc:
            raise InvalidRequest(f"parameter {key[:40]!r} {exc}") from None
        if val == "":
            continue
        out.setdefault(key, []).append(val)
    return out


def single(form: dict[str, list[str]]) -> dict[str, str]:
    """The form with one value per name; a repeated non-repeatable parameter is rejected."""
    out = {}
    for name, values in form.items():
        if name in REPEATABLE:
            continue
        if len(values) > 1:
            raise InvalidRequest(f"parameter {name[:40]!r} is repeated")
        out[name] = values[0]
    return out


def parse_basic(header: str) -> tuple[str, str]:
    """(client_id, client_secret) from an `Authorization: Basic` value (RFC 6749 §2.3.1).

    Both parts are form-urlencoded before base64, so they are decoded after.
    """
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        raise InvalidClient("unsupported authentication scheme")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise InvalidClient("malformed Basic credentials") from None
    client_id, sep, secret = decoded.partition(":")
    if not sep or not client_id:
        raise InvalidClient("malformed Basic credentials")
    client_id, secret = unquote_plus(client_id), unquote_plus(secret)
    if "\x00" in client_id or "\x00" in secret:
        raise InvalidClient("malformed Basic credentials")
    return client_id, secret
