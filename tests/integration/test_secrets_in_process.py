"""Secrets a process holds or shows: record reprs, the presented-value memo, the command line."""

from __future__ import annotations

import asyncio
import base64
import sys
from pathlib import Path

import orjson

from introspect import credentials, store
from introspect.cache import ANSWER, Invalidation
from introspect.config import Settings
from introspect.service import Authority
from tests.helpers import Registered, Server, cli_env, register


async def test_record_reprs_print_no_hash_or_key(server: Server, app_client: Registered) -> None:
    """A client's, a credential's, a signing key's and an invalidation's repr hold no hash and
    no private key."""
    authority = server.authority
    token = (
        await server.post_form(
            "/token", {"grant_type": "client_credentials"}, headers=app_client.auth
        )
    ).json()["access_token"]
    client = await store.get_client(authority.pool, app_client.client_id)
    assert client is not None
    [found] = await store.find_credentials(
        authority.pool, [credentials.keyed_hash(authority.server_secrets[0], token)]
    )
    await authority.keyring.ready()
    signing_key, _private = authority.keyring.signer()
    hashes = [found.hash, *(h for h, _ in client.secrets)]
    invalidation = Invalidation.for_credentials([(found.id, found.hash, found.version)])
    shown = repr(client) + repr(found) + repr(signing_key) + repr(invalidation)
    for secret_hash in hashes:
        assert repr(secret_hash)[2:-1][:16] not in shown
        assert secret_hash.hex()[:16] not in shown
    assert "hash" not in shown
    assert "private" not in shown
    assert app_client.client_id in repr(client)


def forged_jwt(n: int) -> str:
    """A JWT-shaped string of almost 8 KiB whose signature nobody made."""
    header = {"alg": "ES256", "typ": "at+jwt", "kid": "nope"}
    head = base64.urlsafe_b64encode(orjson.dumps(header)).rstrip(b"=").decode()
    return f"{head}.{'A' * (8000 - len(head))}{n:08d}.{'B' * 86}"


async def test_unverified_jwts_are_not_memoized(
    server: Server, authority: Authority, resource_server: Registered
) -> None:
    """Forged JWT-shaped strings are not kept in the presented-value memo; a verified one is."""
    forged = [forged_jwt(n) for n in range(50)]
    for token in forged:
        assert (await authority.lookup(token))[ANSWER] is None
        assert (await authority.lookup(token))[ANSWER] is None
    assert not set(forged) & set(authority.hashed)

    client = await register(authority, audiences=("https://api.test",), token_format="jwt")
    issued = await server.post_form(
        "/token", {"grant_type": "client_credentials"}, headers=client.auth
    )
    assert issued.status == 200, issued.body
    token = issued.json()["access_token"]
    assert (await authority.lookup(token))[ANSWER] is not None
    assert token in authority.hashed


async def run_cli(env: dict[str, str], *args: str, stdin: str = "") -> tuple[int, str, str]:
    """`introspect ARGS` run to completion: exit status, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "introspect.cli", *args),
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_revoke_documents_stdin_and_warns_of_argv(
    settings: Settings, server: Server, app_client: Registered, tmp_path: Path
) -> None:
    """`revoke --help` shows `--token -` (stdin); a token given in argv works with a warning."""
    env = cli_env(settings, tmp_path)
    status, out, _ = await run_cli(env, "revoke", "--help")
    assert status == 0
    assert "--token -" in out
    assert "stdin" in out
    token = (
        await server.post_form(
            "/token", {"grant_type": "client_credentials"}, headers=app_client.auth
        )
    ).json()["access_token"]
    status, out, err = await run_cli(env, "revoke", "--token", token, "--json")
    assert (status, orjson.loads(out)["revoked"]) == (0, 1)
    assert "process list" in err
    assert token not in err
