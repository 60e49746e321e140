"""Client authentication methods, JWK Set validation and service-client access keys, through
the admin API, the CLI and the token endpoint, against the session's real Postgres and Redis."""

from __future__ import annotations

import base64
import secrets
import shutil
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from introspect.config import Settings
from introspect.rfc7523 import ASSERTION_TYPE
from introspect.store.migrate import migrate, migration_files
from introspect_sdk import access_keys
from tests.admin_helpers import created_client, token_works, unique
from tests.helpers import (
    AdminAPI,
    Answer,
    Registered,
    Server,
    basic,
    cli_env,
    start_server,
)
from tests.integration.test_cli import cli
from tests.integration.test_private_key_jwt import ISSUER, KeyClient, public_jwk, token

TOKEN_ENDPOINT = f"{ISSUER}/token"


def metadata_error(resp: Answer) -> str:
    """The description of a 400 invalid_client_metadata answer."""
    assert resp.status == 400, (resp.status, resp.body)
    body = resp.json()
    assert body["error"] == "invalid_client_metadata", body
    return body["error_description"]


def key_pair(kid: str = "k1") -> tuple[ed25519.Ed25519PrivateKey, dict[str, Any]]:
    """An Ed25519 private key and its public JWK under `kid`."""
    private = ed25519.Ed25519PrivateKey.generate()
    return private, public_jwk(private, "EdDSA", kid)


def signer(client_id: str, private: Any, kid: str = "k1") -> KeyClient:
    """Something that signs EdDSA client assertions for `client_id` with `private`."""
    return KeyClient(Registered(client_id, ""), private, "EdDSA", kid)


def with_access_key(text: str) -> dict[str, str]:
    """Form fields authenticating with a fresh assertion made from an access key string."""
    key = access_keys.parse(text)
    return {
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": key.assertion(TOKEN_ENDPOINT),
    }


async def client_count(server: Server, name: str) -> int:
    """How many clients carry `name`."""
    count: int = await server.authority.pool.fetchval(
        "SELECT count(*) FROM clients WHERE name = $1", name
    )
    return count


# --- token_endpoint_auth_method --------------------------------------------------------------


async def test_registration_defaults_to_client_secret_basic(api: AdminAPI) -> None:
    """A client registered without a method is client_secret_basic, with a secret, in every read."""
    created = await created_client(api)
    assert created["token_endpoint_auth_method"] == "client_secret_basic"
    assert created["client_secret"].startswith("isec_")
    read = (await api.call("GET", f"/clients/{created['client_id']}")).json()
    assert read["token_endpoint_auth_method"] == "client_secret_basic"


async def test_private_key_jwt_client_gets_no_secret(server: Server, api: AdminAPI) -> None:
    """A private_key_jwt client is answered without client_secret, stores none, and uses its key."""
    private, jwk = key_pair()
    resp = await api.call(
        "POST",
        "/clients",
        {
            "name": unique(),
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": {"keys": [jwk]},
        },
    )
    assert resp.status == 201, resp.body
    created = resp.json()
    assert "client_secret" not in created
    assert b"isec_" not in resp.body
    assert created["token_endpoint_auth_method"] == "private_key_jwt"
    stored = await server.authority.pool.fetchval(
        "SELECT count(*) FROM client_secrets WHERE client_id = $1", created["client_id"]
    )
    assert stored == 0
    assert (await token(server, signer(created["client_id"], private).form())).status == 200


async def test_private_key_jwt_needs_a_jwks(api: AdminAPI) -> None:
    """private_key_jwt without a jwks, at registration or by PATCH, is invalid_client_metadata."""
    resp = await api.call(
        "POST", "/clients", {"name": unique(), "token_endpoint_auth_method": "private_key_jwt"}
    )
    assert "token_endpoint_auth_method" in metadata_error(resp)
    plain = await created_client(api)
    resp = await api.call(
        "PATCH", f"/clients/{plain['client_id']}", {"token_endpoint_auth_method": "private_key_jwt"}
    )
    assert "token_endpoint_auth_method" in metadata_error(resp)
    _, jwk = key_pair()
    keyed = await created_client(
        api, token_endpoint_auth_method="private_key_jwt", jwks={"keys": [jwk]}
    )
    resp = await api.call("PATCH", f"/clients/{keyed['client_id']}", {"jwks": None})
    assert "token_endpoint_auth_method" in metadata_error(resp)
    read = (await api.call("GET", f"/clients/{keyed['client_id']}")).json()
    assert read["jwks"] == {"keys": [jwk]}


@pytest.mark.parametrize("method", ["client_secret_post", "none", "tls_client_auth", 5, None, ""])
async def test_unknown_auth_methods_are_refused(api: AdminAPI, method: object) -> None:
    """Only client_secret_basic and private_key_jwt may be registered."""
    resp = await api.call(
        "POST", "/clients", {"name": unique(), "token_endpoint_auth_method": method}
    )
    assert "token_endpoint_auth_method" in metadata_error(resp)


async def test_a_secret_stops_working_when_the_client_becomes_private_key_jwt(
    server: Server, api: AdminAPI
) -> None:
    """After PATCH to private_key_jwt its secret fails at once, even a Basic header remembered in
    memory, and stays forgotten when the client goes back to client_secret_basic."""
    private, jwk = key_pair()
    created = await created_client(api, can_introspect=True, jwks={"keys": [jwk]})
    client_id, secret = created["client_id"], created["client_secret"]
    rs = Registered(client_id, secret)
    tok = (await token(server, {}, headers=rs.auth)).json()["access_token"]
    for _ in range(3):  # the Basic header is now remembered by the worker
        resp = await server.post_form("/introspect", {"token": tok}, headers=rs.auth)
        assert resp.json()["active"] is True
    resp = await api.call(
        "PATCH", f"/clients/{client_id}", {"token_endpoint_auth_method": "private_key_jwt"}
    )
    assert resp.status == 200, resp.body
    assert resp.json()["token_endpoint_auth_method"] == "private_key_jwt"
    assert (await server.post_form("/introspect", {"token": tok}, headers=rs.auth)).status == 401
    assert not await token_works(server, client_id, secret)
    post = await token(server, {"client_id": client_id, "client_secret": secret})
    assert post.status == 401
    assert post.json()["error"] == "invalid_client"
    resp = await server.post_form("/introspect", signer(client_id, private).form(token=tok))
    assert resp.json()["active"] is True
    resp = await api.call(
        "PATCH", f"/clients/{client_id}", {"token_endpoint_auth_method": "client_secret_basic"}
    )
    assert resp.status == 200, resp.body
    assert not await token_works(server, client_id, secret)


async def test_secret_rotation_is_refused_for_private_key_jwt(
    server: Server, api: AdminAPI
) -> None:
    """Rotating a private_key_jwt client's secret is 409; back on client_secret_basic it works."""
    _, jwk = key_pair()
    created = await created_client(
        api, token_endpoint_auth_method="private_key_jwt", jwks={"keys": [jwk]}
    )
    path = f"/clients/{created['client_id']}"
    resp = await api.call("POST", f"{path}/secrets", {})
    assert resp.status == 409, resp.body
    assert "private_key_jwt" in resp.json()["error_description"]
    await api.call("PATCH", path, {"token_endpoint_auth_method": "client_secret_basic"})
    resp = await api.call("POST", f"{path}/secrets", {})
    assert resp.status == 200, resp.body
    assert await token_works(server, created["client_id"], resp.json()["client_secret"])


# --- JWK Set validation ----------------------------------------------------------------------


def _rsa(bits: int) -> dict[str, Any]:
    return public_jwk(rsa.generate_private_key(public_exponent=65537, key_size=bits), "RS256", "r")


_, GOOD = key_pair()
NO_KID = {k: v for k, v in GOOD.items() if k != "kid"}
P384 = public_jwk(ec.generate_private_key(ec.SECP384R1()), "ES384", "p")


@pytest.mark.parametrize(
    ("jwks", "named"),
    [
        pytest.param({"keys": [{"kty": "RSA"}]}, "jwks.keys[0].n", id="rsa-without-n"),
        pytest.param({"keys": [{**_rsa(2048), "n": "!!"}]}, "jwks.keys[0].n", id="rsa-n-garbage"),
        pytest.param({"keys": [_rsa(1024)]}, "jwks.keys[0].n", id="rsa-1024"),
        pytest.param({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}, "jwks.keys[0].k", id="oct"),
        pytest.param({"keys": [P384]}, "jwks.keys[0].crv", id="p-384"),
        pytest.param({"keys": [{**GOOD, "alg": "HS256"}]}, "jwks.keys[0].alg", id="hs256"),
        pytest.param({"keys": [{**GOOD, "alg": "none"}]}, "jwks.keys[0].alg", id="alg-none"),
        pytest.param({"keys": [{**GOOD, "use": "enc"}]}, "jwks.keys[0].use", id="use-enc"),
        pytest.param({"keys": []}, "jwks.keys", id="empty"),
        pytest.param(
            {"keys": [{**GOOD, "x5u": "https://x.example/k"}]}, "jwks.keys[0].x5u", id="x5u"
        ),
        pytest.param({"keys": [NO_KID] * 20}, "jwks.keys", id="20-no-kid"),
        pytest.param({"keys": [GOOD, NO_KID]}, "jwks.keys[1].kid", id="kid-missing"),
        pytest.param({"keys": [GOOD, GOOD]}, "jwks.keys[1].kid", id="kid-twice"),
        pytest.param({"keys": [{**GOOD, "d": GOOD["x"]}]}, "jwks.keys[0].d", id="private"),
        pytest.param([GOOD], "jwks", id="not-a-set"),
    ],
)
async def test_invalid_jwks_is_refused_naming_the_fault(
    server: Server, api: AdminAPI, jwks: Any, named: str
) -> None:
    """Each unusable JWK Set is 400 invalid_client_metadata naming the member, at registration and
    by PATCH, and changes nothing."""
    name = unique()
    resp = await api.call("POST", "/clients", {"name": name, "jwks": jwks})
    assert named in metadata_error(resp)
    assert await client_count(server, name) == 0
    created = await created_client(api, jwks={"keys": [GOOD]})
    resp = await api.call("PATCH", f"/clients/{created['client_id']}", {"jwks": jwks})
    assert named in metadata_error(resp)
    read = (await api.call("GET", f"/clients/{created['client_id']}")).json()
    assert read["jwks"] == {"keys": [GOOD]}


async def test_deleting_a_client_forgets_its_jwks(server: Server, api: AdminAPI) -> None:
    """A deleted client re-enabled by PATCH has no jwks: its key no longer authenticates."""
    private, jwk = key_pair()
    created = await created_client(api, jwks={"keys": [jwk]})
    client_id = created["client_id"]
    assert (await token(server, signer(client_id, private).form())).status == 200
    assert (await api.call("DELETE", f"/clients/{client_id}")).status == 204
    resp = await api.call("PATCH", f"/clients/{client_id}", {"disabled": False})
    assert resp.status == 200, resp.body
    assert resp.json()["jwks"] is None
    resp = await token(server, signer(client_id, private).form())
    assert resp.status == 401
    assert resp.json()["error"] == "invalid_client"


# --- service-client access keys --------------------------------------------------------------


async def test_access_key_authenticates_until_its_kid_is_deleted(
    server: Server, api: AdminAPI, settings: Settings
) -> None:
    """An access key gets tokens at /token; once its kid is deleted, the next assertion fails at
    once on every worker, each of which had the client's record cached."""
    created = await created_client(api, scopes=["read"])
    client_id = created["client_id"]
    resp = await api.call("POST", f"/clients/{client_id}/access-keys")
    assert resp.status == 201, resp.body
    assert resp.headers["Cache-Control"] == "no-store"
    answer = resp.json()
    assert set(answer) == {"kid", "access_key"}
    key = access_keys.parse(answer["access_key"])
    assert (key.client_id, key.kid) == (client_id, answer["kid"])
    read = (await api.call("GET", f"/clients/{client_id}")).json()
    assert [k["kid"] for k in read["jwks"]["keys"]] == [answer["kid"]]
    public = read["jwks"]["keys"][0]
    assert (public["kty"], public["crv"], public["alg"]) == ("OKP", "Ed25519", "EdDSA")
    assert (
        base64.urlsafe_b64decode(public["x"] + "=") == key.private.public_key().public_bytes_raw()
    )
    other_server, other = await start_server(settings)
    try:
        for each in (server, other):
            resp = await token(each, with_access_key(answer["access_key"]))
            assert resp.status == 200, resp.body
            assert resp.json()["scope"] == "read"
        resp = await api.call("DELETE", f"/clients/{client_id}/access-keys/{answer['kid']}")
        assert resp.status == 204, resp.body
        for each in (server, other):
            resp = await token(each, with_access_key(answer["access_key"]))
            assert resp.status == 401, resp.body
            assert resp.json()["error"] == "invalid_client"
    finally:
        await other.http.close()
        await other_server.close()
    audit = (await api.call("GET", f"/audit?target_id={client_id}")).json()["items"]
    assert [(e["action"], e["details"]) for e in audit[:2]] == [
        ("client.update", {"access_key_deleted": answer["kid"]}),
        ("client.update", {"access_key_created": answer["kid"]}),
    ]


async def test_the_private_key_is_never_stored(server: Server, api: AdminAPI) -> None:
    """No trace of an access key's private key is left in the client row or the audit log."""
    created = await created_client(api)
    client_id = created["client_id"]
    text = (await api.call("POST", f"/clients/{client_id}/access-keys")).json()["access_key"]
    private = access_keys.parse(text).private.private_bytes_raw()
    fragments = (
        text[4:40],
        text[-32:],
        private.hex(),
        base64.urlsafe_b64encode(private)[:32].decode(),
    )
    stored = await server.authority.pool.fetch(
        "SELECT row_to_json(c)::text AS t FROM clients c WHERE client_id = $1"
        " UNION ALL SELECT row_to_json(a)::text FROM audit_log a WHERE target_id = $1",
        client_id,
    )
    assert len(stored) == 3  # the client, its client.create and client.update entries
    for row in stored:
        for fragment in fragments:
            assert fragment not in row["t"]


async def test_a_client_holds_at_most_ten_keys(api: AdminAPI) -> None:
    """The eleventh access key is 409 and leaves the ten in place; deleting one makes room."""
    client_id = (await created_client(api))["client_id"]
    kids = []
    for _ in range(10):
        resp = await api.call("POST", f"/clients/{client_id}/access-keys", {})
        assert resp.status == 201, resp.body
        kids.append(resp.json()["kid"])
    resp = await api.call("POST", f"/clients/{client_id}/access-keys", {})
    assert resp.status == 409, resp.body
    read = (await api.call("GET", f"/clients/{client_id}")).json()
    assert [k["kid"] for k in read["jwks"]["keys"]] == kids
    assert (await api.call("DELETE", f"/clients/{client_id}/access-keys/{kids[0]}")).status == 204
    assert (await api.call("POST", f"/clients/{client_id}/access-keys", {})).status == 201


async def test_deleting_the_last_key_leaves_no_jwks(server: Server, api: AdminAPI) -> None:
    """Removing a private_key_jwt client's only key leaves it with no jwks and no way in."""
    private, jwk = key_pair()
    created = await created_client(
        api, token_endpoint_auth_method="private_key_jwt", jwks={"keys": [jwk]}
    )
    client_id = created["client_id"]
    assert (await api.call("DELETE", f"/clients/{client_id}/access-keys/k1")).status == 204
    read = (await api.call("GET", f"/clients/{client_id}")).json()
    assert read["jwks"] is None
    assert read["token_endpoint_auth_method"] == "private_key_jwt"
    assert (await token(server, signer(client_id, private).form())).status == 401


async def test_access_key_errors_change_nothing(api: AdminAPI) -> None:
    """Unknown clients or kids are 404, a disabled client 409, a body with fields 400."""
    for client_id in ("client_" + "A" * 22, "nope", "client_%00"):
        resp = await api.call("POST", f"/clients/{client_id}/access-keys")
        assert resp.status == 404, resp.body
        resp = await api.call("DELETE", f"/clients/{client_id}/access-keys/k1")
        assert resp.status == 404, resp.body
    client_id = (await created_client(api))["client_id"]
    assert (
        await api.call("POST", f"/clients/{client_id}/access-keys", {"kid": "mine"})
    ).status == 400
    assert (await api.call("DELETE", f"/clients/{client_id}/access-keys/k1")).status == 404
    await api.call("PATCH", f"/clients/{client_id}", {"disabled": True})
    assert (await api.call("POST", f"/clients/{client_id}/access-keys")).status == 409
    read = (await api.call("GET", f"/clients/{client_id}")).json()
    assert read["jwks"] is None


# --- the command line ------------------------------------------------------------------------


async def test_cli_auth_method_and_access_keys(
    server: Server, settings: Settings, tmp_path: Any
) -> None:
    """The CLI registers a private_key_jwt client (no secret printed), makes an access key that
    gets a token, switches the method, and deletes the key, which then fails at once."""
    env = cli_env(settings, tmp_path)
    _, jwk = key_pair()
    created = (
        await cli(
            env,
            "client",
            "create",
            "--name",
            unique(),
            "--scope",
            "read",
            "--auth-method",
            "private_key_jwt",
            "--jwks",
            orjson.dumps({"keys": [jwk]}).decode(),
            "--json",
        )
    ).json()
    assert set(created) == {"client_id"}
    client_id = created["client_id"]
    made = (await cli(env, "client", "access-key", "create", client_id, "--json")).json()
    assert set(made) == {"kid", "access_key"}
    assert (await token(server, with_access_key(made["access_key"]))).status == 200
    shown = (await cli(env, "client", "show", client_id, "--json")).json()
    assert [k["kid"] for k in shown["jwks"]["keys"]] == ["k1", made["kid"]]
    updated = await cli(
        env, "client", "update", client_id, "--auth-method", "client_secret_basic", "--json"
    )
    assert updated.json()["token_endpoint_auth_method"] == "client_secret_basic"
    human = await cli(env, "client", "access-key", "create", client_id)
    assert human.code == 0, human.err
    assert "access_key: iak_" in human.out
    deleted = await cli(env, "client", "access-key", "delete", client_id, made["kid"])
    assert deleted.code == 0, deleted.err
    assert (await token(server, with_access_key(made["access_key"]))).status == 401
    refused = await cli(
        env, "client", "create", "--name", unique(), "--jwks", '{"keys": [{"kty": "oct"}]}'
    )
    assert refused.code == 1
    assert "jwks.keys[0].kty" in refused.err


async def test_rsa_key_registered_by_the_admin_api_authenticates(
    server: Server, api: AdminAPI
) -> None:
    """A validated RSA key set works for PS256 assertions end to end."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = public_jwk(private, "PS256", "r1")
    created = await created_client(
        api, token_endpoint_auth_method="private_key_jwt", jwks={"keys": [jwk]}
    )
    kc = KeyClient(Registered(created["client_id"], ""), private, "PS256", "r1")
    assert (await token(server, kc.form())).status == 200
    assert (
        await token(server, kc.form(), headers=basic(created["client_id"], "isec_x"))
    ).status == 400


async def test_migration_forgets_the_jwks_of_clients_deleted_before_it(
    settings: Settings, tmp_path: Path
) -> None:
    """Upgrading drops the jwks of clients deleted earlier (disabled, no secret left), keeps those
    of clients merely disabled, and makes every existing client client_secret_basic."""
    assert settings.database_url
    name = "auth_" + secrets.token_hex(6)
    earlier = tmp_path / "sql"
    earlier.mkdir()
    for path in migration_files():
        if path.name < "0007":
            shutil.copy(path, earlier / path.name)
    admin = await asyncpg.connect(settings.database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        conn = await asyncpg.connect(settings.database_url.rsplit("/", 1)[0] + "/" + name)
        try:
            await migrate(conn, earlier)
            jwk = orjson.dumps({"keys": [GOOD]}).decode()
            for client_id, disabled in (("deleted", True), ("disabled", True), ("live", False)):
                await conn.execute(
                    "INSERT INTO clients (client_id, name, jwks, disabled, created_at, updated_at)"
                    " VALUES ($1, $1, $2, $3, 0, 0)",
                    client_id,
                    jwk,
                    disabled,
                )
            for client_id in ("disabled", "live"):
                await conn.execute(
                    "INSERT INTO client_secrets (client_id, secret_hash, created_at)"
                    " VALUES ($1, '\\x00', 0)",
                    client_id,
                )
            assert "0007_client_auth_method.sql" in await migrate(conn)
            rows = await conn.fetch(
                "SELECT client_id, jwks IS NOT NULL AS keyed, token_endpoint_auth_method AS m"
                " FROM clients ORDER BY client_id"
            )
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    assert [tuple(r) for r in rows] == [
        ("deleted", False, "client_secret_basic"),
        ("disabled", True, "client_secret_basic"),
        ("live", True, "client_secret_basic"),
    ]
