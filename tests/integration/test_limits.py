"""Rate limits and credits at /introspect and in the admin API, on the session's server."""

from __future__ import annotations

import re
import time
from typing import Any

from introspect.config import Settings
from introspect.metrics import METRICS
from introspect.service import Authority
from tests.admin_helpers import created_client, created_key, error_of
from tests.helpers import AdminAPI, Answer, Registered, Server, admin_api, eventually, register
from tests.integration.test_flow import issue
from tests.valkey import Valkey, serving

# draft-ietf-httpapi-ratelimit-headers: `"name";q=Q;w=W` and `"name";r=R;t=T` list members.
_MEMBER = re.compile(r'"([A-Za-z0-9_.-]+)"((?:;[a-z]+=\d+)*)')


def parse_fields(value: str) -> dict[str, dict[str, int]]:
    """A RateLimit or RateLimit-Policy field value: policy name -> its integer parameters,
    asserting the list is well-formed."""
    policies: dict[str, dict[str, int]] = {}
    for member in value.split(", "):
        match = _MEMBER.fullmatch(member)
        assert match is not None, value
        params = dict(p.split("=") for p in match.group(2).split(";")[1:])
        assert match.group(1) not in policies, value
        policies[match.group(1)] = {k: int(v) for k, v in params.items()}
    return policies


async def post(server: Server, rs: Registered, token: str, **extra: str) -> Answer:
    return await server.post_form("/introspect", {"token": token, **extra}, headers=rs.auth)


async def uses(server: Server, rs: Registered, token: str, n: int, **extra: str) -> list[Answer]:
    return [await post(server, rs, token, **extra) for _ in range(n)]


def actives(answers: list[Answer]) -> int:
    return sum(a.json()["active"] for a in answers)


async def read_key(api: AdminAPI, key_id: str) -> dict[str, Any]:
    resp = await api.call("GET", f"/api-keys/{key_id}")
    assert resp.status == 200, resp.body
    return resp.json()


async def test_credits_run_out_exactly_and_the_answer_says_so(
    server: Server, api: AdminAPI, resource_server: Registered
) -> None:
    """A key with 5 credits answers active 5 times, then exactly {"active": false}, with the
    RateLimit fields on both and no Retry-After (no refill: waiting does not help); never
    cached by the resource server; the admin read shows 0 remaining once the lease is back."""
    issued = await created_key(api, sub="limited", scopes=["read"], credits={"remaining": 5})
    answers = await uses(server, resource_server, issued["key"], 8)
    assert [a.json()["active"] for a in answers] == [True] * 5 + [False] * 3
    assert all(a.body == b'{"active":false}' for a in answers[5:])
    for n, answer in enumerate(answers):
        assert answer.headers["Cache-Control"] == "no-store"
        policy = parse_fields(answer.headers["RateLimit-Policy"])
        assert set(policy) == {"key-credits"}
        state = parse_fields(answer.headers["RateLimit"])["key-credits"]
        assert state["r"] == max(0, 4 - n)
        assert "t" not in state
        assert "Retry-After" not in answer.headers

    async def returned() -> bool:
        return (await read_key(api, issued["id"]))["credits"]["leased"] == 0

    await eventually(returned, within=20)
    read = await read_key(api, issued["id"])
    assert read["credits"] == {"refill": None, "remaining": 0, "leased": 0, "lost": 0}


async def test_a_window_refuses_with_an_honest_retry_after(
    server: Server, api: AdminAPI, resource_server: Registered
) -> None:
    """A key allowed 3 uses a minute answers 3 active, then inactive with Retry-After equal
    to the time left in the window and the RateLimit fields naming it; the admin read shows
    the uses left in the current window."""
    issued = await created_key(
        api, sub="windowed", scopes=["read"], rate_limits=[{"name": "m", "limit": 3, "window": 60}]
    )
    before = time.time()
    answers = await uses(server, resource_server, issued["key"], 5)
    after = time.time()
    crossed = int(after // 60) != int(before // 60)  # a new window admits more uses
    assert 3 <= actives(answers) <= (5 if crossed else 3)
    end = (int(before // 60) + 1) * 60
    if not crossed:
        for refused in answers[3:]:
            wait = int(refused.headers["Retry-After"])
            assert end - after <= wait <= end - before + 1
            state = parse_fields(refused.headers["RateLimit"])["key.m"]
            assert state == {"r": 0, "t": wait}
            assert parse_fields(refused.headers["RateLimit-Policy"]) == {"key.m": {"q": 3, "w": 60}}
        assert (await read_key(api, issued["id"]))["rate_limits"] == [
            {"name": "m", "limit": 3, "window": 60, "remaining": 0}
        ]


async def test_cost_counts_several_uses_and_hostile_costs_are_refused(
    server: Server, api: AdminAPI, resource_server: Registered
) -> None:
    """`cost=N` spends N uses (0 spends none while any is left); a negative, huge or
    malformed cost is 400 invalid_request naming `cost`, and spends nothing."""
    issued = await created_key(api, sub="costly", scopes=["read"], credits={"remaining": 10})
    for bad in ("-1", "1001", "abc", "1e3", " 5", "+5", "٣", "99999999999999999999"):
        resp = await post(server, resource_server, issued["key"], cost=bad)
        assert resp.status == 400, (bad, resp.body)
        assert resp.json()["error"] == "invalid_request"
        assert "cost" in resp.json()["error_description"]
    assert (await post(server, resource_server, issued["key"], cost="7")).json()["active"]
    assert (await post(server, resource_server, issued["key"], cost="0")).json()["active"]
    assert not (await post(server, resource_server, issued["key"], cost="4")).json()["active"]
    answers = await uses(server, resource_server, issued["key"], 4, cost="1")
    assert actives(answers) == 3


async def test_client_wide_limits_count_its_tokens_and_keys_together(
    server: Server, api: AdminAPI, resource_server: Registered
) -> None:
    """Credits set on a client are spent by its access tokens and its API keys together;
    the key's own limits apply as well."""
    client = await created_client(api, scopes=["read"], credits={"remaining": 4})
    key = await created_key(
        api,
        client_id=client["client_id"],
        scopes=["read"],
        rate_limits=[{"name": "s", "limit": 100, "window": 60}],
    )
    owner = Registered(client["client_id"], client["client_secret"])
    token = (await issue(server, owner))["access_token"]
    first = [
        *await uses(server, resource_server, token, 2),
        await post(server, resource_server, key["key"]),
    ]
    assert actives(first) == 3
    both = parse_fields(first[2].headers["RateLimit"])
    assert set(both) == {"key.s", "client-credits"}
    assert both["client-credits"]["r"] == 1
    assert (await post(server, resource_server, key["key"])).json()["active"]
    assert not (await post(server, resource_server, token)).json()["active"]
    assert not (await post(server, resource_server, key["key"])).json()["active"]
    read = await api.call("GET", f"/clients/{client['client_id']}")
    assert read.json()["credits"]["refill"] is None


async def test_a_patched_limit_takes_effect_at_once(
    server: Server, api: AdminAPI, resource_server: Registered
) -> None:
    """Lowering a window below the uses made, then setting credits, then removing every
    limit: each answer right after the PATCH follows the new settings."""
    issued = await created_key(
        api,
        sub="patched",
        scopes=["read"],
        rate_limits=[{"name": "h", "limit": 100, "window": 3600}],
    )
    assert actives(await uses(server, resource_server, issued["key"], 3)) == 3
    path = f"/api-keys/{issued['id']}"
    lowered = await api.call(
        "PATCH", path, {"rate_limits": [{"name": "h", "limit": 3, "window": 3600}]}
    )
    assert lowered.status == 200, lowered.body
    assert not (await post(server, resource_server, issued["key"])).json()["active"]
    changed = await api.call(
        "PATCH",
        path,
        {"rate_limits": [], "credits": {"remaining": 2, "refill": {"amount": 2, "interval": 3600}}},
    )
    assert changed.status == 200, changed.body
    answers = await uses(server, resource_server, issued["key"], 3)
    assert actives(answers) == 2
    assert 0 < int(answers[2].headers["Retry-After"]) <= 3600
    assert parse_fields(answers[2].headers["RateLimit-Policy"]) == {
        "key-credits": {"q": 2, "w": 3600}
    }
    cleared = await api.call("PATCH", path, {"credits": None})
    assert cleared.json()["credits"] is None
    assert cleared.json()["rate_limits"] == []
    freed = await post(server, resource_server, issued["key"])
    assert freed.json()["active"]
    assert "RateLimit" not in freed.headers


async def test_unlimited_credentials_carry_no_ratelimit_fields(
    server: Server, api: AdminAPI, resource_server: Registered
) -> None:
    """A key without limits answers as before: no RateLimit fields, and the admin read shows
    no limits."""
    issued = await created_key(api, sub="free", scopes=["read"])
    answer = await post(server, resource_server, issued["key"])
    assert answer.json()["active"]
    assert "RateLimit" not in answer.headers
    assert "RateLimit-Policy" not in answer.headers
    read = await read_key(api, issued["id"])
    assert read["rate_limits"] == []
    assert read["credits"] is None


HOSTILE: list[tuple[dict[str, Any], str]] = [
    (
        {"rate_limits": [{"name": f"w{n}", "limit": 1, "window": 1} for n in range(5)]},
        "rate_limits",
    ),
    ({"rate_limits": [{"name": "a", "limit": 1, "window": 1}] * 2}, "rate_limits[1].name"),
    ({"rate_limits": [{"name": "a", "limit": 1, "window": 0}]}, "rate_limits[0].window"),
    ({"rate_limits": [{"name": "a", "limit": 1, "window": 86_401}]}, "rate_limits[0].window"),
    ({"rate_limits": [{"name": "a", "limit": 0, "window": 1}]}, "rate_limits[0].limit"),
    ({"rate_limits": [{"name": "a", "limit": 10**15, "window": 1}]}, "rate_limits[0].limit"),
    ({"rate_limits": [{"name": 'a"b', "limit": 1, "window": 1}]}, "rate_limits[0].name"),
    ({"rate_limits": [{"name": "a", "limit": 1, "window": 1, "x": 1}]}, "rate_limits[0]"),
    ({"rate_limits": "many"}, "rate_limits"),
    ({"credits": {"remaining": -1}}, "credits.remaining"),
    ({"credits": {"remaining": True}}, "credits.remaining"),
    (
        {"credits": {"remaining": 5, "refill": {"amount": 5, "interval": 59}}},
        "credits.refill.interval",
    ),
    (
        {"credits": {"remaining": 5, "refill": {"amount": -5, "interval": 60}}},
        "credits.refill.amount",
    ),
    ({"credits": [5]}, "credits"),
]


async def test_hostile_limits_are_refused_naming_the_field_and_write_nothing(
    api: AdminAPI, app_client: Registered
) -> None:
    """Absurd limits, five of them, duplicate names, bad credits: 400 naming the field, at
    issue (no key made) and by PATCH (the key unchanged), for keys and clients alike."""
    issued = await created_key(api, sub="hostile", scopes=["read"])
    client = await created_client(api, scopes=["read"])
    for body, field in HOSTILE:
        made = await api.call(
            "POST", "/api-keys", {"sub": "hostile-new", "scopes": ["read"], **body}
        )
        assert error_of(made, 400).startswith(field), (body, made.body)
        patched = await api.call("PATCH", f"/api-keys/{issued['id']}", body)
        assert error_of(patched, 400).startswith(field), (body, patched.body)
        for method, path in (("POST", "/clients"), ("PATCH", f"/clients/{client['client_id']}")):
            resp = await api.call(method, path, {"name": "h", **body} if method == "POST" else body)
            assert error_of(resp, 400).startswith(field), (body, resp.body)
    listed = await api.call("GET", "/tokens?sub=hostile-new")
    assert listed.json()["items"] == []
    read = await read_key(api, issued["id"])
    assert read["rate_limits"] == []
    assert read["credits"] is None
    del app_client


async def test_without_redis_windows_fall_back_to_a_share_and_credits_stay_exact(
    settings: Settings, authority: Authority, valkey: Valkey
) -> None:
    """With Redis stopped, a window grants this (single) worker its share, the whole limit,
    once per window, counted as unreconciled; credits, kept in Postgres, stay exact."""
    async with serving(settings, valkey) as srv:
        api = await admin_api(srv)
        rs = await register(authority, scopes=(), can_introspect=True)
        window = [{"name": "h", "limit": 4, "window": 3600}]
        both = await created_key(
            api, sub="no-redis", scopes=["read"], rate_limits=window, credits={"remaining": 3}
        )
        windowed = await created_key(api, sub="no-redis", scopes=["read"], rate_limits=window)
        before = METRICS.limit_unreconciled.value()
        refused_before = METRICS.limit_refused_credits.value()
        valkey.stop()
        exact = await uses(srv, rs, both["key"], 5)
        assert actives(exact) == 3
        assert parse_fields(exact[-1].headers["RateLimit"])["key-credits"]["r"] == 0
        assert METRICS.limit_refused_credits.value() - refused_before == 2
        shared = await uses(srv, rs, windowed["key"], 6)
        assert actives(shared) == 4
        assert "Retry-After" in shared[-1].headers
        assert METRICS.limit_unreconciled.value() - before == 8
