"""What a group has committed, against the embedded broker: ``bench.soak``'s backlog and
``bench.run``'s wait before a drain's outputs are read."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.run import produce, wait_committed
from bench.soak import backlog, wait_caught_up
from streamer.embedded import EmbeddedBroker
from streamer.worker.highwater import FetchedHighWatermarks

pytestmark = pytest.mark.kafka


async def highwaters(bootstrap: str, topic: str) -> dict[int, int]:
    fetched = FetchedHighWatermarks(bootstrap)
    try:
        return await fetched.highwaters(topic)
    finally:
        await fetched.close()


async def commit(bootstrap: str, group: str, topic: str, offsets: dict[int, int]) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in offsets])
        await consumer.commit({TopicPartition(topic, p): offset for p, offset in offsets.items()})
    finally:
        await consumer.stop()


def test_the_backlog_is_what_the_group_has_not_committed(broker: EmbeddedBroker, topic: str) -> None:
    bootstrap, group = broker.bootstrap_servers, f"soak-{uuid.uuid4().hex[:8]}"

    asyncio.run(produce(bootstrap, topic, [(f"k{i}".encode(), b"{}") for i in range(40)]))
    highs = asyncio.run(highwaters(bootstrap, topic))
    assert sum(highs.values()) == 40 and all(highs.values())  # both partitions hold some
    assert asyncio.run(backlog(bootstrap, group, [topic])) == {topic: 40}
    asyncio.run(commit(bootstrap, group, topic, {0: highs[0]}))
    assert asyncio.run(backlog(bootstrap, group, [topic])) == {topic: highs[1]}
    asyncio.run(commit(bootstrap, group, topic, {1: highs[1] - 1}))
    assert asyncio.run(wait_caught_up(bootstrap, group, [topic], timeout_s=2))[0] == {topic: 1}
    asyncio.run(commit(bootstrap, group, topic, {1: highs[1]}))
    left, waited = asyncio.run(wait_caught_up(bootstrap, group, [topic], timeout_s=10))
    assert left == {topic: 0} and waited < 10


def test_a_drain_waits_until_the_group_committed_the_backlog(broker: EmbeddedBroker, topic: str) -> None:
    bootstrap, group = broker.bootstrap_servers, f"drain-{uuid.uuid4().hex[:8]}"
    asyncio.run(produce(bootstrap, topic, [(f"k{i}".encode(), b"{}") for i in range(40)]))
    highs = asyncio.run(highwaters(bootstrap, topic))
    assert asyncio.run(wait_committed(bootstrap, group, topic, 40, timeout_s=0.3)) == 0
    asyncio.run(commit(bootstrap, group, topic, {0: highs[0], 1: highs[1] - 1}))
    assert asyncio.run(wait_committed(bootstrap, group, topic, 40, timeout_s=0.3)) == 39

    async def commit_later() -> int:
        waiting = asyncio.ensure_future(wait_committed(bootstrap, group, topic, 40, timeout_s=30))
        await asyncio.sleep(0.5)
        assert not waiting.done()
        await commit(bootstrap, group, topic, {1: highs[1]})
        return await waiting

    assert asyncio.run(commit_later()) == 40
