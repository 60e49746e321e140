"""The revocation feed, `POST /events` (RFC 8936 polls of RFC 8417 SETs), on the session server."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import jwt
import orjson
import pytest

from introspect import admin, feed, rfc8417, store
from introspect.metrics import METRICS
from introspect.service import Authority
from introspect.store import Selection
from tests.helpers import Answer, Registered, Server, register

Body = dict[str, Any]
# A bound for the test only, well under the LONG_POLL a poll waits when nothing wakes it.
WOKEN_WITHIN = 20


async def poll(server: Server, caller: Registered, **body: Any) -> Answer:
    """One poll, as `caller` with HTTP Basic; `returnImmediately` unless told otherwise."""
    body.setdefault("returnImmediately", True)
    return await server.request(
        "POST",
        "/events",
        data=orjson.dumps(body),
        headers={**caller.auth, "Content-Type": "application/json"},
    )


async def sets(server: Server, caller: Registered, **body: Any) -> dict[str, Body]:
    """The SETs of one poll, by jti, each verified against the published keys and decoded."""
    answer = await poll(server, caller, **body)
    assert answer.status == 200, answer.body
    assert set(answer.json()) == {"sets", "moreAvailable"}
    return {
        jti: await verified(server, caller, token) for jti, token in answer.json()["sets"].items()
    }


async def verified(server: Server, caller: Registered, token: str) -> Body:
    """A SET's claims, its signature checked with the key of `jwks_uri` that its kid names."""
    metadata = (await server.request("GET", "/.well-known/oauth-authorization-server")).json()
    path = metadata["jwks_uri"].removeprefix(server.authority.issuer)
    keys = jwt.PyJWKSet.from_dict((await server.request("GET", path)).json())
    header = jwt.get_unverified_header(token)
    assert header["typ"] == rfc8417.TYP
    key = next(k for k in keys.keys if k.key_id == header["kid"])
    claims: Body = jwt.decode(
        token,
        key,
        algorithms=[header["alg"]],
        audience=caller.client_id,
        issuer=server.authority.issuer,
        options={"require": ["iss", "aud", "iat", "jti"]},
    )
    return claims


async def start(server: Server, caller: Registered, receiver: str = "") -> str:
    """A receiver's first poll: one feed-gap SET (whatever it cached before may be stale),
    acknowledged; then nothing. Its jti."""
    first = await sets(server, caller, receiver=receiver)
    assert events_of(first) == [(rfc8417.FEED_GAP, {"reason": feed.GAP_REASON})]
    assert await sets(server, caller, receiver=receiver, ack=list(first)) == {}
    (jti,) = first
    return jti


def events_of(delivered: dict[str, Body]) -> list[tuple[str, Body]]:
    """The (type, payload) of each SET, in jti order of delivery."""
    out = []
    for claims in delivered.values():
        ((event_type, payload),) = claims["events"].items()
        out.append((event_type, payload))
    return out


async def api_key(authority: Authority, **fields: Any) -> dict[str, Any]:
    """A new API key (its record and `key`)."""
    body = {"sub": "u-" + secrets.token_hex(4), "scopes": ["read"], **fields}
    return await admin.create_api_key(authority, "test", body)


async def revoke_id(authority: Authority, key_id: str) -> None:
    """Revoke one credential by id, as the admin API does."""
    revoked = await authority.revoke("test", Selection(id=key_id))
    assert revoked.count == 1


async def test_revocations_arrive_in_order_until_acknowledged(
    server: Server, resource_server: Registered
) -> None:
    """A receiver's first poll starts it at now (with a gap to drop what it cached); later
    revocations come in order, each a SET addressed to it; unacknowledged ones come again,
    acknowledged ones never."""
    authority = server.authority
    before = await api_key(authority)
    await revoke_id(authority, before["id"])  # before its first poll: not for it
    await start(server, resource_server)
    keys = [await api_key(authority) for _ in range(3)]
    for key in keys:
        await revoke_id(authority, key["id"])
    first = await sets(server, resource_server)
    assert events_of(first) == [(rfc8417.CREDENTIAL_REVOKED, {"jti": key["id"]}) for key in keys]
    assert all(claims["jti"] == jti for jti, claims in first.items())
    assert (await sets(server, resource_server)).keys() == first.keys()
    jtis = list(first)
    # Acknowledging the middle one first: the others stay.
    again = await sets(server, resource_server, ack=[jtis[1]])
    assert list(again) == [jtis[0], jtis[2]]
    assert await sets(server, resource_server, ack=[jtis[0], jtis[2]]) == {}
    assert await sets(server, resource_server) == {}


async def test_max_events_pages_and_says_more_available(
    server: Server, resource_server: Registered
) -> None:
    """maxEvents bounds a page and moreAvailable says another waits; 0 only acknowledges."""
    authority = server.authority
    await start(server, resource_server)
    for _ in range(3):
        await revoke_id(authority, (await api_key(authority))["id"])
    page = await poll(server, resource_server, maxEvents=2)
    assert len(page.json()["sets"]) == 2
    assert page.json()["moreAvailable"] is True
    ack_only = await poll(
        server,
        resource_server,
        maxEvents=0,
        ack=list(page.json()["sets"]),
        returnImmediately=False,  # nothing to wait for: it only acknowledges
    )
    assert ack_only.json() == {"sets": {}, "moreAvailable": True}
    rest = await poll(server, resource_server, maxEvents=2)
    assert len(rest.json()["sets"]) == 1
    assert rest.json()["moreAvailable"] is False
    # Only acknowledging, with nothing left: answered at once, not parked.
    done = poll(
        server,
        resource_server,
        maxEvents=0,
        ack=list(rest.json()["sets"]),
        returnImmediately=False,
    )
    assert (await asyncio.wait_for(done, WOKEN_WITHIN)).json() == {
        "sets": {},
        "moreAvailable": False,
    }


async def test_each_change_that_alters_answers_has_its_event(
    server: Server, resource_server: Registered
) -> None:
    """A key PATCH, the revocation of all of a subject's or a client's credentials, and a
    client disabled, enabled and deleted each give their event, with its identifier."""
    authority = server.authority
    owner = await register(authority)
    key = await api_key(authority, client_id=owner.client_id)
    await start(server, resource_server)
    await admin.update_api_key(authority, "test", key["id"], {"metadata": {"plan": "pro"}})
    await authority.revoke("test", Selection(sub=key["sub"]))
    second = await api_key(authority, client_id=owner.client_id)
    await admin.update_client(authority, "test", owner.client_id, {"disabled": True})
    await admin.update_client(authority, "test", owner.client_id, {"name": "renamed"})
    await admin.update_client(authority, "test", owner.client_id, {"disabled": False})
    await admin.delete_client(authority, "test", owner.client_id)
    assert second["id"]
    assert events_of(await sets(server, resource_server)) == [
        (rfc8417.CREDENTIAL_CHANGED, {"jti": key["id"]}),
        (rfc8417.SUBJECT_CREDENTIALS_REVOKED, {"sub": key["sub"]}),
        (rfc8417.CLIENT_DISABLED, {"client_id": owner.client_id}),
        (rfc8417.CLIENT_ENABLED, {"client_id": owner.client_id}),
        (rfc8417.CLIENT_DISABLED, {"client_id": owner.client_id}),
        (rfc8417.CLIENT_CREDENTIALS_REVOKED, {"client_id": owner.client_id}),
    ]


async def test_a_caller_sees_only_what_it_may_introspect(server: Server) -> None:
    """As on /introspect: a caller registered with audiences sees the events of credentials
    sharing one; one without audiences sees all; every SET is addressed to its reader."""
    authority = server.authority
    tag = secrets.token_hex(4)
    api_a, api_b = f"https://a-{tag}.test", f"https://b-{tag}.test"
    rs_a = await register(authority, scopes=(), audiences=(api_a,), can_introspect=True)
    rs_b = await register(authority, scopes=(), audiences=(api_b,), can_introspect=True)
    rs_all = await register(authority, scopes=(), can_introspect=True)
    for rs in (rs_a, rs_b, rs_all):
        await start(server, rs)
    for_a = await api_key(authority, audiences=[api_a])
    for_b = await api_key(authority, audiences=[api_b])
    await revoke_id(authority, for_a["id"])
    await revoke_id(authority, for_b["id"])
    assert events_of(await sets(server, rs_a)) == [
        (rfc8417.CREDENTIAL_REVOKED, {"jti": for_a["id"]})
    ]
    assert events_of(await sets(server, rs_b)) == [
        (rfc8417.CREDENTIAL_REVOKED, {"jti": for_b["id"]})
    ]
    seen = await sets(server, rs_all)
    assert (rfc8417.CREDENTIAL_REVOKED, {"jti": for_a["id"]}) in events_of(seen)
    assert (rfc8417.CREDENTIAL_REVOKED, {"jti": for_b["id"]}) in events_of(seen)
    # Another caller's jti of the same event acknowledges nothing for this one.
    assert len(await sets(server, rs_a, ack=list(seen))) == 1


async def test_a_key_moved_to_another_audience_is_announced_to_both(server: Server) -> None:
    """A PATCH of an API key's audiences is seen by the callers of the old audience (their
    active answer is wrong now) and of the new one (their inactive answer is)."""
    authority = server.authority
    tag = secrets.token_hex(4)
    api_a, api_b = f"https://a-{tag}.test", f"https://b-{tag}.test"
    rs_a = await register(authority, scopes=(), audiences=(api_a,), can_introspect=True)
    rs_b = await register(authority, scopes=(), audiences=(api_b,), can_introspect=True)
    for rs in (rs_a, rs_b):
        await start(server, rs)
    key = await api_key(authority, audiences=[api_a])
    await admin.update_api_key(authority, "test", key["id"], {"audiences": [api_b]})
    for rs in (rs_a, rs_b):
        assert events_of(await sets(server, rs)) == [
            (rfc8417.CREDENTIAL_CHANGED, {"jti": key["id"]})
        ]


async def test_a_caller_whose_audiences_change_is_told_to_drop_its_cache(server: Server) -> None:
    """What a caller may introspect changed with its audiences: each of its receivers gets a
    feed-gap; a change of its name does nothing of the kind."""
    authority = server.authority
    rs = await register(authority, scopes=(), audiences=("https://x.test",), can_introspect=True)
    started = {receiver: await start(server, rs, receiver=receiver) for receiver in ("1", "2")}
    await admin.update_client(authority, "test", rs.client_id, {"name": "renamed"})
    assert await sets(server, rs, receiver="1") == {}
    await admin.update_client(authority, "test", rs.client_id, {"audiences": ["https://y.test"]})
    for receiver, first in started.items():
        gap = await sets(server, rs, receiver=receiver)
        assert events_of(gap) == [(rfc8417.FEED_GAP, {"reason": feed.GAP_REASON})]
        assert first not in gap  # a new gap, not one already acknowledged
        assert await sets(server, rs, receiver=receiver, ack=list(gap)) == {}


async def test_deliveries_are_counted_with_their_lag(
    server: Server, resource_server: Registered
) -> None:
    """Events published and SETs delivered are counted; the lag histogram is exposed."""
    await start(server, resource_server)
    published, delivered = METRICS.events_published.value(), METRICS.events_delivered.value()
    await revoke_id(server.authority, (await api_key(server.authority))["id"])
    assert METRICS.events_published.value() == published + 1
    assert len(await sets(server, resource_server)) == 1
    assert METRICS.events_delivered.value() == delivered + 1
    exposed = (await server.request("GET", "/metrics")).body.decode()
    assert "introspect_feed_delivery_lag_seconds_count" in exposed
    assert "introspect_feed_polls_waiting" in exposed


async def test_receivers_of_one_client_each_get_every_event(
    server: Server, resource_server: Registered
) -> None:
    """Two named receivers of one client have a position each."""
    authority = server.authority
    await start(server, resource_server, receiver="one")
    await start(server, resource_server, receiver="two")
    key = await api_key(authority)
    await revoke_id(authority, key["id"])
    one = await sets(server, resource_server, receiver="one")
    assert events_of(one) == [(rfc8417.CREDENTIAL_REVOKED, {"jti": key["id"]})]
    await sets(server, resource_server, receiver="one", ack=list(one))
    assert events_of(await sets(server, resource_server, receiver="two")) == events_of(one)


async def test_a_receiver_behind_the_retention_is_told_to_drop_its_cache(
    server: Server, resource_server: Registered
) -> None:
    """When events a receiver had not read were pruned, it gets one feed-gap SET, sent again
    until acknowledged, and then the events that follow."""
    authority = server.authority
    await start(server, resource_server)
    await revoke_id(authority, (await api_key(authority))["id"])
    assert await store.prune_feed(authority.pool, time.time() + 1, 0) >= 1
    gap = await sets(server, resource_server)
    assert events_of(gap) == [(rfc8417.FEED_GAP, {"reason": feed.GAP_REASON})]
    assert (await sets(server, resource_server)).keys() == gap.keys()
    after = await api_key(authority)
    await revoke_id(authority, after["id"])
    rest = await sets(server, resource_server, ack=list(gap))
    assert events_of(rest) == [(rfc8417.CREDENTIAL_REVOKED, {"jti": after["id"]})]


async def test_a_long_poll_is_answered_when_an_event_arrives(
    server: Server, resource_server: Registered, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A parked poll is woken by the invalidation of the change: with no re-read before
    LONG_POLL (30 s), only that wake-up can answer it within the test's bound."""
    monkeypatch.setattr(feed, "RECHECK", 3600.0)
    authority = server.authority
    await start(server, resource_server)
    key = await api_key(authority)
    await start(server, resource_server, receiver="parked")  # its position: before the key's
    parked = asyncio.create_task(
        poll(server, resource_server, returnImmediately=False, receiver="parked")
    )
    while authority.feed.waiting == 0:
        assert not parked.done(), (await parked).body
        await asyncio.sleep(0.01)
    await revoke_id(authority, key["id"])
    answer = await asyncio.wait_for(parked, WOKEN_WITHIN)
    assert answer.status == 200
    (token,) = answer.json()["sets"].values()
    claims = await verified(server, resource_server, token)
    assert claims["events"] == {rfc8417.CREDENTIAL_REVOKED: {"jti": key["id"]}}


async def test_only_a_caller_allowed_to_introspect_may_poll(
    server: Server, resource_server: Registered, app_client: Registered
) -> None:
    """Same rules and errors as /introspect: 401 without valid client authentication, 403
    for a client that may not introspect; the body's client_secret works like a form's."""
    refused = await poll(server, app_client)
    assert refused.status == 403
    assert refused.json()["error"] == "unauthorized_client"
    wrong = await poll(server, Registered(resource_server.client_id, "nope"))
    assert wrong.status == 401
    assert wrong.json()["error"] == "invalid_client"
    anonymous = await server.request(
        "POST", "/events", data=b"{}", headers={"Content-Type": "application/json"}
    )
    assert anonymous.status == 401
    in_body = await server.request(
        "POST",
        "/events",
        data=orjson.dumps(
            {
                "client_id": resource_server.client_id,
                "client_secret": resource_server.secret,
                "returnImmediately": True,
            }
        ),
        headers={"Content-Type": "application/json"},
    )
    assert in_body.status == 200, in_body.body
    both = await server.request(
        "POST",
        "/events",
        data=orjson.dumps({"client_secret": resource_server.secret}),
        headers={**resource_server.auth, "Content-Type": "application/json"},
    )
    assert both.status == 400


HOSTILE: list[tuple[bytes, str]] = [
    (b"", "JSON object"),
    (b"[]", "JSON object"),
    (b"{", "JSON object"),
    (b'"x"', "JSON object"),
    (b'{"maxEvents": -1}', "maxEvents"),
    (b'{"maxEvents": "5"}', "maxEvents"),
    (b'{"maxEvents": true}', "maxEvents"),
    (b'{"maxEvents": 1.5}', "maxEvents"),
    (b'{"maxEvents": 100000000000000000000000000000}', "maxEvents"),
    (b'{"returnImmediately": "yes"}', "returnImmediately"),
    (b'{"ack": "e1.x"}', "ack"),
    (b'{"ack": [1]}', "ack"),
    (b'{"ack": [""]}', "ack"),
    (b'{"ack": ["' + b"x" * 300 + b'"]}', "ack"),
    (orjson.dumps({"ack": ["a"] * 1001}), "ack"),
    (b'{"setErrs": []}', "setErrs"),
    (b'{"setErrs": {"j": "bad"}}', "setErrs"),
    (b'{"setErrs": {"j": {"err": 1}}}', "setErrs"),
    (b'{"setErrs": {"j": {"err": "x", "description": 2}}}', "setErrs"),
    (b'{"receiver": "a b"}', "receiver"),
    (b'{"receiver": 7}', "receiver"),
    (b'{"client_secret": 7}', "client_secret"),
]


@pytest.mark.parametrize(("raw", "named"), HOSTILE)
async def test_a_hostile_body_is_400_naming_the_member(
    server: Server, resource_server: Registered, raw: bytes, named: str
) -> None:
    """Malformed requests are invalid_request naming what is wrong, never a 500."""
    answer = await server.request(
        "POST",
        "/events",
        data=raw,
        headers={**resource_server.auth, "Content-Type": "application/json"},
    )
    assert answer.status == 400, answer.body
    assert answer.json()["error"] == "invalid_request"
    assert named in answer.json()["error_description"]


async def test_other_media_types_and_huge_bodies_are_refused(
    server: Server, resource_server: Registered
) -> None:
    """Only a JSON body is read, and only up to the body limit; a huge maxEvents is served
    as the most a page holds."""
    form = await server.post_form("/events", {"maxEvents": "1"}, headers=resource_server.auth)
    assert form.status == 400
    assert "application/json" in form.json()["error_description"]
    huge = await server.request(
        "POST",
        "/events",
        data=b'{"ack": ["' + b"a" * 200_000 + b'"]}',
        headers={**resource_server.auth, "Content-Type": "application/json"},
    )
    assert huge.status == 413
    big = await poll(server, resource_server, maxEvents=10**9)
    assert big.status == 200


async def test_a_client_id_member_naming_another_client_is_refused(
    server: Server, resource_server: Registered
) -> None:
    """A Basic header for one client and a client_id member naming another: invalid_request,
    as on /introspect."""
    other = await register(server.authority, scopes=(), can_introspect=True)
    answer = await poll(server, resource_server, client_id=other.client_id)
    assert answer.status == 400
    assert answer.json()["error"] == "invalid_request"
