"""Signing keys (RFC 7517): the served JWK Set, rotation that publishes before it signs,
retirement once nothing a key signed can be live, and the first key made once."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
from pathlib import Path

import asyncpg
import jwt
import orjson

from introspect import signing, store
from introspect.config import Settings
from introspect.service import Authority
from introspect.store.migrate import migrate
from tests.helpers import Registered, Server, cli_env
from tests.integration.test_jwt import (
    AUDIENCE,
    introspect,
    issue,
    jwt_client,
    served_keys,
    verify_served,
)


async def test_jwks_serves_public_keys_only(server: Server) -> None:
    """/jwks.json lists signing keys with kid, alg and use, never a private part."""
    resp = await server.request("GET", "/jwks.json")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    assert f"max-age={signing.JWKS_MAX_AGE}" in resp.headers["Cache-Control"]
    keys = resp.json()["keys"]
    assert keys
    for key in keys:
        assert key["use"] == "sig"
        assert key["alg"] in signing.ALGORITHMS
        assert key["kid"]
        assert "d" not in key


async def test_private_keys_are_stored_encrypted(authority: Authority) -> None:
    """The stored private part is sealed: it does not parse as a key, and opens only with
    a server secret."""
    await authority.keyring.ready()
    key, _ = authority.keyring.signer()
    sealed = await authority.pool.fetchval(
        "SELECT private_key FROM signing_keys WHERE kid = $1", key.kid
    )
    assert signing.unseal(authority.server_secrets, key.kid, sealed) is not None
    assert signing.unseal((b"another-secret-of-16+",), key.kid, sealed) is None
    assert signing.unseal(authority.server_secrets, "another-kid", sealed) is None


async def test_new_key_is_published_before_it_signs(
    server: Server, authority: Authority, resource_server: Registered
) -> None:
    """A rotated-in key is in the JWK Set at once, signs only once active, and tokens of
    the old key stay active."""
    keyring = server.authority.keyring
    client = await jwt_client(authority)
    old_token = await issue(server, client)
    old_kid = jwt.get_unverified_header(old_token)["kid"]

    new = await keyring.rotate(propagation_delay=600)
    assert new.kid in await served_keys(server)
    assert jwt.get_unverified_header(await issue(server, client))["kid"] == old_kid

    await authority.pool.execute(
        "UPDATE signing_keys SET activates_at = $2 WHERE kid = $1", new.kid, store.now()
    )
    await keyring.refresh()
    new_token = await issue(server, client)
    assert jwt.get_unverified_header(new_token)["kid"] == new.kid
    for token in (old_token, new_token):
        await verify_served(server, token, audience=AUDIENCE)
        assert (await introspect(server, resource_server, token))["active"]


async def test_eddsa_key_signs_tokens(
    server: Server, authority: Authority, resource_server: Registered
) -> None:
    """After a rotation to an EdDSA key, tokens are EdDSA JWTs that verify and introspect."""
    keyring = server.authority.keyring
    await keyring.rotate("EdDSA", propagation_delay=0)
    try:
        client = await jwt_client(authority)
        token = await issue(server, client)
        decoded = await verify_served(server, token, audience=AUDIENCE)
        assert decoded["header"]["alg"] == "EdDSA"
        assert (await introspect(server, resource_server, token))["active"]
    finally:
        await keyring.rotate(propagation_delay=0)


async def test_superseded_key_retires_once_its_tokens_expired(
    server: Server, authority: Authority
) -> None:
    """A superseded key stays published while a token it signed may live, then retires."""
    keyring = server.authority.keyring
    used = await keyring.rotate(propagation_delay=0)
    await issue(server, await jwt_client(authority))
    unused = await keyring.rotate(propagation_delay=0)
    await keyring.rotate(propagation_delay=0)
    kids = await served_keys(server)
    assert used.kid in kids
    assert unused.kid not in kids  # superseded before it signed anything

    # Time passes: every token `used` signed has expired.
    await authority.pool.execute(
        "UPDATE signing_keys SET signed_until = $2 WHERE kid = $1", used.kid, store.now() - 1
    )
    await keyring.refresh()
    assert used.kid not in await served_keys(server)
    row = await authority.pool.fetchrow(
        "SELECT retired_at, private_key FROM signing_keys WHERE kid = $1", used.kid
    )
    assert row["retired_at"] is not None
    assert row["private_key"] is None


async def test_lagging_worker_never_signs_with_a_retired_key(
    server: Server, settings: Settings
) -> None:
    """A worker that has not seen a rotation yet finds its key retired and signs with the
    current one instead."""
    keyring = server.authority.keyring
    stale = await keyring.rotate(propagation_delay=0)
    lagging = signing.Keyring(server.authority.pool, settings.secrets)
    await lagging.ready()
    assert lagging.signer()[0].kid == stale.kid

    current = await keyring.rotate(propagation_delay=0)
    assert stale.kid not in await served_keys(server)  # it never signed: retired at once
    signed = await lagging.sign({"iss": "x"}, "JWT", store.now() + 60)
    assert jwt.get_unverified_header(signed)["kid"] == current.kid


async def test_first_key_is_created_once_by_concurrent_workers(settings: Settings) -> None:
    """Eight workers starting together on an empty database create exactly one ES256 key."""
    assert settings.database_url
    name = "keys_" + secrets.token_hex(6)
    admin = await asyncpg.connect(settings.database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        dsn = settings.database_url.rsplit("/", 1)[0] + "/" + name
        conn = await asyncpg.connect(dsn)
        await migrate(conn)
        await conn.close()
        pool = await store.create_pool(dsn, min_size=1, max_size=8)
        try:
            keyrings = [signing.Keyring(pool, settings.secrets) for _ in range(8)]
            await asyncio.gather(*(k.ready() for k in keyrings))
            rows = await pool.fetch("SELECT kid, alg FROM signing_keys")
            assert [r["alg"] for r in rows] == ["ES256"]
            assert {k.signer()[0].kid for k in keyrings} == {rows[0]["kid"]}
        finally:
            await pool.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def test_cli_rotates_keys(settings: Settings, tmp_path: Path) -> None:
    """`introspect keys rotate --json` publishes a key that activates after the delay."""
    env = cli_env(settings, tmp_path)
    cli = Path(sys.executable).with_name("introspect")
    before = store.now()
    result = subprocess.run(
        [str(cli), "keys", "rotate", "--propagation-delay", "900", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    made = orjson.loads(result.stdout)
    assert made["alg"] == "ES256"
    assert before + 900 <= made["activates_at"] <= store.now() + 900
