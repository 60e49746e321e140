"""The in-memory path of /introspect (Authority.introspect_in_memory) against the full one.

The hot path answers from memory alone or says it cannot (None); wherever it
answers, the answer must be the one the full path gives over HTTP.
"""

from __future__ import annotations

from typing import Any

import pytest

from introspect import rfc6749, rfc7662
from introspect.service import Authority
from tests.helpers import Registered, Server, register

GRANT = {"grant_type": "client_credentials"}


async def token_for(server: Server, client: Registered, **form: str) -> str:
    resp = await server.post_form("/token", {**GRANT, **form}, headers=client.auth)
    assert resp.status == 200, resp.body
    return resp.json()["access_token"]


async def both(
    server: Server, caller: Registered, params: dict[str, Any]
) -> tuple[bytes | None, int, bytes]:
    """The in-memory answer and the HTTP answer (status, body) to the same request.

    The HTTP request goes first, twice, so that whatever memory can hold is warm.
    """
    for _ in range(2):
        resp = await server.post_form("/introspect", params, headers=caller.auth)
    memory = server.authority.introspect_in_memory(caller.auth["Authorization"], params)
    return memory, resp.status, resp.body


async def test_a_warm_active_credential_is_answered_from_memory_as_over_http(
    server: Server, resource_server: Registered, app_client: Registered
) -> None:
    """A remembered caller and a cached credential: the in-memory answer is the HTTP answer."""
    token = await token_for(server, app_client)
    params = {"token": token, "token_type_hint": "access_token"}
    memory, status, body = await both(server, resource_server, params)
    assert status == 200
    assert body.startswith(b'{"active":true')
    assert memory == body


async def test_audience_mismatch_is_inactive_in_memory_too(
    server: Server, authority: Authority
) -> None:
    """A caller whose audiences miss the credential's gets the inactive answer from memory."""
    issuer = await register(authority, audiences=("https://orders",))
    other = await register(authority, scopes=(), audiences=("https://other",), can_introspect=True)
    token = await token_for(server, issuer)
    memory, status, body = await both(server, other, {"token": token})
    assert (status, body) == (200, rfc7662.INACTIVE)
    assert memory == rfc7662.INACTIVE


async def test_a_revoked_credential_is_inactive_in_memory(
    server: Server, resource_server: Registered, app_client: Registered
) -> None:
    """Once /revoke returns, memory answers inactive (or nothing), never the old answer."""
    token = await token_for(server, app_client)
    memory, _, body = await both(server, resource_server, {"token": token})
    assert memory == body
    revoked = await server.post_form("/revoke", {"token": token}, headers=app_client.auth)
    assert revoked.status == 200
    after = server.authority.introspect_in_memory(
        resource_server.auth["Authorization"], {"token": token}
    )
    assert after in (None, rfc7662.INACTIVE)
    memory, status, body = await both(server, resource_server, {"token": token})
    assert (status, body) == (200, rfc7662.INACTIVE)
    assert memory in (None, body)


@pytest.mark.parametrize(
    ("extra", "status"),
    [
        ({"client_id": "client_someoneelse"}, 400),  # names another client than the header
        ({"client_secret": "x"}, 400),  # two authentication methods
        ({"client_assertion": "x"}, 400),
        ({"client_assertion_type": "x"}, 400),
    ],
)
async def test_anything_but_a_clean_request_takes_the_full_path(
    server: Server,
    resource_server: Registered,
    app_client: Registered,
    extra: dict[str, str],
    status: int,
) -> None:
    """Extra authentication parameters make memory step aside, and the full path refuses."""
    token = await token_for(server, app_client)
    await both(server, resource_server, {"token": token})
    memory, got, body = await both(server, resource_server, {"token": token, **extra})
    assert memory is None
    assert got == status, body


async def test_missing_token_and_unknown_callers_take_the_full_path(
    server: Server, resource_server: Registered, app_client: Registered
) -> None:
    """No token, or a caller memory does not know or may not introspect: None from memory."""
    token = await token_for(server, app_client)
    memory, status, _ = await both(server, resource_server, {"token_type_hint": "access_token"})
    assert (memory, status) == (None, 400)
    # app_client authenticates (and is remembered) but may not introspect.
    memory, status, _ = await both(server, app_client, {"token": token})
    assert (memory, status) == (None, 403)
    stranger = "Basic " + "c3RyYW5nZXI6c2VjcmV0"  # stranger:secret
    assert server.authority.introspect_in_memory(stranger, {"token": token}) is None
    assert server.authority.introspect_in_memory(None, {"token": token}) is None


async def test_only_the_canonical_basic_spelling_is_remembered(
    server: Server, resource_server: Registered, app_client: Registered
) -> None:
    """Other spellings of the same credentials authenticate, but take no place in memory: a
    caller cannot crowd other callers' remembered authentications out with variants."""
    token = await token_for(server, app_client)
    canonical = resource_server.auth["Authorization"]
    assert canonical == rfc6749.basic(resource_server.client_id, resource_server.secret)
    variants = ["basic " + canonical[6:], "Basic  " + canonical[6:], " " + canonical]
    params = {"token": token}
    for variant in variants:
        for _ in range(2):
            resp = await server.post_form("/introspect", params, headers={"Authorization": variant})
            assert resp.json()["active"] is True
        assert server.authority.introspect_in_memory(variant, params) is None
    for _ in range(2):
        await server.post_form("/introspect", params, headers={"Authorization": canonical})
    assert server.authority.introspect_in_memory(canonical, params) is not None
