"""Requests that change nothing, or come from no client of ours, cost no write, no broadcast
and no Postgres query, and cannot push known clients out of memory (SPEC "Hardening")."""

from __future__ import annotations

import secrets

from introspect import credentials
from introspect.credentials import Kind
from introspect.metrics import METRICS
from introspect.service import Authority
from tests.helpers import Registered, Server, admin_api, register
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


def random_client_id() -> str:
    """A client id of our shape that names no client."""
    return "client_" + credentials.random_base62(22)
