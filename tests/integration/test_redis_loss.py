"""Redis may lose writes; none of its losses brings back an old state (SPEC promise 6).

Each test runs against a private Valkey it controls: restarted from a
snapshot older than a change, replaced by a replica that never received the
change, flushed while a read-through is in flight, configured to evict. The
argument these tests check is in introspect/history.py.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from introspect import admin, credentials, rfc7523, store
from introspect.cache import KEY_PREFIX, client_key
from introspect.config import Settings
from introspect.service import Authority
from tests.helpers import (
    Registered,
    Server,
    cli_env,
    eventually,
    free_port,
    register,
    serve_subprocess,
    start_server,
)
from tests.integration.test_private_key_jwt import key_client, token
from tests.integration.test_races import Gate
from tests.valkey import Proxy, Valkey, ready, running, serving

GRANT = {"grant_type": "client_credentials"}
# Fresh connections per check: the kernel spreads them over both workers.
PROBES = 24


@pytest.fixture
async def private_server(settings: Settings, valkey: Valkey) -> AsyncIterator[Server]:
    """An in-process server on the session's Postgres and this test's Valkey."""
    async with serving(settings, valkey) as srv:
        yield srv


class Remote:
    """`introspect serve` in a subprocess, called over fresh connections."""

    def __init__(self, base: str, admin_key: str) -> None:
        self.base = base
        self.admin = {"Authorization": f"Bearer {admin_key}"}
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))

    async def call(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        async with self.http.request(method, self.base + path, **kw) as resp:
            body = await resp.read()
            return resp.status, orjson.loads(body) if body else None

    async def admin_call(self, method: str, path: str, body: Any) -> Any:
        status, answer = await self.call(method, "/admin" + path, json=body, headers=self.admin)
        assert status in (200, 201), answer
        return answer

    async def answers(self, caller: Registered, credential: str) -> list[dict[str, Any]]:
        """The introspection answers to PROBES requests, each on a new connection."""
        out = []
        for _ in range(PROBES):
            status, answer = await self.call(
                "POST", "/introspect", data={"token": credential}, headers=caller.auth
            )
            assert status == 200, answer
            out.append(answer)
        return out

    async def counted(self, metric: str, at_least: float) -> bool:
        """Whether the counter `introspect_<metric>_total`, summed over workers, reached it."""
        async with self.http.get(self.base + "/metrics") as resp:
            text = await resp.text()
        name = f"introspect_{metric}_total "
        values = [float(line[len(name) :]) for line in text.splitlines() if line.startswith(name)]
        return sum(values) >= at_least

    async def ready_everywhere(self) -> bool:
        for _ in range(PROBES):
            status, answer = await self.call("GET", "/readyz")
            if status != 200 or answer["status"] != "ok":
                return False
        return True


async def _later_than(when: int) -> bool:
    return store.now() >= when


async def _cached(valkey: Valkey, settings: Settings, *credential: str) -> bool:
    """Whether Redis holds an entry for each credential."""
    keys = [KEY_PREFIX + credentials.keyed_hash(settings.secrets[0], c) for c in credential]
    found = await valkey.command("MGET", *keys)
    assert isinstance(found, list)
    return all(value is not None for value in found)


async def _records_cached(valkey: Valkey, *client_ids: str) -> bool:
    """Whether Redis holds a client record (not a tombstone) for each client."""
    found = await valkey.command("MGET", *[KEY_PREFIX + client_key(c) for c in client_ids])
    assert isinstance(found, list)
    return all(isinstance(v, bytes) and not v.endswith(b"|T") for v in found)


async def test_a_restart_from_an_older_snapshot_brings_back_no_old_state(
    settings: Settings, authority: Authority, valkey: Valkey, tmp_path: Path
) -> None:
    """Changes made after a snapshot (a revoked token, a revoked API key, a narrowed API key,
    a disabled client whose enabled record the snapshot holds) stay in force on every worker
    after Redis restarts from it."""
    await valkey.wait_ready()
    minted = await admin.create_admin_key(authority, "test", {"name": "t-" + secrets.token_hex(4)})
    private = replace(settings, redis_url=valkey.url)
    with serve_subprocess(private, tmp_path / "serve", workers=2) as env:
        remote = Remote(env["BASE"], minted["key"])
        try:
            rs = await register(authority, scopes=(), can_introspect=True)
            app = await register(authority)
            other = await register(authority)
            tokens = {}
            for name, client in (("revoked", app), ("disabled", other)):
                status, answer = await remote.call(
                    "POST", "/token", data=GRANT, headers=client.auth
                )
                assert status == 200, answer
                tokens[name] = answer["access_token"]
            revoked_key = await remote.admin_call(
                "POST", "/api-keys", {"client_id": app.client_id, "scopes": ["read"]}
            )
            narrowed_key = await remote.admin_call(
                "POST", "/api-keys", {"client_id": app.client_id, "scopes": ["read", "write"]}
            )
            every = [*tokens.values(), revoked_key["key"], narrowed_key["key"]]
            for credential in every:
                assert all(a["active"] for a in await remote.answers(rs, credential))
            await eventually(lambda: _cached(valkey, settings, *every))
            await eventually(lambda: _records_cached(valkey, other.client_id, rs.client_id))
            await valkey.command("SAVE")  # the snapshot holds every credential active

            status, _ = await remote.call(
                "POST", "/revoke", data={"token": tokens["revoked"]}, headers=app.auth
            )
            assert status == 200
            await remote.admin_call("POST", "/revocations", {"id": revoked_key["id"]})
            narrow = {"scopes": ["read"]}
            await remote.admin_call("PATCH", f"/api-keys/{narrowed_key['id']}", narrow)
            await remote.admin_call("PATCH", f"/clients/{other.client_id}", {"disabled": True})

            async def new_state_everywhere() -> None:
                for credential in (tokens["revoked"], tokens["disabled"], revoked_key["key"]):
                    assert await remote.answers(rs, credential) == [{"active": False}] * PROBES
                narrowed = await remote.answers(rs, narrowed_key["key"])
                assert [(a["active"], a["scope"]) for a in narrowed] == [(True, "read")] * PROBES

            await new_state_everywhere()
            valkey.kill()
            await valkey.restart()  # from the snapshot: every credential active again in Redis
            await new_state_everywhere()  # at once, whether or not the loss was noticed yet
            await eventually(remote.ready_everywhere, within=20)
            await new_state_everywhere()
            # One replay at start (a new Redis), one after the restart; a loss seen.
            await eventually(lambda: remote.counted("redis_history_replays", 2), within=20)
            await eventually(lambda: remote.counted("redis_history_losses", 1), within=20)
        finally:
            await remote.http.close()


async def test_a_replica_promoted_before_it_received_a_revocation_brings_back_no_old_state(
    settings: Settings, authority: Authority, tmp_path: Path
) -> None:
    """The primary dies after a revocation its replica never received; the replica is
    promoted behind the same address: the revoked token stays inactive."""
    with running(tmp_path / "primary") as primary:
        await primary.wait_ready()
        replica_args = ("--replicaof", "127.0.0.1", str(primary.port))
        with running(tmp_path / "replica", *replica_args, password=primary.password) as replica:
            await replica.wait_ready()
            async with (
                Proxy(primary.port) as proxy,
                serving(settings, primary, via=proxy) as srv,
            ):
                app = await register(authority)
                rs = await register(authority, scopes=(), can_introspect=True)
                answer = await srv.post_form("/token", GRANT, headers=app.auth)
                doomed = answer.json()["access_token"]

                async def active() -> bool:
                    resp = await srv.post_form("/introspect", {"token": doomed}, headers=rs.auth)
                    return bool(resp.json()["active"])

                assert await active()
                await eventually(lambda: _cached(replica, settings, doomed))  # replicated
                await replica.command("REPLICAOF", "NO", "ONE")  # hears nothing more
                revoked = await srv.authority.revoke_presented(doomed, actor="test", owner=None)
                assert revoked.count == 1
                assert not await active()
                primary.kill()
                await proxy.switch(replica.port)  # the promoted replica holds it active
                for _ in range(20):
                    assert not await active()
                await eventually(lambda: ready(srv), within=20)
                assert not await active()
                history = await replica.command("GET", "introspect:history")
                assert isinstance(history, bytes)  # the promoted server was vouched for


async def test_a_flush_during_a_stale_read_through_brings_back_no_old_state(
    settings: Settings, private_server: Server, valkey: Valkey
) -> None:
    """A read-through that read Postgres before a revocation, and fills after the revocation's
    answer was flushed from Redis, leaves no active answer for any worker."""
    srv = private_server
    app = await register(srv.authority)
    rs = await register(srv.authority, scopes=(), can_introspect=True)
    doomed = (await srv.post_form("/token", GRANT, headers=app.auth)).json()["access_token"]
    key = credentials.keyed_hash(settings.secrets[0], doomed)
    gate = Gate(key)
    srv.authority.cache.before_fill = gate
    try:
        reading = asyncio.ensure_future(
            srv.post_form("/introspect", {"token": doomed}, headers=rs.auth)
        )
        await asyncio.wait_for(gate.reached.wait(), 10)  # read Postgres: active
        revoked = await srv.authority.revoke_presented(doomed, actor="test", owner=None)
        assert revoked.count == 1
        await valkey.command("FLUSHALL")
        gate.release.set()
        await reading  # a concurrent answer: either state is allowed for it
    finally:
        srv.authority.cache.before_fill = None
    stored = await valkey.command("GET", KEY_PREFIX + key)
    assert stored is None or not stored.split(b"|", 1)[1].startswith(b"{")
    # Another worker, which never saw the flush, and the first one: inactive.
    test_server, other = await start_server(replace(settings, redis_url=valkey.url))
    try:
        for each in (other, srv):
            resp = await each.post_form("/introspect", {"token": doomed}, headers=rs.auth)
            assert resp.body == b'{"active":false}'
        await eventually(lambda: ready(other))
        resp = await other.post_form("/introspect", {"token": doomed}, headers=rs.auth)
        assert resp.body == b'{"active":false}'
    finally:
        await other.http.close()
        await test_server.close()


def test_a_redis_that_evicts_keys_is_refused_at_start(settings: Settings, tmp_path: Path) -> None:
    """`introspect serve` against a Redis with an evicting maxmemory-policy exits with a message
    that says what to set."""
    with running(tmp_path / "valkey", "--maxmemory-policy", "allkeys-lru") as evicting:
        env = {
            **cli_env(replace(settings, redis_url=evicting.url), tmp_path),
            "INTROSPECT_PORT": str(free_port()),
        }
        done = subprocess.run(
            [sys.executable, "-m", "introspect.cli", "serve", "--workers", "1"],
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
    assert done.returncode != 0
    assert b"maxmemory-policy noeviction" in done.stderr


async def test_an_assertion_seen_before_a_redis_loss_is_refused_after_it(
    private_server: Server, valkey: Valkey
) -> None:
    """A private_key_jwt assertion accepted once is refused again after Redis restarted from a
    snapshot taken before it was seen."""
    srv = private_server
    client = await key_client(srv.authority)
    # This history began when the server started; an assertion made before it (or within
    # the clock leeway) is refused as possibly seen in a lost one: make one clearly after.
    began = srv.authority.cache.history.started_at
    await eventually(lambda: _later_than(began + 1))
    assertion = client.assertion(iat=store.now() + rfc7523.LEEWAY - 1)
    await valkey.command("SAVE")  # before the assertion's jti is remembered
    first = await token(srv, client.form(assertion))
    assert first.status == 200, first.body
    assert (await token(srv, client.form(assertion))).status == 401  # remembered
    valkey.kill()
    await valkey.restart()

    async def refused() -> bool:
        """Never accepted; 503 while the history is being vouched for, then 401."""
        replayed = await token(srv, client.form(assertion))
        assert replayed.status in (401, 503), replayed.body
        return replayed.status == 401

    await eventually(refused, within=20)
    assert srv.authority.cache.history.started_at > began  # a new history, after the loss
    assert (await token(srv, client.form(assertion))).status == 401
