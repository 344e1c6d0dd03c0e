"""The Kafka sink against the embedded broker: keyed records land where Kafka's default
partitioner puts them, among the partitions the topic has now."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka.partitioner import DefaultPartitioner

from streamer.embedded import EmbeddedBroker
from streamer.output.sink import KafkaSink, publish
from streamer.records import OutputRecord
from streamer.worker.topics import delete_topics, ensure_topics
from tests.support import read_topic

pytestmark = pytest.mark.kafka

KEYS = [f"card-{i}".encode() for i in range(64)]


def test_partitions_added_to_a_topic_are_used_after_the_next_metadata_refresh(broker: EmbeddedBroker) -> None:
    """A topic grows from 2 partitions to 4 while the sink runs (deleted and created
    again: the embedded broker lacks CreatePartitions). Once the producer's metadata is
    refreshed, as aiokafka does every ``metadata_max_age_ms``, the sink places keys over
    all 4, where aiokafka's own partitioner would; it used to keep the first 2 for good."""
    bootstrap, topic = broker.bootstrap_servers, f"sink-{uuid.uuid4().hex[:8]}"

    async def published() -> list[tuple[bytes, int]]:
        await ensure_topics(bootstrap, [topic], 2)
        sink = KafkaSink(bootstrap)
        try:
            await publish(sink, [OutputRecord(topic, key, b"before") for key in KEYS])
            await delete_topics(bootstrap, [topic])
            await ensure_topics(bootstrap, [topic], 4)
            assert sink.producer is not None
            for _ in range(50):
                await sink.producer.client.force_metadata_update()
                if len(await sink.producer.partitions_for(topic)) == 4:
                    break
                await asyncio.sleep(0.1)
            await publish(sink, [OutputRecord(topic, key, b"after") for key in KEYS])
        finally:
            await sink.stop()
        records = await read_topic(bootstrap, topic, len(KEYS))
        return [(r.key, r.partition) for r in records if r.value == b"after"]

    try:
        placed = asyncio.run(published())
    finally:
        asyncio.run(delete_topics(bootstrap, [topic]))
    partitioner = DefaultPartitioner()
    assert sorted(placed) == sorted((key, partitioner(key, [0, 1, 2, 3], [0, 1, 2, 3])) for key in KEYS)
    assert {partition for _, partition in placed} == {0, 1, 2, 3}
