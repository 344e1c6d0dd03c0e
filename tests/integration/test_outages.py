"""A Kafka broker that is not there: the worker's Kafka clients turn that into
``DependencyError``, which the worker retries, never into a crash or a dead letter
(embedded broker)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from aiokafka import AIOKafkaConsumer

from streamer.embedded import EmbeddedBroker, free_port
from streamer.errors import DependencyError
from streamer.output.sink import KafkaSink
from streamer.records import OutputRecord, SourceRecord
from streamer.worker.app import process_batch, publish_batch
from streamer.worker.highwater import FetchedHighWatermarks
from streamer.worker.topics import assign_topic, ensure_topics

pytestmark = pytest.mark.kafka


def test_a_broker_down_at_the_first_publish_is_waited_for() -> None:
    """The sink connects at its first send; a broker not up by then is retried like one
    lost later, and the batch is delivered once it is up."""
    port = free_port()

    async def published_after_the_broker_came_up() -> list[bytes | None]:
        sink = KafkaSink(f"127.0.0.1:{port}")
        publishing = asyncio.create_task(publish_batch(sink, [OutputRecord("outage", b"k", b"v")]))
        await asyncio.sleep(1.0)
        assert not publishing.done(), publishing  # still retrying: it did not raise
        with EmbeddedBroker(port=port) as broker:
            await ensure_topics(broker.bootstrap_servers, ["outage"], 1)
            await asyncio.wait_for(publishing, 30)
            await sink.stop()
            consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap_servers, auto_offset_reset="earliest")
            await consumer.start()
            try:
                await assign_topic(consumer, "outage")
                batches = await consumer.getmany(timeout_ms=5000)
                return [r.value for records in batches.values() for r in records]
            finally:
                await consumer.stop()

    assert asyncio.run(published_after_the_broker_came_up()) == [b"v"]


class AsksForHighWatermarks:
    """A pipeline that checks a topic's high watermarks, as the fraud pipeline's event clocks do."""

    def __init__(self, bootstrap_servers: str) -> None:
        self.highwaters = FetchedHighWatermarks(bootstrap_servers)
        self.batches: list[int] = []  # the size of each batch asked to process

    async def process(self, records: Sequence[SourceRecord]) -> list[OutputRecord]:
        self.batches.append(len(records))
        await self.highwaters.highwaters("transactions")
        return []


def test_high_watermarks_from_no_broker_fail_the_batch_not_its_records() -> None:
    """The error is a ``DependencyError``: the batch is retried whole. Were it not, the
    batch would be processed record by record and every valid record dead-lettered."""
    pipeline = AsksForHighWatermarks(f"127.0.0.1:{free_port()}")
    records = [SourceRecord("transactions", 0, offset, b"c", b"{}") for offset in range(3)]

    async def asked() -> None:
        with pytest.raises(DependencyError):
            await pipeline.highwaters.highwaters("transactions")
        assert not pipeline.highwaters.consumers  # nothing half-started kept
        with pytest.raises(asyncio.TimeoutError):  # retried until the broker is back
            await asyncio.wait_for(process_batch(pipeline, records, "dead-letter"), 2.0)
        # tried more than once in those 2 s, and always the whole batch: never record by record
        assert len(pipeline.batches) >= 2 and set(pipeline.batches) == {3}

    asyncio.run(asked())
