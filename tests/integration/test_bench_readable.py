"""``bench.readable`` on the embedded broker: when each output record could first be read."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaProducer

from bench.readable import ReadableTimes, read_outputs
from streamer.embedded import EmbeddedBroker
from streamer.output.sink import send_batched
from streamer.worker.topics import delete_topics, ensure_topics

pytestmark = [pytest.mark.kafka]


async def send(bootstrap: str, topic: str, ids: range) -> tuple[float, float]:
    """Records named by ``ids``, as one acknowledged send: the times before and after."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        before = time.time()
        await send_batched(producer, [(topic, i % 2, None, b'{"event_id": "%d"}' % i, (), None) for i in ids])
        return before, time.time()
    finally:
        await producer.stop()


def test_each_output_is_readable_from_the_first_fetch_that_shows_it(broker: EmbeddedBroker) -> None:
    """Two sends 300 ms apart: each record is readable after its send began and within a
    fetch or two of its acknowledgement, the second send's records 300 ms after the
    first's, whatever their own timestamps say."""
    bootstrap, topic = broker.bootstrap_servers, "readable-outputs"
    asyncio.run(ensure_topics(bootstrap, [topic], 2))
    try:
        with ReadableTimes(bootstrap, topic) as watched:
            first = asyncio.run(send(bootstrap, topic, range(0, 10)))
            time.sleep(0.3)
            second = asyncio.run(send(bootstrap, topic, range(10, 20)))
            outputs = asyncio.run(read_outputs(bootstrap, topic, 20, "event_id", timeout_s=30))
        assert len(outputs) == 20 and {o.partition for o in outputs.values()} == {0, 1}
        for name, output in outputs.items():
            began, acknowledged = first if int(name) < 10 else second
            readable = watched.at(output.partition, output.offset)
            assert readable is not None and began - 0.005 <= readable <= acknowledged + 0.1, (name, began, readable)
        assert watched.at(0, 10) is None  # past what was written while watched
    finally:
        asyncio.run(delete_topics(bootstrap, [topic]))


def test_what_was_acknowledged_before_the_watch_ends_is_seen_readable(broker: EmbeddedBroker) -> None:
    """A run ends its watch as soon as it has read its outputs, which can be before the
    watch's next fetch answer shows them: the last few outputs of a load run were once
    counted lost. The watch now ends on answers to fetches sent after it was told to."""
    bootstrap, topic = broker.bootstrap_servers, "readable-at-the-end"
    asyncio.run(ensure_topics(bootstrap, [topic], 2))
    try:
        for round_ in range(5):
            with ReadableTimes(bootstrap, topic) as watched:
                asyncio.run(send(bootstrap, topic, range(round_ * 10, round_ * 10 + 10)))
            assert watched.at(0, round_ * 5 + 4) is not None and watched.at(1, round_ * 5 + 4) is not None, round_
    finally:
        asyncio.run(delete_topics(bootstrap, [topic]))
