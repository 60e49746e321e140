"""Following introspect's revocation feed: RFC 8936 poll delivery (§2.4, §2.5) of RFC 8417
Security Event Tokens, each verified against the keys at `jwks_uri`.

`Feed.run` polls `POST /events` in a loop: a first poll that returns at once
(the server starts this receiver's position there), then long polls, each
acknowledging the SETs of the one before. The guard caches answers only while
`Feed.following` holds, that is while the last poll was answered within two
long-poll periods and nothing was lost since. Each SET evicts the cached
answers it names (`jti`, `client_id`, `sub`) and every inactive answer; a SET
that reports a gap, names nothing the SDK knows, or fails verification drops
the whole cache, and so does a failed poll (connection refused or cut, a
non-200 answer, a timeout). `epoch` moves on each of these, so an answer asked
for before an event and received after it is not cached.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import jwt

from introspect_sdk.client_auth import ClientAuth
from introspect_sdk.discovery import Metadata
from introspect_sdk.metrics import Metrics

log = logging.getLogger("introspect_sdk.feed")

TYP = "secevent+jwt"
FEED_GAP = "urn:introspect:secevent:feed-gap"
IDENTIFIERS = ("jti", "client_id", "sub")
# Algorithms introspect signs with (its `introspection_signing_alg_values_supported`).
ALGORITHMS = ("ES256", "EdDSA")
# Seconds a long poll may stay open at most (SPEC: answered within 30 s).
LONG_POLL = 30.0
MAX_EVENTS = 100
# Waits between failed polls: doubling from the first to the last.
BACKOFF = (0.05, 2.0)
# A kid not in the cached JWK Set refetches it at most this often (seconds).
JWKS_REFRESH = 5.0


class Keys:
    """The server's JWK Set, fetched when a SET names a kid not yet known."""

    def __init__(self, session: aiohttp.ClientSession, uri: str, timeout: float) -> None:
        self.session = session
        self.uri = uri
        self.timeout = timeout
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched = -JWKS_REFRESH

    async def get(self, kid: str) -> jwt.PyJWK | None:
        """The key `kid`, refetching the set when unknown (at most every JWKS_REFRESH s)."""
        if kid not in self._keys and time.monotonic() - self._fetched >= JWKS_REFRESH:
            self._fetched = time.monotonic()
            async with self.session.get(
                self.uri, timeout=aiohttp.ClientTimeout(total=self.timeout)
            ) as resp:
                resp.raise_for_status()
                document = await resp.json(content_type=None)
            keys = jwt.PyJWKSet.from_dict(document).keys
            self._keys = {k.key_id: k for k in keys if k.key_id is not None}
        return self._keys.get(kid)


class Feed:
    """One receiver's position on the feed, and what the cache may do because of it."""

    def __init__(
        self,
        metadata: Metadata,
        auth: ClientAuth,
        session: aiohttp.ClientSession,
        metrics: Metrics,
        *,
        evict: Callable[[list[tuple[str, str]]], int],
        drop: Callable[[], None],
        long_poll: float = LONG_POLL,
        timeout: float = 5.0,
        receiver: str | None = None,
    ) -> None:
        self.metadata = metadata
        self.auth = auth
        self.session = session
        self.metrics = metrics
        self._evict = evict
        self._drop = drop
        self.long_poll = long_poll
        self.timeout = timeout
        # Each process follows with a position of its own: every one sees every event.
        self.receiver = receiver or "sdk-" + secrets.token_hex(8)
        self.keys = Keys(session, metadata.jwks_uri, timeout)
        self.epoch = 0
        self._answered_at: float | None = None  # monotonic time of the last answered poll

    @property
    def following(self) -> bool:
        """Whether answers may be cached now: the feed answered within two long-poll periods
        and nothing was lost since. A feed silent for longer is dropped here, on first look."""
        if self._answered_at is None:
            return False
        if time.monotonic() - self._answered_at > 2 * self.long_poll:
            self.lost("silent past two long-poll periods")
            return False
        return True

    def lost(self, why: str) -> None:
        """Stop caching and drop the cache: events may have been missed."""
        if self._answered_at is not None:
            log.warning("revocation feed lost (%s): cache dropped until it answers again", why)
        self._answered_at = None
        self.epoch += 1
        self._drop()

    async def run(self) -> None:
        """Poll until cancelled; on any failure drop the cache, back off, and start again."""
        acks: list[str] = []
        errors: dict[str, dict[str, str]] = {}
        immediately = True
        delay = BACKOFF[0]
        while True:
            try:
                answer = await self._poll(acks, errors, immediately)
                acks, errors = await self._apply(answer["sets"])
                self.metrics.feed_polls += 1
                if self._answered_at is None:
                    self.epoch += 1
                self._answered_at = time.monotonic()
                immediately = answer["moreAvailable"]
                delay = BACKOFF[0]
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # whatever went wrong, the events may be lost: start over
                self.metrics.feed_errors += 1
                self.lost(f"{type(exc).__name__}")
                immediately = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF[1])

    async def _poll(
        self, acks: list[str], errors: dict[str, dict[str, str]], immediately: bool
    ) -> dict[str, Any]:
        headers, fields = self.auth.apply(self.metadata.issuer)
        body: dict[str, Any] = {
            "maxEvents": MAX_EVENTS,
            "returnImmediately": immediately,
            "ack": acks,
            "receiver": self.receiver,
            **fields,
        }
        if errors:
            body["setErrs"] = errors
        timeout = aiohttp.ClientTimeout(total=self.long_poll + self.timeout)
        async with self.session.post(
            self.metadata.events_endpoint, json=body, headers=headers, timeout=timeout
        ) as resp:
            if resp.status != 200:
                raise FeedError(f"the feed answered {resp.status}")
            answer = json.loads(await resp.read())
        if (
            not isinstance(answer, dict)
            or not isinstance(answer.get("sets"), dict)
            or not isinstance(answer.get("moreAvailable", False), bool)
        ):
            raise FeedError("the feed's answer is not an RFC 8936 poll response")
        answer.setdefault("moreAvailable", False)
        return answer

    async def _apply(self, sets: dict[str, Any]) -> tuple[list[str], dict[str, dict[str, str]]]:
        """Apply each SET; the jtis to acknowledge, and the setErrs of those that failed."""
        acks: list[str] = []
        errors: dict[str, dict[str, str]] = {}
        for jti, token in sets.items():
            try:
                claims = await self._verified(token)
            except (jwt.PyJWTError, FeedError, ValueError) as exc:
                # Something happened that this receiver cannot read: forget everything.
                errors[jti] = {"err": "invalid_request", "description": type(exc).__name__}
                self.epoch += 1
                self._drop()
                continue
            self._event(claims)
            acks.append(jti)
        return acks, errors

    async def _verified(self, token: object) -> dict[str, Any]:
        if not isinstance(token, str):
            raise FeedError("a SET is not a string")
        header = jwt.get_unverified_header(token)
        if header.get("typ") != TYP or not isinstance(header.get("kid"), str):
            raise FeedError("not a SET (typ secevent+jwt with a kid)")
        key = await self.keys.get(header["kid"])
        if key is None:
            raise FeedError("a SET signed by an unpublished key")
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=list(ALGORITHMS),
            audience=self.auth.client_id,
            issuer=self.metadata.issuer,
            options={"require": ["iss", "aud", "iat", "jti", "events"], "verify_iat": False},
        )
        if not isinstance(claims["events"], dict):
            raise FeedError("a SET's events is not an object")
        return claims

    def _event(self, claims: dict[str, Any]) -> None:
        self.epoch += 1
        self.metrics.events += 1
        iat = claims["iat"]
        if isinstance(iat, int | float):
            lag = max(0.0, time.time() - iat)
            self.metrics.feed_lag = lag
            self.metrics.feed_lag_max = max(self.metrics.feed_lag_max, lag)
        named: list[tuple[str, str]] = []
        for event_type, payload in claims["events"].items():
            if event_type == FEED_GAP or not isinstance(payload, dict):
                named = []
                break
            named += [(n, payload[n]) for n in IDENTIFIERS if isinstance(payload.get(n), str)]
        if named:
            self._evict(named)
        else:  # a gap, or an event naming nothing this receiver knows: assume the worst
            self._drop()


class FeedError(Exception):
    """The feed answered something other than what RFC 8936 and introspect's SETs promise."""


async def stop(task: asyncio.Task[None] | None) -> None:
    """Cancel a feed task and wait for it to end."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
