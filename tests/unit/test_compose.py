"""docker-compose.yml, the production shape: the admin API on its own port, published privately."""

from __future__ import annotations

from pathlib import Path

import yaml  # PyYAML, a dependency of schemathesis

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def test_admin_port_is_published_on_loopback_only() -> None:
    """The service serves /admin on its admin port, which the host publishes on 127.0.0.1 only."""
    service = yaml.safe_load(COMPOSE.read_text())["services"]["introspect"]
    admin_port = str(service["environment"]["INTROSPECT_ADMIN_PORT"])
    published = [str(p).split(":") for p in service["ports"]]
    admin = [p for p in published if p[-1] == admin_port]
    assert admin == [["127.0.0.1", admin_port, admin_port]]
    assert all(p[-1] != admin_port for p in published if p[0] != "127.0.0.1")
