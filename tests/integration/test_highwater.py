"""High watermarks from fetch responses, asked by two batches at once (embedded broker)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.run import produce
from streamer.embedded import EmbeddedBroker
from streamer.worker.highwater import FetchedHighWatermarks

pytestmark = pytest.mark.kafka


def test_callers_at_once_each_get_fresh_watermarks(broker: EmbeddedBroker, topic: str,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    bootstrap = broker.bootstrap_servers

    async def asked_at_once() -> list[dict[int, int]]:
        fetched = FetchedHighWatermarks(bootstrap, max_wait_s=3.0)
        try:
            await fetched.highwaters(topic)  # the consumer exists before the callers race
            consumer, _ = fetched.consumers[topic]
            position = consumer.position

            async def slow_position(tp: TopicPartition) -> int:  # the first caller finishes slowly...
                await asyncio.sleep(0.05)
                return await position(tp)

            consumer.position = slow_position  # type: ignore[method-assign]

            async def second() -> dict[int, int]:  # ...while the second begins
                await asyncio.sleep(0.02)
                return await fetched.highwaters(topic)

            return list(await asyncio.gather(fetched.highwaters(topic), second()))
        finally:
            await fetched.close()

    asyncio.run(produce(bootstrap, topic, [(f"k{i}".encode(), b"{}") for i in range(30)]))
    with caplog.at_level(logging.WARNING, logger="streamer.worker.highwater"):
        results = asyncio.run(asked_at_once())
    assert [sum(highs.values()) for highs in results] == [30, 30]
    assert not [r for r in caplog.records if "no fresh high watermarks" in r.getMessage()]  # the second did not wait out


def test_a_caller_cancelled_while_the_consumer_starts_leaves_it_to_the_next(
        broker: EmbeddedBroker, topic: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fraud pipeline cancels a fetch it no longer needs: the consumer's start goes
    on, and the next caller uses that consumer (no second one, no half-started one left)."""
    bootstrap = broker.bootstrap_servers
    created: list[AIOKafkaConsumer] = []

    class Counted(AIOKafkaConsumer):
        def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            super().__init__(*args, **kwargs)
            created.append(self)

    monkeypatch.setattr("streamer.worker.highwater.AIOKafkaConsumer", Counted)

    async def cancelled_then_asked() -> dict[int, int]:
        fetched = FetchedHighWatermarks(bootstrap, max_wait_s=3.0)
        try:
            first = asyncio.ensure_future(fetched.highwaters(topic))
            await asyncio.sleep(0)  # its consumer is starting
            first.cancel()
            return await fetched.highwaters(topic)
        finally:
            await fetched.close()

    asyncio.run(produce(bootstrap, topic, [(f"k{i}".encode(), b"{}") for i in range(10)]))
    highs = asyncio.run(cancelled_then_asked())
    assert len(created) == 1 and sum(highs.values()) == 10
