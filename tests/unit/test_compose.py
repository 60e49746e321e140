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


CLUSTER = COMPOSE.with_name("docker-compose.cluster.yml")


def test_the_cluster_file_runs_two_instances_on_a_valkey_cluster_behind_a_proxy() -> None:
    """docker-compose.cluster.yml: six cluster-enabled Valkey nodes that never evict, two
    introspect instances seeded with cluster nodes and sharing one secret, reachable only
    through the proxy, whose admin port is published on loopback only."""
    services = yaml.safe_load(CLUSTER.read_text())["services"]
    nodes = {name for name in services if name.startswith("valkey-")}
    assert len(nodes) == 6
    for name in nodes:
        command = " ".join(services[name]["command"])
        assert "--cluster-enabled yes" in command
        assert "--maxmemory-policy noeviction" in command
    instances = [s for name, s in services.items() if name.startswith("introspect-")]
    assert len(instances) == 2
    for instance in instances:
        env = instance["environment"]
        assert env["INTROSPECT_REDIS_CLUSTER"] == "true"
        seeds = [
            seed.split("//")[1].split(":")[0] for seed in env["INTROSPECT_REDIS_URL"].split(",")
        ]
        assert seeds
        assert set(seeds) <= nodes
        assert env["INTROSPECT_SECRET"].startswith("${INTROSPECT_SECRET:?")
        assert "ports" not in instance
        assert instance["depends_on"]["cluster-init"]["condition"] == (
            "service_completed_successfully"
        )
    proxy = services["proxy"]
    admin_port = str(instances[0]["environment"]["INTROSPECT_ADMIN_PORT"])
    published = [str(p).split(":") for p in proxy["ports"]]
    assert [p for p in published if p[-1] == admin_port] == [["127.0.0.1", admin_port, admin_port]]
    upstreams = yaml.safe_load(CLUSTER.read_text())["configs"]["proxy"]["content"]
    assert all(f"{name}:8080" in upstreams for name in services if name.startswith("introspect-"))
