"""Capture and replay against the embedded broker: byte-for-byte round trips, and
identical outputs whatever the replay speed and batching."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import OffsetOutOfRangeError

from streamer.embedded import EmbeddedBroker
from streamer.errors import ConfigurationError
from streamer.replay.capture import CaptureBounds, capture, seek_past_out_of_range
from streamer.replay.capture_file import read_capture
from streamer.replay.replay import replay
from streamer.worker.topics import delete_topics, ensure_topics

pytestmark = [pytest.mark.kafka]
CAPTURES = Path(__file__).resolve().parent.parent / "replay" / "captures"


async def _produce_live(bootstrap: str, topic: str, n: int, pause_every: int = 0) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(n):
            key = None if i % 5 == 0 else f"k{i % 7}".encode()
            headers = [("trace", f"t{i}".encode()), ("empty", b""), ("none", None)] if i % 3 == 0 else None
            await producer.send(topic, value=bytes([i % 256]) * (i % 17) + b"\x00\xff", key=key,
                                headers=headers, timestamp_ms=1533081600000 + i * 1000)
            if pause_every and i % pause_every == 0:
                await producer.flush()
                await asyncio.sleep(0.01)
        await producer.flush()
    finally:
        await producer.stop()


def test_capture_replay_capture_round_trips_byte_for_byte(broker: EmbeddedBroker, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    source, target = f"cap-src-{tag}", f"cap-dst-{tag}"
    bootstrap = broker.bootstrap_servers
    asyncio.run(ensure_topics(bootstrap, [source, target], 3))
    try:
        asyncio.run(_produce_live(bootstrap, source, 300))
        first = tmp_path / "first.jsonl.gz"
        assert asyncio.run(capture(bootstrap, [source], first)) == 300
        asyncio.run(replay(bootstrap, [first], rename={source: target}))
        second = tmp_path / "second.jsonl.gz"
        assert asyncio.run(capture(bootstrap, [target], second)) == 300

        def essence(path: Path) -> list[tuple]:  # type: ignore[type-arg]
            return sorted((r.key is None, r.key or b"", r.value, r.headers, r.timestamp) for r in read_capture(path))

        assert essence(first) == essence(second)
        per_key = {}
        for r in read_capture(second):
            if r.key is not None:
                per_key.setdefault(r.key, []).append(r.timestamp)
        assert all(ts == sorted(ts) for ts in per_key.values())

        window = tmp_path / "window.jsonl.gz"
        bounds = CaptureBounds(from_ms=1533081600000 + 100_000, to_ms=1533081600000 + 200_000)
        assert asyncio.run(capture(bootstrap, [source], window, bounds=bounds)) == 100
        assert asyncio.run(capture(bootstrap, [source], tmp_path / "few.jsonl.gz", partitions=[0], bounds=CaptureBounds(count=10))) == 10
        assert asyncio.run(capture(bootstrap, [source], tmp_path / "no.jsonl.gz", bounds=CaptureBounds(count=0))) == 0
        twice = asyncio.wait_for(capture(bootstrap, [source, source], tmp_path / "twice.jsonl.gz"), 30)
        assert asyncio.run(twice) == 300  # a topic named twice is captured once, and the capture ends
        with pytest.raises(ConfigurationError, match="no partition 7"):
            asyncio.run(capture(bootstrap, [source], tmp_path / "none.jsonl.gz", partitions=[0, 7]))
        assert not (tmp_path / "none.jsonl.gz").exists()
    finally:
        asyncio.run(delete_topics(bootstrap, [source, target]))


def test_capture_stops_at_the_end_seen_while_producers_write(broker: EmbeddedBroker, topic: str, tmp_path: Path) -> None:
    bootstrap = broker.bootstrap_servers

    async def scenario() -> int:
        await _produce_live(bootstrap, topic, 200)
        writer = asyncio.create_task(_produce_live(bootstrap, topic, 2000, pause_every=10))  # ~2 s of writing
        await asyncio.sleep(0.05)
        count = await capture(bootstrap, [topic], tmp_path / "live.jsonl.gz")
        await writer
        return count

    count = asyncio.run(scenario())
    assert 200 <= count < 2200


def test_capture_from_an_offset_starts_there_and_past_the_end_captures_nothing(
        broker: EmbeddedBroker, topic: str, tmp_path: Path) -> None:
    bootstrap = broker.bootstrap_servers
    asyncio.run(_produce_live(bootstrap, topic, 40))
    everything = tmp_path / "all.jsonl.gz"
    asyncio.run(capture(bootstrap, [topic], everything, partitions=[0]))
    end = 1 + max(r.offset for r in read_capture(everything))
    assert end >= 10

    part = tmp_path / "part.jsonl.gz"
    assert asyncio.run(capture(bootstrap, [topic], part, partitions=[0], bounds=CaptureBounds(from_offset=4))) == end - 4
    assert [r.offset for r in read_capture(part)] == list(range(4, end))

    past = asyncio.wait_for(capture(bootstrap, [topic], tmp_path / "past.jsonl.gz", bounds=CaptureBounds(from_offset=10_000)), 30)
    assert asyncio.run(past) == 0

    async def followed() -> list[int]:
        """Following from 3 past the end: the first records captured are those at that offset and after."""
        out = tmp_path / "follow.jsonl.gz"
        task = asyncio.create_task(capture(bootstrap, [topic], out, partitions=[0],
                                           bounds=CaptureBounds(from_offset=end + 3, count=2, follow=True)))
        await asyncio.sleep(0.5)
        await _produce_live(bootstrap, topic, 40)  # about 20 more in partition 0
        assert await asyncio.wait_for(task, 30) == 2
        return [r.offset for r in read_capture(out)]

    assert asyncio.run(followed()) == [end + 3, end + 4]


def test_an_out_of_range_error_seeks_the_first_record_kept_or_ends_the_partition(broker: EmbeddedBroker, topic: str) -> None:
    """What a Kafka broker answers for an offset it holds no record at (the embedded
    broker answers an empty fetch, and keeps every record from offset 0): the error
    aiokafka raises then, handled against the real broker's offsets."""
    bootstrap = broker.bootstrap_servers
    asyncio.run(_produce_live(bootstrap, topic, 10))

    async def handled() -> tuple[set[TopicPartition], int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="none")
        await consumer.start()
        try:
            before, past = TopicPartition(topic, 0), TopicPartition(topic, 1)
            consumer.assign([before, past])
            consumer.seek(before, 7)
            done = await seek_past_out_of_range(consumer, OffsetOutOfRangeError({before: -3, past: 10_000}), follow=False)
            return done, await consumer.position(before)
        finally:
            await consumer.stop()

    done, position = asyncio.run(handled())
    assert done == {TopicPartition(topic, 1)}  # past the end: nothing to capture there
    assert position == 0  # before the first record kept: from there


@pytest.mark.redis
@pytest.mark.slow
def test_replays_at_different_speeds_and_batching_agree_with_offline(streamer_replay, streamer_offline) -> None:  # type: ignore[no-untyped-def]
    captures = [CAPTURES / "fraud.jsonl.gz", CAPTURES / "clicks.jsonl.gz"]
    offline = streamer_offline(captures, batch_size=100)
    fast = streamer_replay(captures, batch={"max_size": 512, "max_wait_ms": 50})
    # 20 days of event time in about 4 seconds of wall time, in tiny batches
    paced = streamer_replay(captures, speed=20 * 86400 / 4, batch={"max_size": 3, "max_wait_ms": 1})
    assert len(offline.scores) == 400 and len(offline.recommendations) > 500
    assert fast.differences(offline) == []
    assert paced.differences(offline) == []


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_long_interleaved_replay_stays_readable(broker: EmbeddedBroker, tmp_path: Path) -> None:
    """Two topics alternating record by record (transactions and their labels do): written
    one record per batch, the embedded broker's fetches of such a partition crawl to a halt
    after some ten thousand batches; chunked, the whole replay reads back at once."""
    from streamer.replay.capture_file import CapturedRecord, CaptureWriter

    tag = uuid.uuid4().hex[:6]
    events, labels = f"long-ev-{tag}", f"long-lab-{tag}"
    n = 24_000
    path = tmp_path / "interleaved.jsonl.gz"
    with CaptureWriter(path, {"test": "interleaved"}, 0.0) as writer:
        writer.write_all(CapturedRecord(events if i % 2 else labels, 0, i // 2, 1533081600000 + i, None, b"%d" % i)
                         for i in range(n))
    bootstrap = broker.bootstrap_servers
    asyncio.run(ensure_topics(bootstrap, [events, labels], 1))
    try:
        assert asyncio.run(replay(bootstrap, [path], lead=[labels])) == n
        back = tmp_path / "back.jsonl.gz"
        assert asyncio.run(capture(bootstrap, [events, labels], back)) == n
        values = {topic: [int(r.value) for r in read_capture(back) if r.topic == topic] for topic in (events, labels)}
        assert values[events] == list(range(1, n, 2)) and values[labels] == list(range(0, n, 2))
    finally:
        asyncio.run(delete_topics(bootstrap, [events, labels]))


@pytest.mark.redis
async def test_the_worker_pacer_holds_a_chunk_until_every_partition_stored_up_to_a_day_before_it(settings) -> None:  # type: ignore[no-untyped-def]
    from streamer.replay.capture_file import CapturedRecord
    from streamer.replay.through_worker import WorkerPacer
    from streamer.state.interface import StreamProgress
    from streamer.state.store import RedisStateStore

    day, t0 = 86400.0, 1533081600.0
    store = RedisStateStore(str(settings.redis.url), settings.redis.namespace)
    pacer = WorkerPacer(settings, stall_s=5.0)

    def chunk(ts: float, transactions: int = 1) -> list[CapturedRecord]:
        return [CapturedRecord("transactions", 0, 0, int(ts * 1000), b"c", b"{}")] * transactions

    try:
        await asyncio.wait_for(pacer(chunk(t0, transactions=40)), 1.0)  # nothing sent yet: no wait
        waiting = asyncio.create_task(pacer(chunk(t0 + 3 * day)))
        await store.write_fraud([], progress=StreamProgress(settings.topics.transactions, {0: (10, t0 + 2.5 * day)}))
        await asyncio.sleep(0.2)
        assert not waiting.done()  # partition 1 has stored nothing
        await store.write_fraud([], progress=StreamProgress(settings.topics.transactions, {1: (10, t0 + 1.5 * day)}))
        await asyncio.sleep(0.2)
        assert not waiting.done()  # partition 1 is 1.5 days behind the chunk
        await store.write_fraud([], progress=StreamProgress(settings.topics.transactions, {1: (20, t0 + 2.1 * day)}))
        await asyncio.wait_for(waiting, 1.0)
    finally:
        await pacer.close()
        await store.close()


@pytest.mark.redis
async def test_the_worker_pacer_sends_on_at_once_when_every_transaction_sent_is_stored(settings) -> None:  # type: ignore[no-untyped-def]
    """A capture's labels run days past its last transaction: the chunks after it wait
    for nothing once the worker stored every transaction, not for the stall."""
    from streamer.replay.capture_file import CapturedRecord
    from streamer.replay.through_worker import WorkerPacer
    from streamer.state.interface import StreamProgress
    from streamer.state.store import RedisStateStore

    day, t0 = 86400.0, 1533081600.0
    store = RedisStateStore(str(settings.redis.url), settings.redis.namespace)
    pacer = WorkerPacer(settings, stall_s=30.0)
    transactions = [CapturedRecord("transactions", 0, 0, int(t0 * 1000), b"c", b"{}")] * 30
    labels = [CapturedRecord("fraud-labels", 0, 0, int((t0 + 7 * day) * 1000), b"c", b"{}")]
    try:
        await pacer(transactions)
        waiting = asyncio.create_task(pacer(labels))
        await store.write_fraud([], progress=StreamProgress(settings.topics.transactions, {0: (18, t0)}))
        await asyncio.sleep(0.2)
        assert not waiting.done()  # 12 transactions on their way: the labels are 7 days ahead
        await store.write_fraud([], progress=StreamProgress(settings.topics.transactions, {1: (12, t0)}))
        await asyncio.wait_for(waiting, 1.0)
        await asyncio.wait_for(pacer(labels), 1.0)
    finally:
        await pacer.close()
        await store.close()
