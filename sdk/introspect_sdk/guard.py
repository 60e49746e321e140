"""The framework-free core: `Guard.introspect(token)` (RFC 7662) with the SDK's cache rules,
and `Guard.authenticate(credential)`, what a protected route does with the answer.

The cache rules (the SPEC's "Resource-server SDK"):

* An answer, active or inactive, is cached only while the revocation feed is
  followed (`Feed.following`), and only if no event arrived and the feed was
  not lost while it was being asked for (`Feed.epoch` unchanged): otherwise an
  answer from before a revocation could outlive the event that revoked it.
* For at most min(`cache_ttl`, the answer's `Cache-Control: max-age`, its
  `exp`); not at all when the answer says `no-store` or no `max-age`
  (introspect says `no-store` for credentials with rate limits or credits:
  every use must be counted there).
* Events evict what they name; a gap, a lost or silent feed drops everything.
* Concurrent misses for one credential make one request; the others wait for it.
* Introspect unreachable, or answering anything but 200, with nothing valid
  cached: `Unavailable`, which protected routes answer 503. Never the route.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp

from introspect_sdk import answers
from introspect_sdk.answers import Introspection, Refusal
from introspect_sdk.cache import AnswerCache
from introspect_sdk.client_auth import ClientAuth
from introspect_sdk.discovery import DiscoveryError, Metadata, discover
from introspect_sdk.feed import LONG_POLL, Feed, stop
from introspect_sdk.metrics import Metrics

log = logging.getLogger("introspect_sdk")

DEFAULT_TTL = 60.0
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?\s*(?:,|$)", re.IGNORECASE)
_NO_STORE = re.compile(r"(?:^|,)\s*(?:no-store|no-cache)\s*(?:,|$)", re.IGNORECASE)


class Unavailable(Exception):
    """Introspect could not be asked (unreachable, timed out, or not answering 200)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """An introspection answer, and the rate-limit fields its response carried."""

    answer: Introspection
    limit_headers: tuple[tuple[str, str], ...] = ()


def max_age(cache_control: str | None) -> int | None:
    """The `max-age` of a Cache-Control value (RFC 9111 §5.2.2.1); None when absent or when
    `no-store` / `no-cache` forbid reuse."""
    if cache_control is None or _NO_STORE.search(cache_control):
        return None
    found = _MAX_AGE.search(cache_control)
    return int(found.group(1)) if found else None


def lifetime(answer: Introspection, cache_ttl: float, age: int | None, now: float) -> float:
    """Seconds `answer` may be reused: min(own setting, max-age, until exp); 0 when never."""
    if age is None:
        return 0.0
    ttl = min(cache_ttl, float(age))
    if answer.exp is not None:
        ttl = min(ttl, answer.exp - now)
    return max(ttl, 0.0)


class Guard:
    """Introspection for a resource server, cached while following the revocation feed.

    Use as `async with Guard(issuer, auth) as guard:` (or `start()` / `close()`);
    the first `introspect` also starts it. `cache_ttl=0` or `follow_feed=False`
    turns the cache off: every request asks introspect.
    """

    def __init__(
        self,
        issuer: str,
        auth: ClientAuth,
        *,
        cache_ttl: float = DEFAULT_TTL,
        follow_feed: bool = True,
        api_key_header: str | None = None,
        timeout: float = 5.0,
        long_poll: float = LONG_POLL,
        max_entries: int = 10_000,
        receiver: str | None = None,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.auth = auth
        self.cache_ttl = cache_ttl
        self.follow_feed = follow_feed and cache_ttl > 0
        self.api_key_header = api_key_header
        self.timeout = timeout
        self.long_poll = long_poll
        self.receiver = receiver
        self.metrics = Metrics()
        self.cache = AnswerCache(self.metrics, max_entries)
        self.feed: Feed | None = None
        self._session: aiohttp.ClientSession | None = None
        self._metadata: Metadata | None = None
        self._feed_task: asyncio.Task[None] | None = None
        self._inflight: dict[bytes, asyncio.Task[Outcome]] = {}
        self._discovering: asyncio.Lock | None = None

    async def __aenter__(self) -> Guard:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Open the HTTP session; discover the server and follow the feed when it answers."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
            self._discovering = asyncio.Lock()
        try:
            await self.metadata()
        except Unavailable:
            log.warning(
                "introspect not reachable at start; protected routes answer 503 until it is"
            )

    async def close(self) -> None:
        """Stop following the feed and close the HTTP session."""
        await stop(self._feed_task)
        self._feed_task = None
        for task in list(self._inflight.values()):
            task.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def metadata(self) -> Metadata:
        """The server's metadata (RFC 8414), fetched once; starts the feed when first read."""
        if self._metadata is not None:
            return self._metadata
        if self._session is None:
            await self.start()
        assert self._session is not None
        assert self._discovering is not None
        async with self._discovering:
            if self._metadata is None:
                try:
                    self._metadata = await discover(self._session, self.issuer, self.timeout)
                except DiscoveryError as exc:
                    raise Unavailable(str(exc)) from None
                if self.follow_feed:
                    self.feed = Feed(
                        self._metadata,
                        self.auth,
                        self._session,
                        self.metrics,
                        evict=self.cache.evict,
                        drop=self.drop,
                        long_poll=self.long_poll,
                        timeout=self.timeout,
                        receiver=self.receiver,
                    )
                    self._feed_task = asyncio.create_task(self.feed.run())
        return self._metadata

    def drop(self) -> None:
        """Forget every cached answer."""
        if len(self.cache):
            self.metrics.drops += 1
        self.cache.clear()

    async def introspect(self, token: str) -> Outcome:
        """The answer for `token`: cached while valid, else asked of introspect (one request
        for all concurrent callers). `Unavailable` when it cannot be had."""
        key = hashlib.sha256(token.encode()).digest()
        if self.feed is not None and self.feed.following:
            cached = self.cache.get(key, time.monotonic())
            if cached is not None:
                self.metrics.hits += 1
                return Outcome(cached)
        self.metrics.misses += 1
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(self._ask(token, key))
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._forget(key, done))
        else:
            self.metrics.coalesced += 1
        try:
            return await asyncio.shield(task)
        except Unavailable:
            self.metrics.unavailable += 1
            raise

    def _forget(self, key: bytes, task: asyncio.Task[Outcome]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved here, so a failure nobody awaited is not logged

    async def _ask(self, token: str, key: bytes) -> Outcome:
        metadata = await self.metadata()
        assert self._session is not None
        feed = self.feed
        epoch = feed.epoch if feed is not None and feed.following else None
        headers, form = self.auth.apply(metadata.issuer)
        try:
            async with self._session.post(
                metadata.introspection_endpoint,
                data={"token": token, **form},
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as resp:
                if resp.status != 200:
                    # 401/403 here mean this resource server's own credentials are refused.
                    log.warning("introspection answered %s", resp.status)
                    raise Unavailable(f"introspection answered {resp.status}")
                claims: Any = await resp.json(content_type=None)
                response_headers: Mapping[str, str] = resp.headers
                if not isinstance(claims, dict):
                    raise Unavailable("introspection answered no JSON object")
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise Unavailable(f"introspection failed: {type(exc).__name__}") from None
        answer = Introspection.from_json(claims)
        now = time.time()
        if answer.active and answer.exp is not None and answer.exp <= now:
            answer = answers.INACTIVE  # a clock ahead of the server's: trust the exp
        ttl = lifetime(answer, self.cache_ttl, max_age(response_headers.get("Cache-Control")), now)
        if ttl > 0 and feed is not None and feed.following and feed.epoch == epoch:
            self.cache.put(key, answer, time.monotonic() + ttl)
        limits = () if answer.active else answers.limit_headers(response_headers)
        return Outcome(answer, limits)

    async def authenticate(self, credential: str | None) -> Introspection | Refusal:
        """What a protected route does with a request's credential: the active answer, or the
        refusal to send (401, 429, 503)."""
        if credential is None:
            return answers.missing()
        try:
            outcome = await self.introspect(credential)
        except Unavailable:
            return answers.unavailable()
        if not outcome.answer.active:
            return answers.inactive(outcome.limit_headers)
        return outcome.answer

    def credential(self, headers: Mapping[str, str]) -> str | None:
        """The credential a request carries (`Authorization: Bearer`, or the API-key header)."""
        return answers.bearer(headers, self.api_key_header)
