"""Acknowledgements: many concurrent changes wait on one Redis connection per process."""

from __future__ import annotations

import asyncio

from introspect import acks
from introspect.config import Settings
from introspect.redis import resp
from tests.helpers import register
from tests.valkey import Valkey, serving

GRANT = {"grant_type": "client_credentials"}
CHANGES = 64


async def _clients(probe: resp.Client) -> int:
    """How many clients the server has connected, this probe's own included."""
    info = await probe.call("INFO", "clients")
    return int(resp.Server.fields(info)["connected_clients"])


async def test_concurrent_changes_share_one_connection_for_their_acknowledgements(
    settings: Settings, valkey: Valkey
) -> None:
    """64 revocations at once are each acknowledged, and open no Redis connection per change."""
    async with serving(settings, valkey) as srv:
        app = await register(srv.authority)
        tokens = [
            (await srv.post_form("/token", GRANT, headers=app.auth)).json()["access_token"]
            for _ in range(CHANGES)
        ]
        await srv.authority.revoke_presented(tokens.pop(), actor="test", owner=None)
        probe = resp.Client(valkey.url)
        baseline = await _clients(probe)
        peak = baseline

        finished = asyncio.Event()

        async def watch() -> None:
            nonlocal peak
            while not finished.is_set():
                peak = max(peak, await _clients(probe))
                await asyncio.sleep(0.005)

        watching = asyncio.ensure_future(watch())
        try:
            done = await asyncio.gather(
                *(srv.authority.revoke_presented(t, actor="test", owner=None) for t in tokens)
            )
        finally:
            finished.set()
            await asyncio.wait_for(watching, 10)
            probe.close()
    assert [r.announced.listeners for r in done] == [1] * len(tokens)
    assert peak <= baseline


def test_only_nonces_of_our_form_name_a_list() -> None:
    """A listener pushes an acknowledgement only for a nonce a Collector made: a stranger
    publishing on the channel cannot make it write under another key."""
    assert acks.list_key("0123456789abcdef:0123456789abcdef01234567") == (
        "introspect:acks:0123456789abcdef"
    )
    for bad in ("", "x", "0123456789abcdef", "../../etc", "0123456789abcdef:zz", "A" * 41):
        assert acks.list_key(bad) is None
