"""GET /metrics: Prometheus text with requests, cache layers, invalidations and pools."""

from __future__ import annotations

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
