"""`python -m bench.hot_path`: the in-memory step of /introspect alone, in ns per call.

No server: an Authority over no pool, whose memory is filled by hand the way
two warm requests fill it (caller remembered, credential hashed and cached,
its owner's record held, and for the limited API key a window lease held by
the meter). Times `rfc7662.from_memory` for an access token, an API key and an
API key with a generous window (`limited-hit`'s hot path): the best of 15 runs
of 200,000 calls each.
"""

from __future__ import annotations

import asyncio
import math
import timeit
from pathlib import Path
from typing import Any, cast

from introspect import credentials, rfc6749, rfc7662
from introspect.cache import ANSWER, LIMITS, answer_of
from introspect.config import Settings
from introspect.credentials import Kind
from introspect.limits import Metered
from introspect.redis import LeanRedis
from introspect.service import Authority
from introspect.store import Client, Credential, now
from introspect.store.records import Limits, Window

CALLS = 200_000
RUNS = 15
UNUSED_REDIS = "redis://127.0.0.1:1"


def prepared() -> tuple[Authority, str, dict[str, dict[str, str]]]:
    """A warm Authority, the caller's Authorization header, the form of each kind."""
    settings = Settings(
        database_url="postgresql://unused",
        redis_url=UNUSED_REDIS,
        data_dir=Path("."),
        secrets=(b"s" * 32,),
        local_cache_ttl=math.inf,
    )
    authority = Authority(settings, cast(Any, None), LeanRedis(UNUSED_REDIS))
    local = authority.local
    local.usable, local.fresh_until = True, math.inf
    t = now()

    def client(name: str, *, can_introspect: bool) -> Client:
        client_id = "client_" + name * 22
        return Client(client_id, name, ("read",), ("https://api",), can_introspect, 3600,
                      "opaque", None, False, t, t)  # fmt: skip

    caller, owner = client("r", can_introspect=True), client("o", can_introspect=False)
    for known in (caller, owner):
        local.put_client(known.client_id, known, local.epoch)
    authorization = rfc6749.basic(caller.client_id, "secret")
    local.remember(authorization, caller)
    forms = {}
    generous = Limits("api_key:" + "k" * 22, (Window("generous", 1_000_000_000, 86_400),))
    for kind, limits in ((Kind.ACCESS_TOKEN, None), (Kind.API_KEY, None), (Kind.API_KEY, generous)):
        token = credentials.generate(kind)
        key = credentials.keyed_hash(settings.secrets[0], token)
        credential = Credential("tok_" + "c" * 22, kind.value, "opaque", key, owner.client_id,
                                owner.client_id, None, ("read",), ("https://api",), t, t,
                                t + 3600, None, None, 1, None, limits=limits)  # fmt: skip
        local.put(key, rfc7662.entry_for(credential, settings.issuer), local.epoch, t)
        authority.hashed[token] = key
        forms[kind.value if limits is None else "limited " + kind.value] = {"token": token}
    return authority, authorization, forms


async def main() -> None:
    """Print the best time per call of each kind."""
    authority, authorization, forms = prepared()
    for kind, form in forms.items():
        answer = rfc7662.from_memory(authority, authorization, form)
        if isinstance(answer, rfc7662.Pending) and answer.entry is not None:
            # The window lease: with no Redis, the meter grants this worker the whole window.
            limits = answer.entry[LIMITS]
            assert limits is not None
            assert answer.entry[ANSWER] is not None
            await authority.meter.admit((limits,), 1, answer_of(answer.entry))
            answer = rfc7662.from_memory(authority, authorization, form)
        if not isinstance(answer, rfc7662.Answer | Metered) or not answer.body.startswith(
            b'{"active":true'
        ):
            raise SystemExit(f"{kind}: not answered active from memory: {answer!r}")
        ns = {"step": rfc7662.from_memory, "a": authority, "h": authorization, "f": form}
        best = min(timeit.repeat("step(a, h, f)", globals=ns, number=CALLS, repeat=RUNS))
        print(f"{kind}: {best * 1e9 / CALLS:.0f} ns per call (best of {RUNS} x {CALLS:,})")


if __name__ == "__main__":
    asyncio.run(main())
