"""The introspection answers memory can give, written below aiohttp's web layer (issue 19).

A resource server's `POST /introspect` for a credential this worker holds
is answered from memory in microseconds, yet through aiohttp it costs two
task steps, a request object, the middlewares, a response object and its
signal: about half of the worker's CPU per answer. `Shortcut.answer` reads a
request that arrived whole (in one read, or in several held until whole) and
answers it on the connection's transport when it is the plainest kind:

- exactly `POST /introspect HTTP/1.1`, a head of well-formed header lines
  (a token name, a value of visible characters), one `Content-Length` and
  a body of exactly that length, nothing before or after it;
- the exact form content type; no `Transfer-Encoding`, `Content-Encoding`,
  `Expect`, `Upgrade`, `X-Request-Id`, no `Connection` but `keep-alive`,
  no `Accept` asking for a signed answer;
- a form with no error, from a caller `rfc7662.from_memory` knows: its
  answer is written at once (an `Answer`, or a `Metered` one: a limited
  credential's count is taken there), or once `rfc7662.complete` has gone on
  through Redis and Postgres (`Later`, for a `Pending` one).

Anything else goes to aiohttp untouched: the same bytes, which it parses
and answers as it always does (callers to authenticate, errors, JWT answers,
draining). Both paths make the same answer: its headers come from
`web/headers.py`, and it is counted in the same metric. The accepted grammar
is a strict subset of what aiohttp's parser accepts, read the same way, so no
request can mean one thing here and another there.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, NamedTuple

import orjson
from aiohttp import web
from aiohttp.helpers import rfc822_formatted_time

from introspect import forms, rfc7662, rfc9701
from introspect.metrics import METRICS
from introspect.rfc7662 import Answer
from introspect.web.errors import UNAVAILABLE, UNREACHABLE, new_ids
from introspect.web.headers import answer_age, caching, metered_headers

if TYPE_CHECKING:
    from collections.abc import Mapping

    from introspect.limits import Metered
    from introspect.service import Authority
    from introspect.web.protocol import Answers

log = logging.getLogger("introspect.web")
REQUEST_LINE = b"POST /introspect HTTP/1.1"
ROUTE = "/introspect"  # the metric label, as the error middleware names the route
FORM = b"application/x-www-form-urlencoded"
# A longer body (or one the app would refuse as too large) goes through aiohttp.
MAX_BODY = 8192
# A head longer than this goes through aiohttp (whose own limit is 8190 bytes per line).
MAX_HEAD = 8192
# Heads read are remembered by their bytes, up to this many of at most this length each (about
# 0.5 MiB at most; all forgotten at once when full, so new heads cost a reading as before).
MEMO_HEADS = 512
MEMO_HEAD = 1024
_START = REQUEST_LINE + b"\r\n"
# A request line, then header lines: a token name, a colon, a value of visible ASCII, spaces
# and tabs (no control character, no obs-text), each line ended by CRLF.
_HEAD = re.compile(
    rb"[A-Z]+ [\x21-\x7e]+ HTTP/1\.[01]\r\n(?:[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t\x20-\x7e]*\r\n)*"
)
# Headers that send a request through aiohttp whatever their value.
_REFUSED = frozenset(
    {b"transfer-encoding", b"content-encoding", b"expect", b"upgrade", b"x-request-id"}
)
# Headers read here (any header twice sends the request through aiohttp).
_READ = frozenset(
    {b"content-length", b"content-type", b"authorization", b"accept", b"connection", b"host"}
)


class Declined(Enum):
    """Why a read was left to aiohttp."""

    # One whole request of the plain grammar that needs aiohttp's path (a caller to
    # authenticate, an error to answer, a signed answer): aiohttp's parser ends it between
    # two requests.
    WHOLE = "whole"
    # The start of a plain request, the rest to come: held by the connection until it has
    # come (the head timer and aiohttp's keep-alive timer still bound how long).
    PART = "part"
    # Not one whole request of the plain grammar (several, a part of another kind, bytes
    # that are no request): aiohttp's parser may be left inside a request, so the connection
    # stays with aiohttp.
    OTHER = "other"


class Shortcut:
    """Answers `POST /introspect` from memory for one app's connections (see the module)."""

    __slots__ = ("_answers", "_app", "_authority", "_blocks", "_heads", "_limited", "_max_body")

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self._authority: Authority | None = None
        self._answers: Answers | None = None
        self._blocks: dict[int, bytes] = {}  # an unlimited answer's header lines, by max-age
        self._limited = b""  # the fixed header lines of a limited credential's answer
        self._heads: dict[bytes, _Head] = {}  # heads read, by their bytes
        self._max_body = min(MAX_BODY, app._client_max_size - 1)

    @staticmethod
    def serves(app: web.Application) -> bool:
        """Whether `app` answers `POST /introspect` (the admin app, on its own port, does not)."""
        return any(
            route.method == "POST"
            and route.resource is not None
            and route.resource.canonical == ROUTE
            for route in app.router.routes()
        )

    def answer(self, data: bytes, idle: bool) -> bytes | Later | Declined:
        """The whole HTTP answer to `data`, or why it goes to aiohttp; `idle`: whether aiohttp
        is between two requests on this connection (else nothing may be answered before it
        answers the one it holds)."""
        started = time.perf_counter()
        head_end = data.find(b"\r\n\r\n")
        if head_end < 0:
            if idle and len(data) < MAX_HEAD and _START.startswith(data[: len(_START)]):
                return Declined.PART
            return Declined.OTHER
        # A resource server sends the same head again and again (only its body changes): it is
        # read once (about a third of the shortcut's own work), then found by its bytes.
        key = data[:head_end]
        head = self._heads.get(key)
        if head is None:
            head = _read_head(data, head_end)
            if head is None:
                return Declined.OTHER  # (not remembered: the connection is aiohttp's from now)
            if head_end <= MEMO_HEAD:
                if len(self._heads) >= MEMO_HEADS:
                    self._heads.clear()
                self._heads[key] = head
        plain = idle and head.plain
        body = data[head_end + 4 :]
        declared = head.length
        if len(body) != declared:
            if plain and len(body) < declared <= self._max_body:
                return Declined.PART  # its body comes in a later read
            return Declined.OTHER
        # One whole request: aiohttp's parser, fed it, would end between two requests.
        if not plain or len(body) > self._max_body or not head.form:
            return Declined.WHOLE
        return self._decide(head.headers, body, started)

    def _decide(
        self, headers: dict[bytes, bytes], body: bytes, started: float
    ) -> bytes | Later | Declined:
        authority = self._authority
        if authority is None:
            from introspect.web.keys import ANSWERS, AUTHORITY  # (keys imports protocol)

            if AUTHORITY not in self._app:  # not started yet
                return Declined.WHOLE
            authority = self._authority = self._app[AUTHORITY]
            self._answers = self._app[ANSWERS]
            self._limited = _encoded(metered_headers({}))
        if self._answers is not None and self._answers.draining:
            return Declined.WHOLE  # aiohttp's path says `Connection: close`
        accept = headers.get(b"accept")
        try:
            if accept is not None and rfc9701.wants_jwt(accept.decode("ascii")):
                return Declined.WHOLE
            params = forms.single(forms.parse_form(body))
            raw = headers.get(b"authorization")
            authorization = None if raw is None else raw.decode("ascii")
            found = rfc7662.from_memory(authority, authorization, params)
        except Exception:  # aiohttp's path decides again, answers (and logs) it
            return Declined.WHOLE
        if found is None:
            return Declined.WHOLE  # the caller must be authenticated: aiohttp's path does it
        if isinstance(found, rfc7662.Pending):
            return Later(self, authority, authorization, params, found, started)
        return self.written(authority, found, started)

    def written(self, authority: Authority, found: Answer | Metered, started: float) -> bytes:
        """The HTTP answer of `found`, with the view's headers (`public.caching`), counted as
        the view's is. An unlimited answer's headers depend on its max-age only: they are
        encoded once per max-age."""
        if isinstance(found, Answer):
            age = answer_age(authority, found)
            block = self._blocks.get(age)
            if block is None:
                block = self._blocks[age] = _encoded(caching(authority, found))
        else:
            block = self._limited + _encoded(found.headers)
        METRICS.request(ROUTE, 200, time.perf_counter() - started)
        return _framed(_OK + block, found.body)


class _Head(NamedTuple):
    """What a request head's bytes say, whatever the body and the connection's state."""

    plain: bool  # `POST /introspect HTTP/1.1`, no header twice, none that sends it to aiohttp
    length: int  # its Content-Length (0 when it has none)
    form: bool  # the form content type, and no `Connection` but keep-alive
    headers: dict[bytes, bytes]  # the headers read here, by lower-case name


def _read_head(data: bytes, head_end: int) -> _Head | None:
    """What the head `data[:head_end]` says; None when the connection must stay with aiohttp
    (not the grammar read here, a second Content-Length, a Transfer-Encoding, a length that
    is no plain decimal)."""
    if head_end >= MAX_HEAD or not _HEAD.fullmatch(data, 0, head_end + 2):
        return None
    lines = data[:head_end].split(b"\r\n")
    headers: dict[bytes, bytes] = {}
    plain = lines[0] == REQUEST_LINE
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.lower()
        if name in headers:
            if name == b"content-length":
                return None
            plain = False
        elif name in _READ:
            headers[name] = value.strip(b" \t")
        elif name in _REFUSED:
            if name == b"transfer-encoding":
                return None
            plain = False
    length = headers.get(b"content-length", b"0")
    if not length.isdigit() or len(length) > 5 or (length[0] == 48 and length != b"0"):
        return None  # (no leading zero: one spelling of each length)
    connection = headers.get(b"connection")
    form = headers.get(b"content-type") == FORM and (
        connection is None or connection.lower() == b"keep-alive"
    )
    return _Head(plain, int(length), form, headers)


def _encoded(headers: Mapping[str, str]) -> bytes:
    """Header lines, each ended by CRLF (a limited answer's on every request: a loop, which
    costs less than joining what a generator makes)."""
    lines = ""
    for name, value in headers.items():
        lines += f"{name}: {value}\r\n"
    return lines.encode("latin-1")


def _framed(head: bytes, body: bytes) -> bytes:
    """`head` (the status line and header lines) with Content-Length and Date, then `body`."""
    date = rfc822_formatted_time().encode("ascii")
    return b"%sContent-Length: %d\r\nDate: %s\r\n\r\n%s" % (head, len(body), date, body)


_UNREACHABLE = orjson.dumps(UNREACHABLE)
_OK = b"HTTP/1.1 200 OK\r\n"


@dataclass(frozen=True, slots=True)
class Later:
    """The rest of an introspection memory could not answer whole (a read through Redis or
    Postgres, a lease to take): `rfc7662.complete` goes on from where `from_memory` stopped,
    as the view's does. The connection writes what `run` returns, or hands the request to
    aiohttp when it returns None (a failure of another kind than an unreachable store:
    aiohttp's path decides again, answers and logs it)."""

    shortcut: Shortcut
    authority: Authority
    authorization: str | None
    params: dict[str, str]
    pending: rfc7662.Pending
    started: float

    async def run(self) -> bytes | None:
        """The HTTP answer, or None."""
        authority = self.authority
        try:
            _caller, found = await rfc7662.complete(
                authority, self.authorization, self.params, self.pending
            )
        except UNAVAILABLE as exc:
            log.warning("store unavailable on %s: %s", ROUTE, type(exc).__name__, extra=new_ids())
            METRICS.request(ROUTE, 503, time.perf_counter() - self.started)
            head = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            return _framed(head, _UNREACHABLE)
        except Exception:  # aiohttp's path decides again, answers (and logs) it
            return None
        return self.shortcut.written(authority, found, self.started)
