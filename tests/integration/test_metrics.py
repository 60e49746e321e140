"""GET /metrics: Prometheus text with requests, cache layers, invalidations and pools."""

from __future__ import annotations

import asyncio
import gc

import pytest
from prometheus_client import CollectorRegistry

from introspect import metrics
from tests.helpers import Registered, Server


async def test_metrics_count_what_happened(
    server: Server, app_client: Registered, resource_server: Registered
) -> None:
    """After a token, two introspections and a revocation, the counters say so."""
    token = (
        await server.post_form(
            "/token", {"grant_type": "client_credentials"}, headers=app_client.auth
        )
    ).json()["access_token"]
    for _ in range(2):
        await server.post_form("/introspect", {"token": token}, headers=resource_server.auth)
    await server.post_form("/revoke", {"token": token}, headers=app_client.auth)
    resp = await server.request("GET", "/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    text = resp.body.decode()
    for name in (
        'introspect_requests_total{route="/introspect",status="200"}',
        'introspect_request_seconds_bucket{le="0.001",route="/introspect"}',
        'introspect_cache_hits_total{layer="local"}',
        'introspect_cache_misses_total{layer="redis"}',
        "introspect_invalidations_sent_total",
        "introspect_invalidations_received_total",
        "introspect_tokens_issued_total",
        'introspect_pool_connections{pool="postgres",state="idle"}',
    ):
        assert name in text, name


def _value(text: str, sample: str) -> float:
    """The value of one sample line of the exposition, 0 when absent."""
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_request_counts_and_latency_add_up(
    server: Server, resource_server: Registered
) -> None:
    """Three introspections and one refused call add exactly that to counts and histograms."""
    counted = 'introspect_requests_total{route="/introspect",status="%d"}'
    every = 'introspect_request_seconds_bucket{le="+Inf",route="/introspect"}'
    total = 'introspect_request_seconds_count{route="/introspect"}'
    before = (await server.request("GET", "/metrics")).body.decode()
    for _ in range(3):
        await server.post_form("/introspect", {"token": "x"}, headers=resource_server.auth)
    refused = await server.post_form("/introspect", {"token": "x"})
    assert refused.status == 401
    after = (await server.request("GET", "/metrics")).body.decode()
    assert _value(after, counted % 200) - _value(before, counted % 200) == 3
    assert _value(after, counted % 401) - _value(before, counted % 401) == 1
    assert _value(after, every) - _value(before, every) == 4
    assert _value(after, total) - _value(before, total) == 4


async def test_a_revocation_times_its_propagation(server: Server, app_client: Registered) -> None:
    """Each revocation that changed something adds one observation of its propagation, from
    publication to the last acknowledgement; one that changed nothing adds none."""
    count = "introspect_invalidation_seconds_count"
    token = (
        await server.post_form(
            "/token", {"grant_type": "client_credentials"}, headers=app_client.auth
        )
    ).json()["access_token"]
    before = (await server.request("GET", "/metrics")).body.decode()
    for _ in range(2):  # the second finds it revoked already: nothing published
        await server.post_form("/revoke", {"token": token}, headers=app_client.auth)
    after = (await server.request("GET", "/metrics")).body.decode()
    assert _value(after, count) - _value(before, count) == 1


async def test_exposition_is_rendered_off_the_event_loop(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading and formatting every worker's values runs on a thread without an event loop,
    so a scrape never stalls the requests the loop is answering."""
    on_loop: list[bool] = []
    real = metrics.generate_latest

    def spy(registry: CollectorRegistry) -> bytes:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            on_loop.append(False)
        else:
            on_loop.append(True)
        return real(registry)

    monkeypatch.setattr(metrics, "generate_latest", spy)
    resp = await server.request("GET", "/metrics")
    assert resp.status == 200
    assert b"introspect_requests_total" in resp.body
    assert on_loop == [False]


async def test_gc_pauses_and_loop_lag_are_counted(server: Server) -> None:
    """Each collection of the cyclic GC counts once under its generation; the loop-lag probe
    counts its timers: what an operator reads a latency tail's cause from."""
    full = 'introspect_gc_pause_seconds_count{generation="2"}'
    young = 'introspect_gc_pause_seconds_count{generation="0"}'
    lags = "introspect_event_loop_lag_seconds_count"
    before = (await server.request("GET", "/metrics")).body.decode()
    gc.collect(2)
    gc.collect(2)
    gc.collect(0)
    await asyncio.sleep(3 * metrics.LAG_INTERVAL)
    after = (await server.request("GET", "/metrics")).body.decode()
    assert _value(after, full) - _value(before, full) >= 2
    assert _value(after, young) - _value(before, young) >= 1
    assert _value(after, lags) - _value(before, lags) >= 1
    assert 'introspect_gc_pause_seconds_bucket{generation="2",le="0.0001"}' in after
    assert 'introspect_event_loop_lag_seconds_bucket{le="+Inf"}' in after
