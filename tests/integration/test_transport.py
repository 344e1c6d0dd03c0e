"""The worker's Kafka consumer on the worker's own event loop (embedded broker)."""

from __future__ import annotations

import asyncio
import threading

import pytest
from aiokafka import TopicPartition

from bench.run import produce
from streamer.embedded import EmbeddedBroker
from streamer.settings import Settings
from streamer.worker import transport
from tests.support import idle_app

pytestmark = pytest.mark.kafka


def test_the_consumer_runs_on_the_workers_loop_and_stops_without_touching_its_tasks(
        broker: EmbeddedBroker, topic: str) -> None:
    """No thread of its own: its calls run on the caller's thread, its aiokafka consumer
    fetches on the caller's loop, and stopping it leaves the loop's other tasks alone
    (Faust's thread cancels every task left on its loop as it stops)."""
    settings = Settings.from_env({"STREAMER_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers})

    async def started_used_stopped() -> tuple[int, int, int, list[bytes], bool]:
        service = idle_app(settings=settings).consumer._thread
        assert isinstance(service, transport.ConsumerOnTheLoop)
        neighbour = asyncio.ensure_future(asyncio.sleep(60))
        threads = threading.active_count()
        await service.start()
        try:
            running_threads = threading.active_count()
            caller = await service.call_thread(threading.get_ident)
            consumer = service._consumer
            assert consumer is not None
            consumer.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
            await consumer.seek_to_beginning()
            fetched = {}
            while sum(len(records) for records in fetched.values()) < 2:
                fetched.update(await consumer.getmany(timeout_ms=5000))
        finally:
            await service.stop()
        values = [record.value for records in fetched.values() for record in records]
        left_alone = not neighbour.done()
        neighbour.cancel()
        return threads, running_threads, caller, values, left_alone

    asyncio.run(produce(broker.bootstrap_servers, topic, [(b"k", b"one"), (b"k", b"two")]))
    threads, running_threads, caller, values, left_alone = asyncio.run(started_used_stopped())
    assert running_threads == threads
    assert caller == threading.get_ident()
    assert values == [b"one", b"two"]
    assert left_alone
