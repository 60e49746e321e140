"""The synchronous step of /introspect (rfc7662.from_memory) against the full decision.

The hot path answers from memory alone or says where it stopped; wherever it
answers, or refuses, it does as the full path does over HTTP.
"""

from __future__ import annotations

from typing import Any

import pytest

from introspect import rfc6749, rfc7662
from introspect.errors import InvalidRequest, OAuth2Error, UnauthorizedClient
from introspect.service import Authority
from tests.helpers import Registered, Server, register

GRANT = {"grant_type": "client_credentials"}


async def token_for(server: Server, client: Registered, **form: str) -> str:
    resp = await server.post_form("/token", {**GRANT, **form}, headers=client.auth)
    assert resp.status == 200, resp.body
    return resp.json()["access_token"]


def from_memory(
    authority: Authority, authorization: str | None, params: dict[str, Any]
) -> bytes | None:
    """The answer of the synchronous step alone, None when it leaves the rest to the tail."""
    answer = rfc7662.from_memory(authority, authorization, params)
    return answer.body if isinstance(answer, rfc7662.Answer) else None


async def both(
    server: Server, caller: Registered, params: dict[str, Any]
) -> tuple[bytes | None, int, bytes]:
    """The in-memory answer and the HTTP answer (status, body) to the same request.

    The HTTP request goes first, twice, so that whatever memory can hold is warm.
    """
    for _ in range(2):
        resp = await server.post_form("/introspect", params, headers=caller.auth)
    memory = from_memory(server.authority, caller.auth["Authorization"], params)
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
    """Once /revoke returns, memory answers inactive at once (a revocation is cached as
    inactive on every listening worker), never the old answer."""
    token = await token_for(server, app_client)
    memory, _, body = await both(server, resource_server, {"token": token})
    assert memory == body
    revoked = await server.post_form("/revoke", {"token": token}, headers=app_client.auth)
    assert revoked.status == 200
    after = from_memory(server.authority, resource_server.auth["Authorization"], {"token": token})
    assert after == rfc7662.INACTIVE
    memory, status, body = await both(server, resource_server, {"token": token})
    assert (status, body) == (200, rfc7662.INACTIVE)
    assert memory == body


async def test_a_cached_credential_the_memo_forgot_is_still_answered_from_memory(
    server: Server, resource_server: Registered, app_client: Registered
) -> None:
    """The memo of keyed hashes holds final answers' values too, so it forgets credentials
    whose entries the in-process cache still holds: the synchronous step then hashes a
    well-formed opaque credential itself, answers from memory as over HTTP, and memoizes it."""
    token = await token_for(server, app_client)
    memory, status, body = await both(server, resource_server, {"token": token})
    assert status == 200
    assert memory == body
    server.authority.hashed.clear()
    again = from_memory(server.authority, resource_server.auth["Authorization"], {"token": token})
    assert again == body
    assert token in server.authority.hashed


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


async def refusal(
    server: Server, caller: Registered, params: dict[str, Any]
) -> tuple[type[OAuth2Error], int, dict[str, Any], int, dict[str, Any]]:
    """The error memory raises (its class, status and body) and the HTTP answer (status and
    body) to the same request."""
    for _ in range(2):
        resp = await server.post_form("/introspect", params, headers=caller.auth)
    with pytest.raises(OAuth2Error) as raised:
        rfc7662.from_memory(server.authority, caller.auth["Authorization"], params)
    error = raised.value
    return type(error), error.status_code, error.body(), resp.status, resp.json()


async def test_a_remembered_caller_is_refused_from_memory_as_over_http(
    server: Server, resource_server: Registered, app_client: Registered
) -> None:
    """No token, or a remembered caller that may not introspect: memory raises the very error
    the full path answers."""
    token = await token_for(server, app_client)
    kind, status, body, http_status, http_body = await refusal(
        server, resource_server, {"token_type_hint": "access_token"}
    )
    assert (kind, status, body) == (InvalidRequest, http_status, http_body)
    # app_client authenticates (and is remembered) but may not introspect.
    kind, status, body, http_status, http_body = await refusal(server, app_client, {"token": token})
    assert (kind, status, body) == (UnauthorizedClient, http_status, http_body)


async def test_unknown_callers_take_the_full_path(
    server: Server, resource_server: Registered, app_client: Registered
) -> None:
    """A caller memory does not know, or no Authorization header: memory leaves it to the tail."""
    token = await token_for(server, app_client)
    stranger = "Basic " + "c3RyYW5nZXI6c2VjcmV0"  # stranger:secret
    assert rfc7662.from_memory(server.authority, stranger, {"token": token}) is None
    assert rfc7662.from_memory(server.authority, None, {"token": token}) is None


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
        assert rfc7662.from_memory(server.authority, variant, params) is None
    for _ in range(2):
        await server.post_form("/introspect", params, headers={"Authorization": canonical})
    assert from_memory(server.authority, canonical, params) is not None
