"""High watermarks from fetch responses: asked by two batches at once, answered from a
worker's own fetches (embedded broker)."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.run import produce
from streamer.embedded import EmbeddedBroker
from streamer.worker.highwater import SEEN_IDLE_S, FetchedEnd, FetchedHighWatermarks, fetched_ends
from streamer.worker.topics import assign_topic

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


class WorkerConsumer:
    """A consumer taking the topic's records (of its first ``partitions``) as a worker's
    does, and its view of their ends (``fetched_ends``, as the worker's transport gives
    it). A partition whose fetched records were not taken yet is not fetched again, so it
    takes them."""

    def __init__(self, bootstrap: str, topic: str, partitions: int | None = None) -> None:
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=5,
                                         auto_offset_reset="earliest")
        self.topic = topic
        self.partitions = partitions
        self._taking: asyncio.Task[None] | None = None

    async def __aenter__(self) -> WorkerConsumer:
        await self.consumer.start()
        self.consumer.assign((await assign_topic(self.consumer, self.topic))[: self.partitions])
        self._taking = asyncio.ensure_future(self._take())
        while any(end.request_ms is None for end in self.seen(self.topic).values()):  # fetching, as a running worker is
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._taking is not None
        self._taking.cancel()
        await asyncio.gather(self._taking, return_exceptions=True)
        await self.consumer.stop()

    async def _take(self) -> None:
        while True:
            await self.consumer.getmany(timeout_ms=100)

    def seen(self, topic: str) -> dict[int, FetchedEnd]:
        return fetched_ends(self.consumer, topic)


def _fetches_made(fetched: FetchedHighWatermarks, topic: str) -> list[int | None]:
    """When this one's own consumer last got a fetch response, per partition (None: never)."""
    consumer, tps = fetched.consumers[topic]
    return [consumer.last_poll_timestamp(tp) for tp in tps]


def test_the_workers_own_fetches_answer_when_it_holds_every_partition(broker: EmbeddedBroker, topic: str) -> None:
    """No fetch of its own, and still fresh: records produced after one answer are in the next."""
    bootstrap = broker.bootstrap_servers

    async def asked_twice() -> tuple[dict[int, int], dict[int, int], list[int | None], int]:
        async with WorkerConsumer(bootstrap, topic) as worker:
            fetched = FetchedHighWatermarks(bootstrap, seen=worker.seen)
            try:
                await produce(bootstrap, topic, [(f"k{i}".encode(), b"{}") for i in range(30)])
                first = await fetched.highwaters(topic)
                await produce(bootstrap, topic, [(f"j{i}".encode(), b"{}") for i in range(10)])
                second = await fetched.highwaters(topic)
                return first, second, _fetches_made(fetched, topic), fetched.answered_by_worker
            finally:
                await fetched.close()

    first, second, own_fetches, answered = asyncio.run(asked_twice())
    assert sum(first.values()) == 30 and sum(second.values()) == 40
    assert answered == 2 and own_fetches == [None, None]  # its own consumer never fetched


def test_partitions_the_worker_does_not_hold_are_fetched(broker: EmbeddedBroker, topic: str) -> None:
    bootstrap = broker.bootstrap_servers

    async def asked() -> tuple[dict[int, int], list[int | None], int]:
        async with WorkerConsumer(bootstrap, topic, partitions=1) as worker:  # another worker holds the other
            fetched = FetchedHighWatermarks(bootstrap, seen=worker.seen)
            try:
                await produce(bootstrap, topic, [(f"k{i}".encode(), b"{}") for i in range(30)])
                return await fetched.highwaters(topic), _fetches_made(fetched, topic), fetched.fetched
            finally:
                await fetched.close()

    highs, own_fetches, fetches = asyncio.run(asked())
    assert sum(highs.values()) == 30
    assert fetches == 1 and None not in own_fetches


def test_a_worker_not_fetching_the_partitions_now_is_not_waited_for(broker: EmbeddedBroker, topic: str) -> None:
    """Its last responses are old (a worker draining a backlog fetches when its buffer
    has room): fetched at once."""
    bootstrap = broker.bootstrap_servers

    looked: list[str] = []

    def stale(asked: str) -> dict[int, FetchedEnd]:
        looked.append(asked)
        return {0: FetchedEnd(0, 1, 0.0), 1: FetchedEnd(0, 1, 0.0)}  # responses long ago

    async def asked() -> tuple[dict[int, int], int]:
        fetched = FetchedHighWatermarks(bootstrap, seen=stale)
        try:
            await produce(bootstrap, topic, [(f"k{i}".encode(), b"{}") for i in range(30)])
            await fetched.highwaters(topic)
            return await fetched.highwaters(topic), fetched.fetched
        finally:
            await fetched.close()

    highs, fetches = asyncio.run(asked())
    assert sum(highs.values()) == 30 and fetches == 2
    assert looked == [topic, topic]  # one look each, no wait


def test_a_worker_whose_next_response_does_not_come_is_waited_for_briefly(broker: EmbeddedBroker, topic: str) -> None:
    """Its last responses are recent but no newer one comes: fetched once they are
    ``SEEN_IDLE_S`` old."""
    bootstrap = broker.bootstrap_servers
    frozen: list[float] = []

    def stopped(asked: str) -> dict[int, FetchedEnd]:
        last = FetchedEnd(0, int(frozen[0]), frozen[0] - 5.0)
        return {0: last, 1: last}  # just before the call, then nothing

    async def asked() -> tuple[dict[int, int], float, int, int]:
        fetched = FetchedHighWatermarks(bootstrap, seen=stopped)
        try:
            await produce(bootstrap, topic, [(f"k{i}".encode(), b"{}") for i in range(30)])
            frozen.append(time.time() * 1000.0 - 1.0)
            await fetched.highwaters(topic)  # the consumer started
            frozen[0] = time.time() * 1000.0 - 1.0
            began = time.monotonic()
            highs = await fetched.highwaters(topic)
            return highs, time.monotonic() - began, fetched.fetched, fetched.answered_by_worker
        finally:
            await fetched.close()

    highs, took, fetches, answered = asyncio.run(asked())
    assert sum(highs.values()) == 30 and fetches == 2 and answered == 0
    assert took >= SEEN_IDLE_S - 0.0025  # its last response was up to 2 ms old when the call began


def asked_across_two_responses(broker: EmbeddedBroker, topic: str,
                               since_ms_ago: float | None) -> tuple[dict[int, int], int, int, int]:
    """One call against a worker's view that shows a response to the request in flight
    when the call began (sent 4 ms before it), then the next one (sent at once): the
    highs taken, the calls answered by the worker and fetched, and how many responses
    were looked at. ``since_ms_ago``: the caller saw its input that long before it called."""
    looks: list[dict[int, FetchedEnd]] = []

    def worker_view(asked: str) -> dict[int, FetchedEnd]:
        now = time.time() * 1000.0
        if not looks:  # a response after the call began, to the request in flight before it
            looks.append({0: FetchedEnd(10, int(now) + 1, now - 4.0), 1: FetchedEnd(11, int(now) + 1, now - 4.0)})
        elif len(looks) == 1:  # the next one
            looks.append({0: FetchedEnd(17, int(now) + 1, now), 1: FetchedEnd(13, int(now) + 1, now)})
        return looks[-1]

    async def asked() -> tuple[dict[int, int], int, int]:
        fetched = FetchedHighWatermarks(broker.bootstrap_servers, seen=worker_view)
        try:
            await fetched._consumer(topic)  # noqa: SLF001  (started, so that the call's looks are the ones above)
            since_ms = None if since_ms_ago is None else time.time() * 1000.0 - since_ms_ago
            return await fetched.highwaters(topic, since_ms), fetched.answered_by_worker, fetched.fetched
        finally:
            await fetched.close()

    highs, answered, fetches = asyncio.run(asked())
    return highs, answered, fetches, len(looks)


def test_a_response_to_a_request_sent_before_the_call_is_not_taken(broker: EmbeddedBroker, topic: str) -> None:
    """A response that came after the call began may answer a request sent before it (a
    broker may read the watermark when a request comes, then hold it): the worker's next
    response, to a request sent after, is taken."""
    assert asked_across_two_responses(broker, topic, None) == ({0: 17, 1: 13}, 1, 0, 2)


def test_a_caller_that_saw_its_input_before_it_called_takes_the_responses_since(
        broker: EmbeddedBroker, topic: str) -> None:
    """A caller whose input reached the worker before the call (``since_ms``) takes a
    response to a request sent after that at once, though the request went before the
    call: the broker held its input by then."""
    assert asked_across_two_responses(broker, topic, 10.0) == ({0: 10, 1: 11}, 1, 0, 1)


def test_the_time_a_fetch_request_went_is_recorded(broker: EmbeddedBroker, topic: str) -> None:
    """Per partition, the request behind its latest response went after what came before
    it and before that response came."""
    async def fetched_twice() -> tuple[float, list[FetchedEnd], list[FetchedEnd]]:
        async with WorkerConsumer(broker.bootstrap_servers, topic) as worker:
            before = list(worker.seen(topic).values())
            began = time.time() * 1000.0
            await asyncio.sleep(0.05)  # the worker fetches every 5 ms
            return began, before, list(worker.seen(topic).values())

    began, before, after = asyncio.run(fetched_twice())
    assert len(after) == 2
    for end in after:
        assert end.request_ms is not None and end.response_ms is not None
        assert began <= end.request_ms <= end.response_ms + 1  # response times are whole milliseconds
    assert all(end.request_ms is not None and end.request_ms < began for end in before)


def test_a_consumer_not_started_has_no_request_times(broker: EmbeddedBroker, topic: str) -> None:
    """A worker's view is asked for while its consumer starts: empty, no error."""
    async def before_and_after() -> tuple[dict[int, FetchedEnd], dict[int, FetchedEnd]]:
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap_servers, enable_auto_commit=False)
        before = fetched_ends(consumer, topic)
        await consumer.start()
        try:
            await assign_topic(consumer, topic)
            return before, fetched_ends(consumer, topic)
        finally:
            await consumer.stop()

    before, after = asyncio.run(before_and_after())
    assert before == {} and sorted(after) == [0, 1]
