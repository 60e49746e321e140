"""The `introspect` command line, run as a real process on the session's stores: every admin
command, its JSON and table output, its errors, and `serve` with the admin API on its own port."""

from __future__ import annotations

import asyncio
import secrets
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from introspect.config import Settings
from tests.helpers import AdminAPI, Registered, Server, cli_env, free_port, serve_subprocess
from tests.integration.test_flow import introspect, issue


@dataclass(frozen=True)
class Ran:
    """A finished CLI run."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        """stdout as exactly one JSON object on one line."""
        assert self.code == 0, self.err
        lines = self.out.splitlines()
        assert len(lines) == 1, self.out
        value = orjson.loads(lines[0])
        assert isinstance(value, dict)
        return value


@pytest.fixture(scope="module")
def env(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment that points the CLI at the session's stores."""
    return cli_env(settings, tmp_path_factory.mktemp("cli"))


async def cli(env: dict[str, str], *args: str, stdin: str | None = None) -> Ran:
    """Run `introspect ARGS` to completion (the in-process server keeps serving meanwhile)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "introspect.cli",
        *args,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(
        proc.communicate(None if stdin is None else stdin.encode()), 60
    )
    assert proc.returncode is not None
    return Ran(proc.returncode, out.decode(), err.decode())


def unique(prefix: str) -> str:
    """A subject no other test uses."""
    return f"{prefix}-{secrets.token_hex(6)}"


async def api_key_of(env: dict[str, str], *args: str) -> dict[str, Any]:
    """`introspect api-key create ARGS --json`: {id, key}."""
    return (await cli(env, "api-key", "create", *args, "--json")).json()


def failed_with_one_line(ran: Ran, words: str) -> None:
    """The run failed with nothing on stdout and one line on stderr holding `words`."""
    assert ran.code != 0
    assert ran.out == ""
    lines = ran.err.splitlines()
    assert len(lines) == 1, ran.err
    assert words in lines[0]


async def test_admin_key_create_prints_one_json_object(env: dict[str, str], server: Server) -> None:
    """`admin-key create --json` prints exactly {id, key}, logs nothing, and the key works."""
    ran, human = await asyncio.gather(
        cli(env, "admin-key", "create", "--name", "ops", "--json"),
        cli(env, "admin-key", "create", "--name", "ops2"),
    )
    minted = ran.json()
    assert set(minted) == {"id", "key"}
    assert ran.err == ""
    api = AdminAPI(server, minted["id"], minted["key"])
    assert (await api.call("GET", "/clients?limit=1")).status == 200
    assert human.code == 0
    assert "iadm_" in human.out
    assert "shown once" in human.out


async def test_client_commands(
    env: dict[str, str], server: Server, resource_server: Registered
) -> None:
    """client create, list, show, update, rotate-secret and delete work on the database."""
    created = (
        await cli(env, "client", "create", "--name", "cli-app", "--scope", "read write", "--json")
    ).json()
    assert set(created) == {"client_id", "client_secret"}
    app = Registered(created["client_id"], created["client_secret"])
    token = (await issue(server, app))["access_token"]

    show, listing = await asyncio.gather(
        cli(env, "client", "show", app.client_id, "--json"),
        cli(env, "client", "list", "--limit", "500", "--json"),
    )
    shown = show.json()
    assert (shown["name"], shown["scopes"], shown["disabled"]) == (
        "cli-app",
        ["read", "write"],
        False,
    )
    assert set(listing.json()) == {"items", "next_cursor"}

    updated = await cli(
        env, "client", "update", app.client_id, "--scope", "read", "--token-ttl", "60", "--json"
    )
    assert (updated.json()["scopes"], updated.json()["token_ttl"]) == (["read"], 60)
    disabled = await cli(env, "client", "update", app.client_id, "--disable", "--json")
    assert disabled.json()["disabled"] is True
    assert (await introspect(server, resource_server, token)) == {"active": False}
    await cli(env, "client", "update", app.client_id, "--enable")
    assert (await introspect(server, resource_server, token))["active"]

    rotated = await cli(
        env, "client", "rotate-secret", app.client_id, "--grace-period", "60", "--json"
    )
    new = rotated.json()["client_secret"]
    await issue(server, Registered(app.client_id, new))
    await issue(server, app)  # the old secret, still in grace

    deleted = await cli(env, "client", "delete", app.client_id, "--json")
    assert deleted.json() == {"client_id": app.client_id, "revoked": 3, "listeners": 1}
    assert (await introspect(server, resource_server, token)) == {"active": False}


async def test_api_key_commands(
    env: dict[str, str], server: Server, resource_server: Registered, app_client: Registered
) -> None:
    """api-key create, update and rotate work, and the changes show at once in introspection."""
    issued = await api_key_of(
        env,
        "--client-id",
        app_client.client_id,
        "--scope",
        "read",
        "--expires-in",
        "600",
        "--metadata",
        '{"team": "ops"}',
    )
    assert set(issued) == {"id", "key"}
    body = await introspect(server, resource_server, issued["key"])
    assert (body["scope"], body["metadata"], body["exp"] - body["iat"]) == (
        "read",
        {"team": "ops"},
        600,
    )

    changes = ("--scope", "read write", "--never-expires", "--no-metadata", "--json")
    updated = await cli(env, "api-key", "update", issued["id"], *changes)
    assert updated.json()["exp"] is None
    body = await introspect(server, resource_server, issued["key"])
    assert (body["scope"], "exp" in body, "metadata" in body) == ("read write", False, False)

    rotated = (await cli(env, "api-key", "rotate", issued["id"], "--json")).json()
    assert rotated["replaced"]["id"] == issued["id"]
    assert not (await introspect(server, resource_server, issued["key"]))["active"]
    assert (await introspect(server, resource_server, rotated["key"]))["scope"] == "read write"

    sub = unique("cli-user")
    for_sub = await api_key_of(env, "--sub", sub, "--scope", "anything")
    assert (await introspect(server, resource_server, for_sub["key"]))["sub"] == sub


async def test_revoke_command_by_each_selector(
    env: dict[str, str], server: Server, resource_server: Registered, app_client: Registered
) -> None:
    """`revoke` by --token (also from stdin), --id, --jti, --client-id and --sub."""
    sub = unique("cli-user")
    *keys, sub_key = await asyncio.gather(
        *(
            api_key_of(env, "--client-id", app_client.client_id, "--scope", "read")
            for _ in range(4)
        ),
        api_key_of(env, "--sub", sub, "--scope", "x"),
    )
    runs = await asyncio.gather(
        cli(env, "revoke", "--token", keys[0]["key"], "--json"),
        cli(env, "revoke", "--token", "-", "--json", stdin=keys[1]["key"] + "\n"),
        cli(env, "revoke", "--id", keys[2]["id"], "--json"),
        cli(env, "revoke", "--jti", keys[3]["id"], "--json"),
    )
    for ran in runs:
        assert ran.json() == {"revoked": 1, "listeners": 1}
    for key in keys:
        assert not (await introspect(server, resource_server, key["key"]))["active"]

    token = (await issue(server, app_client))["access_token"]
    by_client, human = await asyncio.gather(
        cli(env, "revoke", "--client-id", app_client.client_id, "--json"),
        cli(env, "revoke", "--sub", sub),
    )
    assert by_client.json()["revoked"] == 1
    assert not (await introspect(server, resource_server, token))["active"]
    assert human.out.startswith("revoked 1 credential(s); 1 server worker(s) acknowledged")
    assert not (await introspect(server, resource_server, sub_key["key"]))["active"]


async def test_tokens_and_audit_commands(env: dict[str, str], app_client: Registered) -> None:
    """`tokens` lists credentials by filter without values; `audit` shows what the CLI did."""
    issued = await api_key_of(env, "--client-id", app_client.client_id, "--scope", "read")
    listed = await cli(env, "tokens", "--client-id", app_client.client_id, "--active", "--json")
    assert [item["id"] for item in listed.json()["items"]] == [issued["id"]]
    assert issued["key"] not in listed.out
    table = await cli(env, "tokens", "--client-id", app_client.client_id, "--kind", "api_key")
    header, row = table.out.splitlines()
    assert header.split()[:3] == ["id", "kind", "client_id"]
    assert row.startswith(issued["id"])

    audit = await cli(env, "audit", "--target-id", issued["id"], "--json")
    (entry,) = audit.json()["items"]
    assert (entry["actor"], entry["action"], entry["target_kind"]) == (
        "cli",
        "api_key.create",
        "api_key",
    )
    page = (await cli(env, "audit", "--actor", "cli", "--limit", "1", "--json")).json()
    assert len(page["items"]) == 1
    assert page["next_cursor"]
    after = await cli(
        env, "audit", "--actor", "cli", "--limit", "1", "--cursor", page["next_cursor"]
    )
    assert after.code == 0
    assert "(more: --cursor " in after.out


async def test_failures_exit_non_zero_with_one_line(env: dict[str, str]) -> None:
    """An unknown id, a bad field, bad JSON or an unreachable store: exit 1 and one line."""
    unreachable = {**env, "INTROSPECT_DATABASE_URL": f"postgresql://127.0.0.1:{free_port()}/x"}
    cases = {
        "no such client": cli(env, "client", "show", "client_nope"),
        "scopes:": cli(env, "client", "create", "--name", "x", "--scope", 'bad"scope', "--json"),
        "--metadata is not valid JSON": cli(
            env, "api-key", "create", "--sub", "s", "--scope", "a", "--metadata", "{"
        ),
        "no such API key": cli(env, "api-key", "update", "key_" + "A" * 22, "--scope", "a"),
        "no field to change": cli(env, "client", "update", "client_x"),
        "a store is unreachable": cli(unreachable, "client", "list", "--json"),
        "admin port must differ": cli(env, "serve", "--port", "9999", "--admin-port", "9999"),
    }
    for words, ran in zip(cases, await asyncio.gather(*cases.values()), strict=True):
        failed_with_one_line(ran, words)


@pytest.mark.parametrize("workers", ["0", "-2", "two"])
async def test_serve_refuses_a_worker_count_below_one(env: dict[str, str], workers: str) -> None:
    """`serve --workers` takes a whole number of at least 1, or exits 2 before starting."""
    ran = await cli(env, "serve", "--workers", workers)
    assert ran.code == 2
    assert "--workers" in ran.err


def get(url: str, headers: dict[str, str] | None = None) -> int:
    """The status of a GET."""
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 (loopback)
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310 (loopback)
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_serve_with_an_admin_port(settings: Settings, tmp_path: Path) -> None:
    """`introspect serve` with an admin port serves /admin there only, public routes not."""
    admin_port = free_port()
    with serve_subprocess(
        settings, tmp_path, workers=2, extra={"INTROSPECT_ADMIN_PORT": str(admin_port)}
    ) as served:
        minted = asyncio.run(cli(served, "admin-key", "create", "--name", "port", "--json"))
        bearer = {"Authorization": f"Bearer {minted.json()['key']}"}
        admin_base = f"http://127.0.0.1:{admin_port}"
        assert get(f"{admin_base}/admin/clients?limit=1", bearer) == 200
        assert get(f"{admin_base}/admin/clients") == 401
        assert get(f"{admin_base}/healthz") == 404
        assert get(f"{served['BASE']}/admin/clients?limit=1", bearer) == 404
        assert get(f"{served['BASE']}/healthz") == 200


async def test_limit_flags_set_and_change_rate_limits_and_credits(
    env: dict[str, str], server: Server, resource_server: Registered
) -> None:
    """--credits, --refill and --rate-limit at issue, --no-credits and a new --rate-limit on
    update: each takes effect at once; a malformed flag is refused before anything runs.
    (Day windows: a minute's could end between the uses and the update, and the new window
    would rightly admit its one use.)"""
    issued = await api_key_of(
        env,
        "--sub",
        unique("cli-limited"),
        "--scope",
        "read",
        "--credits",
        "2",
        "--rate-limit",
        "d=5/86400",
    )
    answers = [await introspect(server, resource_server, issued["key"]) for _ in range(3)]
    assert [a["active"] for a in answers] == [True, True, False]
    changes = ("--no-credits", "--rate-limit", "d=1/86400", "--json")
    updated = (await cli(env, "api-key", "update", issued["id"], *changes)).json()
    assert updated["credits"] is None
    assert updated["rate_limits"][0]["limit"] == 1
    assert not (await introspect(server, resource_server, issued["key"]))["active"]
    cleared = await cli(env, "api-key", "update", issued["id"], "--no-rate-limits", "--json")
    assert cleared.json()["rate_limits"] == []
    assert (await introspect(server, resource_server, issued["key"]))["active"]

    made = await cli(
        env,
        "client",
        "create",
        "--name",
        unique("cli-quota"),
        "--credits",
        "3",
        "--refill",
        "3/3600",
        "--json",
    )
    shown = (await cli(env, "client", "show", made.json()["client_id"], "--json")).json()
    assert shown["credits"]["refill"] == {"amount": 3, "interval": 3600}
    assert shown["credits"]["remaining"] == 3
    bad = await cli(env, "api-key", "create", "--sub", "x", "--scope", "r", "--rate-limit", "m")
    assert bad.code == 2
    assert "NAME=LIMIT/WINDOW" in bad.err
