"""The headers of an introspection answer, decided in one place for both paths that write
one: the view (`public.introspect`) and the shortcut below aiohttp (`fast`)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from multidict import CIMultiDict

from introspect import rfc7662
from introspect.limits import Metered

if TYPE_CHECKING:
    from introspect.service import Authority


def caching(authority: Authority, answer: rfc7662.Answer | Metered) -> Mapping[str, str]:
    """The headers of a JSON introspection answer, decided in this one place: its
    `Cache-Control` says how long a resource server may reuse it (see rfc7662.max_age), except
    that a limited credential's answer carries the RateLimit fields (and Retry-After when
    refused) and is never stored, since each use of it must be counted."""
    if isinstance(answer, Metered):
        return metered_headers(answer.headers)
    age = answer_age(authority, answer)
    headers = _JSON_HEADERS.get(age)
    if headers is None:
        headers = _JSON_HEADERS[age] = CIMultiDict(
            {"Content-Type": "application/json", "Cache-Control": f"private, max-age={age}"}
        )
    return headers


def answer_age(authority: Authority, answer: rfc7662.Answer) -> int:
    """The max-age of an unlimited answer's `Cache-Control` (see `caching`)."""
    settings = authority.settings
    return rfc7662.max_age(
        answer, settings.rs_cache_ttl, settings.negative_cache_ttl, int(time.time())
    )


def metered_headers(fields: Mapping[str, str]) -> CIMultiDict[str]:
    """The headers of a limited credential's JSON answer with its RateLimit `fields` (and
    Retry-After when refused): never stored, since each use must be counted."""
    headers = _LIMITED_HEADERS.copy()
    headers.extend(fields)
    return headers


# The headers of introspection answers by max-age, each built once (a Response copies them):
# one per second of INTROSPECT_RS_CACHE_TTL at most.
_JSON_HEADERS: dict[int, CIMultiDict[str]] = {}
# The fixed headers of a limited credential's answer, to which its RateLimit fields are added:
# copying a CIMultiDict keeps the keys it has already case-folded, where one built from a dict
# folds every key again (and the Response copies it once more). No `Pragma`: RFC 6749 §5.1 asks
# for it on token responses, and no introspection answer carries it (RFC 9111 §5.4 deprecates
# it; `Cache-Control: no-store` is what SPEC asks).
_LIMITED_HEADERS: CIMultiDict[str] = CIMultiDict(
    {"Content-Type": "application/json", "Cache-Control": "no-store"}
)
