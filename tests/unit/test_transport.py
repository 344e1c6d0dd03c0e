"""The engine's Faust consumer: how fetched messages reach the streams (no broker: the
fetch is a list of messages, the streams a recording callback)."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Callable

from faust.types import TP, Message

from streamer.worker import transport
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
