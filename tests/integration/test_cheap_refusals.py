"""Requests that change nothing, or come from no client of ours, cost no write, no broadcast
and no Postgres query, and cannot push known clients out of memory (SPEC "Hardening")."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from introspect import cache, credentials, rfc7662
from introspect.client_records import UNKNOWN_CLIENT_TTL
from introspect.credentials import Kind
from introspect.metrics import METRICS
from introspect.service import Authority
from tests.helpers import Registered, Server, admin_api, basic, eventually, register
from tests.integration.test_hostile import row_counts


def checksum_valid(kind: Kind) -> str:
    """A random credential of `kind` that passes the public checksum: unknown to the server."""
    return credentials.generate(kind)


async def issue(server: Server, client: Registered) -> str:
    """A new access token of `client`."""
    resp = await server.post_form(
        "/token", {"grant_type": "client_credentials"}, headers=client.auth
    )
    assert resp.status == 200, resp.body
    return str(resp.json()["access_token"])


async def test_revoking_what_is_not_yours_writes_and_publishes_nothing(
    server: Server, authority: Authority, app_client: Registered
) -> None:
    """/revoke of an unknown credential or another client's token answers like a real
    revocation, and writes no row and publishes no invalidation."""
    other = await register(authority)
    theirs = await issue(server, other)
    mine = await issue(server, app_client)
    before = await row_counts(authority)
    sent = METRICS.invalidations_sent.value()
    answers = []
    for token in (
        checksum_valid(Kind.ACCESS_TOKEN),
        checksum_valid(Kind.API_KEY),
        theirs,
    ):
        answers.append(await server.post_form("/revoke", {"token": token}, headers=app_client.auth))
    assert await row_counts(authority) == before
    assert METRICS.invalidations_sent.value() == sent
    real = await server.post_form("/revoke", {"token": mine}, headers=app_client.auth)
    assert METRICS.invalidations_sent.value() == sent + 1
    for answer in answers:
        assert (answer.status, answer.body) == (real.status, real.body) == (200, b"")
        assert answer.headers.get("Cache-Control") == real.headers.get("Cache-Control")


async def test_admin_revocation_of_nothing_writes_and_publishes_nothing(
    server: Server, authority: Authority
) -> None:
    """An admin revocation whose selector matches nothing answers 0 revoked, 0 listeners,
    and writes and publishes nothing, for every kind of selector."""
    api = await admin_api(server)
    empty = await register(authority)
    before = await row_counts(authority)
    sent = METRICS.invalidations_sent.value()
    for body in (
        {"token": checksum_valid(Kind.ACCESS_TOKEN)},
        {"id": "key_" + "0" * 22},
        {"client_id": empty.client_id},
        {"sub": "nobody-" + secrets.token_hex(4)},
    ):
        resp = await api.call("POST", "/revocations", body)
        assert resp.status == 200, resp.body
        assert resp.json() == {"revoked": 0, "listeners": 0}, body
    assert await row_counts(authority) == before
    assert METRICS.invalidations_sent.value() == sent


async def insert_unannounced(
    authority: Authority, client_id: str, scopes: list[str], secret: str
) -> None:
    """Register a client straight in Postgres, as another instance's change that this
    server's workers have not heard of (no invalidation is published)."""
    async with authority.pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO clients (client_id, name, scopes, created_at, updated_at)"
            " VALUES ($1, $2, $3, 0, 0)",
            client_id,
            "t-" + secrets.token_hex(4),
            scopes,
        )
        await conn.execute(
            "INSERT INTO client_secrets (client_id, secret_hash, created_at) VALUES ($1, $2, 0)",
            client_id,
            credentials.keyed_hash(authority.server_secrets[0], secret),
        )


def random_client_id() -> str:
    """A client id of our shape that names no client."""
    return "client_" + credentials.random_base62(22)


def misshaped_ids() -> list[str]:
    """Fresh client ids (never asked before) that cannot be of the shape we issue."""
    r = credentials.random_base62
    return [
        r(8),
        "client_" + r(21),
        "client_" + r(23),
        "client_" + r(21) + "!",
        "client_" + r(21) + "é",
        "client_" + r(10) + "_" + r(11),
        "Client_" + r(22),
        "key_" + r(22),
        r(22),
    ]


@pytest.mark.parametrize("path", ["/token", "/introspect", "/revoke"])
async def test_client_ids_that_cannot_be_ours_are_refused_before_any_io(
    server: Server, path: str
) -> None:
    """A client_id not of the shape we issue is invalid_client with no Postgres or Redis call,
    whether sent in a Basic header or in the body."""
    queries, calls = METRICS.pg_queries.value(), METRICS.redis_calls.value()
    for client_id in misshaped_ids():
        for how in ("basic", "post"):
            secret = credentials.generate(Kind.CLIENT_SECRET)
            form = {"grant_type": "client_credentials", "token": "x"}
            if how == "basic":
                answer = await server.post_form(path, form, headers=basic(client_id, secret))
            else:
                form |= {"client_id": client_id, "client_secret": secret}
                answer = await server.post_form(path, form)
            assert answer.status == 401, (client_id, how, answer.body)
            assert answer.json()["error"] == "invalid_client"
    assert METRICS.pg_queries.value() == queries
    assert METRICS.redis_calls.value() == calls


async def test_unknown_client_ids_cannot_push_known_clients_out_of_memory(
    server: Server,
    app_client: Registered,
    resource_server: Registered,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After more unknown client ids than the in-process client cache holds, a resource
    server's introspection of a hot token is still answered from memory alone."""
    monkeypatch.setattr(cache, "CLIENT_CACHE_SIZE", 20)
    token = await issue(server, app_client)
    ask = {"token": token}
    for _ in range(2):
        answer = await server.post_form("/introspect", ask, headers=resource_server.auth)
        assert answer.json()["active"]
    authority = server.authority
    header = resource_server.auth["Authorization"]
    assert isinstance(rfc7662.from_memory(authority, header, ask), rfc7662.Answer)
    for _ in range(3 * cache.CLIENT_CACHE_SIZE):
        refused = await server.post_form(
            "/token",
            {"grant_type": "client_credentials"},
            headers=basic(random_client_id(), credentials.generate(Kind.CLIENT_SECRET)),
        )
        assert refused.status == 401
    assert isinstance(rfc7662.from_memory(authority, header, ask), rfc7662.Answer)


async def test_an_unknown_client_id_costs_one_query_while_remembered(server: Server) -> None:
    """Asking again and again with the same unknown client id reads Postgres once."""
    headers = basic(random_client_id(), credentials.generate(Kind.CLIENT_SECRET))
    queries = METRICS.pg_queries.value()
    for _ in range(5):
        refused = await server.post_form(
            "/token", {"grant_type": "client_credentials"}, headers=headers
        )
        assert refused.status == 401
    assert METRICS.pg_queries.value() == queries + 1


async def test_a_client_registered_after_its_id_was_unknown_authenticates_soon(
    server: Server, authority: Authority
) -> None:
    """A client whose id a worker found unknown, then registered by another instance (here:
    straight in Postgres, so this worker hears nothing), authenticates within the short life
    of the negative entry; one registered through this worker authenticates at once."""
    client_id = random_client_id()
    secret = credentials.generate(Kind.CLIENT_SECRET)
    form = {"grant_type": "client_credentials"}
    headers = basic(client_id, secret)
    assert (await server.post_form("/token", form, headers=headers)).status == 401
    await insert_unannounced(authority, client_id, [], secret)

    async def authenticates() -> bool:
        return (await server.post_form("/token", form, headers=headers)).status == 200

    await eventually(authenticates, within=UNKNOWN_CLIENT_TTL + 3)
    registered = await register(server.authority)
    assert (await server.post_form("/token", form, headers=registered.auth)).status == 200


async def test_concurrent_client_lookups_share_one_query(server: Server) -> None:
    """Client ids looked up in the same moment (a flood of made-up ones, or every request
    of a busy client whose record just aged out) are read in one query, not one each."""
    authority = server.authority
    known = await register(authority)
    ids = [random_client_id() for _ in range(50)] + [known.client_id]
    queries = METRICS.pg_queries.value()
    found = await asyncio.gather(*(authority.get_client(client_id) for client_id in ids))
    assert METRICS.pg_queries.value() - queries <= 2
    assert found[:-1] == [None] * 50
    assert found[-1] is not None
    assert found[-1].client_id == known.client_id
