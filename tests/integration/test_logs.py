"""Logs are JSON lines with a request id, and never carry a credential or secret."""

from __future__ import annotations

import logging

import orjson
import pytest

from introspect.logs import JsonFormatter
from tests.helpers import Registered, Server, basic


def test_records_are_one_json_object_per_line() -> None:
    """The formatter writes one JSON object with time, level, logger, message and request id."""
    record = logging.LogRecord("introspect.x", logging.WARNING, __file__, 1, "a %s", ("b",), None)
    record.request_id = "abc"
    line = JsonFormatter().format(record)
    assert "\n" not in line
    data = orjson.loads(line)
    assert data["msg"] == "a b"
    assert data["level"] == "warning"
    assert data["request_id"] == "abc"


async def test_failures_log_no_secret(
    server: Server,
    app_client: Registered,
    resource_server: Registered,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Failed authentications and bad requests log nothing a caller presented."""
    token = (
        await server.post_form(
            "/token", {"grant_type": "client_credentials"}, headers=app_client.auth
        )
    ).json()["access_token"]
    caplog.set_level(logging.DEBUG)
    wrong = basic(app_client.client_id, app_client.secret + "x")
    await server.post_form("/introspect", {"token": token}, headers=wrong)
    await server.post_form(
        "/token", {"grant_type": "password", "password": "hunter2"}, headers=wrong
    )
    await server.post_form(
        "/introspect",
        [("token", token), ("token", "x")],
        headers=resource_server.auth,
    )
    await server.post_form(
        "/revoke",
        b"token=" + token.encode() + b"&token=y",
        headers={**resource_server.auth, "Content-Type": "application/x-www-form-urlencoded"},
    )
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    for secret in (token, app_client.secret, resource_server.secret, "hunter2"):
        assert secret not in text


async def test_request_id_is_echoed(server: Server, resource_server: Registered) -> None:
    """A sane X-Request-Id is echoed back; an insane one is not."""
    resp = await server.post_form(
        "/introspect", {"token": "x"}, headers={**resource_server.auth, "X-Request-Id": "req-42"}
    )
    assert resp.headers["X-Request-Id"] == "req-42"
    resp = await server.post_form(
        "/introspect", {"token": "x"}, headers={**resource_server.auth, "X-Request-Id": "a b\tc"}
    )
    assert "X-Request-Id" not in resp.headers
