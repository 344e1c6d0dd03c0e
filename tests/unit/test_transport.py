"""The engine's Faust consumer: how fetched messages reach the streams (no broker: the
fetch is a list of messages, the streams a recording callback)."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable

from aiokafka.structs import ConsumerRecord
from faust.types import TP, Message

from streamer.records import SourceRecord
from streamer.worker import transport
from streamer.worker.app import HeldRuns
from streamer.worker.main import GC_FIRST_THRESHOLD, make_worker, tune_gc
from tests.support import idle_app

TX = TP("transactions", 0)


def consumer_of_new_app() -> transport.Consumer:
    consumer = idle_app().consumer
    assert isinstance(consumer, transport.Consumer)
    return consumer


def message(tp: TP, offset: int) -> Message:
    return Message(tp.topic, tp.partition, offset, 0.0, 0, None, b"key", b"value", None)


async def fetch(*messages: Message) -> AsyncIterator[tuple[TP, Message]]:
    for m in messages:
        yield m.tp, m


def recording(consumer: transport.Consumer, on_message: Callable[[Message], None] = lambda m: None) -> list[int]:
    delivered: list[int] = []

    async def callback(m: Message) -> None:
        delivered.append(m.offset)
        on_message(m)

    consumer.callback = callback
    return delivered


def test_a_fetch_is_delivered_in_order_past_what_was_read_and_skipped_offsets_are_noted() -> None:
    async def scenario() -> None:
        consumer = consumer_of_new_app()
        delivered = recording(consumer)
        consumer.app.topics._acking_topics.add(TX.topic)  # as once the agents subscribed
        consumer._read_offset[TX] = 5
        await consumer._deliver(fetch(*(message(TX, o) for o in (3, 5, 6, 9))))
        assert delivered == [5, 6, 9]
        assert consumer._read_offset[TX] == 9
        gap = consumer._gap[TX]
        assert gap.overlaps(7) and gap.overlaps(8) and not gap.overlaps(6)  # commits may pass 7 and 8

    asyncio.run(scenario())


def test_offsets_are_committed_once_enough_are_acknowledged() -> None:
    async def scenario() -> None:
        consumer = consumer_of_new_app()
        commits: list[int] = []

        async def commit() -> bool:
            commits.append(len(delivered))
            return True

        consumer.commit = commit  # type: ignore[method-assign]
        consumer._commit_every = 2
        delivered = recording(consumer, lambda m: setattr(consumer, "_n_acked", consumer._n_acked + 1))
        await consumer._deliver(fetch(*(message(TX, o) for o in range(5))))
        assert delivered == [0, 1, 2, 3, 4]
        assert commits == [2, 4]  # before the third and the fifth message

    asyncio.run(scenario())


def test_a_rebalance_stops_the_delivery_of_a_fetch_between_two_messages() -> None:
    async def scenario() -> None:
        consumer = consumer_of_new_app()
        delivered = recording(consumer, lambda m: consumer.stop_flow() if m.offset == 1 else None)
        fetched = [message(TX, o) for o in range(6)]

        async def getmany(timeout: float) -> AsyncIterator[tuple[TP, Message]]:
            async for item in fetch(*fetched):
                yield item
                await asyncio.sleep(0)  # the rebalance's task gets its turn

        consumer.getmany = getmany  # type: ignore[method-assign]

        class Fetcher:
            _stopped = asyncio.Event()

        drain = asyncio.ensure_future(consumer._drain_messages(Fetcher()))
        await asyncio.sleep(0.1)
        assert delivered == [0, 1]  # the rest is fetched again after the rebalance
        assert consumer._read_offset[TX] == 1
        assert not drain.done()  # waiting for the flow to resume, not spinning
        Fetcher._stopped.set()
        consumer.resume_flow()
        await asyncio.wait_for(drain, 5)

    asyncio.run(scenario())


def kafka_record(tp: TP, offset: int) -> ConsumerRecord:  # type: ignore[type-arg]
    return ConsumerRecord(tp.topic, tp.partition, offset, 1_700_000_000_000 + offset, 0, b"card", b"{}", None, 4, 2,
                          [("trace", b"t")])


def run_of(tp: TP, offsets: list[int]) -> transport.RecordRun:
    records = transport.source_records([kafka_record(tp, o) for o in offsets])
    return transport.RecordRun(tp, records, offsets[0], generation_id=1)


def test_a_fetch_reaches_the_streams_as_one_run_of_records_per_partition() -> None:
    async def scenario() -> None:
        consumer = consumer_of_new_app()
        other = TP("transactions", 1)
        fetched = {TX: [kafka_record(TX, o) for o in (7, 8, 10)], other: [kafka_record(other, 3)]}

        async def wait_next_records(timeout: float) -> tuple[dict, None]:  # type: ignore[type-arg]
            return fetched, None

        consumer._wait_next_records = wait_next_records  # type: ignore[method-assign]
        before = time.time() * 1000.0
        runs = [message async for _, message in consumer.getmany(1.0)]
        after = time.time() * 1000.0
        assert [(r.tp, r.first_offset, r.offset) for r in runs] == [(TX, 7, 10), (other, 3, 3)]
        assert all(isinstance(r, transport.RecordRun) for r in runs)
        received = runs[0].records[2].received_ms
        assert runs[0].records[2] == SourceRecord("transactions", 0, 10, b"card", b"{}", 1_700_000_000_010,
                                                  (("trace", b"t"),), received)
        assert received is not None and before <= received <= after  # when the fetch was handed over
        assert {r.received_ms for run in runs for r in run.records} == {received}

    asyncio.run(scenario())


def test_acknowledging_a_run_lets_commits_pass_every_offset_it_covers() -> None:
    consumer = consumer_of_new_app()
    consumer.app.topics._acking_topics.add(TX.topic)
    first, second = run_of(TX, [0, 1, 3]), run_of(TX, [4, 5])  # offset 2 skipped by the broker
    for run in (first, second):
        run.incref()
    first.ack(consumer)
    assert consumer._n_acked == 4
    assert consumer._new_offset(TX) == 4  # past the skipped offset
    second.ack(consumer)
    second.ack(consumer)  # once is enough
    assert consumer._n_acked == 6
    assert consumer._new_offset(TX) == 6


def test_a_run_fetched_again_after_a_seek_delivers_from_the_offset_sought() -> None:
    async def scenario() -> None:
        consumer = consumer_of_new_app()
        delivered: list[list[int]] = []

        async def callback(m: Message) -> None:
            delivered.append([r.offset for r in m.value])  # type: ignore[union-attr]

        consumer.callback = callback
        consumer._read_offset[TX] = 12  # as after a seek to the committed offset 12
        await consumer._deliver(fetch(run_of(TX, [8, 9]), run_of(TX, [10, 11, 12, 13])))
        assert delivered == [[12, 13]]
        assert consumer._read_offset[TX] == 13

    asyncio.run(scenario())


class HeldEvent:
    def __init__(self, run: transport.RecordRun, acked: list[int]) -> None:
        self.message = run
        self.acked = acked

    def ack(self) -> None:
        self.acked.append(self.message.offset)


def test_a_run_is_let_go_only_once_its_last_record_is_delivered() -> None:
    acked: list[int] = []
    held = HeldRuns()
    runs = [run_of(TX, [0, 1, 2]), run_of(TX, [3, 4]), run_of(TP("transactions", 1), [0])]
    for run in runs:
        held.hold(HeldEvent(run, acked))
    assert [r.refcount for r in runs] == [1, 1, 1]  # the stream's own step no longer lets go of them
    held.release(list(runs[0].records[:2]))
    assert acked == []  # record 2 of the first run is still in a later batch
    last = held.release([runs[0].records[2], runs[1].records[0], *runs[2].records])
    assert acked == [2, 0]
    assert last == {0: 3, 1: 0}  # each partition's last offset delivered (what the metrics' lag reads)
    held.release(list(runs[1].records[1:]))
    assert acked == [2, 0, 4]


def test_fetches_wait_briefly_while_a_partition_is_paused_for_a_full_buffer() -> None:
    async def scenario() -> None:
        consumer = consumer_of_new_app()
        consumer._active_partitions = {TX, TP("clickstream", 0)}
        assert consumer._fetch_timeout() == 1.0
        consumer.on_buffer_full(TX)
        assert consumer._fetch_timeout() == transport.PAUSED_FETCH_TIMEOUT_S
        consumer.on_buffer_drop(TX)
        assert consumer._fetch_timeout() == 1.0

    asyncio.run(scenario())


def test_the_worker_leaves_the_log_level_alone() -> None:
    """Faust's terminal spinner would lower the root logger to DEBUG at WARNING."""
    loop = asyncio.new_event_loop()
    try:
        worker = make_worker(idle_app(), loop, "warning")
        logger = logging.getLogger("streamer-test-root")
        logger.addHandler(logging.NullHandler())
        logger.setLevel(logging.WARNING)
        worker.on_setup_root_logger(logger, logging.WARNING)
        assert logger.level == logging.WARNING
    finally:
        loop.close()


def test_the_worker_collects_garbage_less_often_and_skips_what_it_loaded() -> None:
    threshold = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == (GC_FIRST_THRESHOLD, *threshold[1:])
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
