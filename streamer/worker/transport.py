"""The engine's Faust Kafka transport, registered as the ``streamer-kafka://`` scheme.

Five changes to faust-streaming's aiokafka transport, all about speed (and two views:
``Consumer.fetched_ends``, the high watermarks its fetch responses reported, and each
record's ``received_ms``, when its fetch was handed over):

* The consumer waits at most ``fetch_max_wait_ms`` per fetch. faust-streaming hard-codes
  1500 ms; brokers that ignore fetch-min-bytes (the embedded Tansu does) then hold every
  fetch that long, which puts 1.5 s on every event's latency.
* A fetch reaches the streams as one message per partition, a ``RecordRun``: its value
  is the partition's records of that fetch (``SourceRecord``), its offset the last
  one's. Faust's per-message path (the conductor's flow control and decoding, the
  stream's queue, events, sensors and acknowledgements) then runs once per partition
  and fetch instead of once per record: it was about half of the Python a worker ran
  per event. Acknowledging a run acknowledges every offset it spans.
* Fetched runs are handed to the streams one fetch at a time. Faust's drain loop
  races each message's delivery against the consumer's flow being suspended (a
  rebalance), stopped or crashed: four tasks and an ``asyncio.wait`` per message. Here
  one race covers the delivery of a whole fetch; a rebalance still interrupts it at
  once, between two runs, and what was not delivered is fetched again from the
  committed offsets.
* While a partition is paused because its stream's buffer is full, fetches wait at most
  10 ms instead of a second: Faust resumes the partition when the buffer drains, but a
  fetch already waiting on the other partitions (idle ones) would hold the worker idle
  for the rest of its second.
* The Kafka consumer runs on the worker's event loop (``ConsumerOnTheLoop``), not in a
  thread with a loop of its own: that thread's every fetch, and every call the agents
  make to it, took the GIL from the event loop and handed results across with
  thread-safe callbacks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message
from faust.types.tuples import ConsumerMessage, ack_lock
from mode.utils.futures import maybe_async, notify

from streamer.records import SourceRecord
from streamer.worker.highwater import FetchedEnd, fetched_ends

SCHEME = "streamer-kafka"
YIELD_EVERY = 8  # runs delivered between two turns given to the rest of the loop
PAUSED_FETCH_TIMEOUT_S = 0.01


class RecordRun(ConsumerMessage):
    """One partition's records from one fetch, delivered to the streams as one message:
    ``value`` is the records, ``offset`` the last one's, ``first_offset`` the first
    offset the run covers. Offsets the broker skipped inside the run (compaction,
    transaction markers) are covered too: acknowledging the run lets commits pass them."""

    __slots__ = ("first_offset",)

    def __init__(self, tp: TP, records: Sequence[SourceRecord], first_offset: int, generation_id: int | None) -> None:
        last = records[-1]
        timestamp = last.timestamp_ms / 1000.0 if last.timestamp_ms is not None else None
        super().__init__(tp.topic, tp.partition, last.offset, timestamp, 0, None, None, records, None,  # type: ignore[arg-type]
                         0, 0, tp, generation_id=generation_id)
        self.first_offset = first_offset

    @property
    def records(self) -> Sequence[SourceRecord]:
        return self.value  # type: ignore[return-value]

    def after(self, offset: int) -> RecordRun | None:
        """The run without its records at or below ``offset`` (delivered before a seek
        back), or None when nothing is left."""
        if offset < self.first_offset:
            return self
        rest = [r for r in self.records if r.offset > offset]
        return RecordRun(self.tp, rest, offset + 1, self.generation_id) if rest else None


def source_records(records: Sequence[Any], received_ms: float | None = None) -> list[SourceRecord]:
    """aiokafka's consumer records as the pipelines take them, handed over at ``received_ms``."""
    return [
        SourceRecord(r.topic, r.partition, r.offset, r.key, r.value,
                     r.timestamp if r.timestamp is not None and r.timestamp >= 0 else None,
                     tuple(r.headers) if r.headers else (), received_ms)
        for r in records
    ]


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = int(getattr(self.app, "streamer_fetch_max_wait_ms", 5))
        return consumer


class ConsumerOnTheLoop(ConsumerThread):
    """Faust's consumer service, run as a task on the worker's event loop instead of in a
    thread of its own: its calls are awaited directly rather than queued to the thread.

    Faust runs it in a thread so that a blocked event loop does not stop its fetches and
    heartbeats. The worker's loop blocks for one step of a batch at a time (a few hundred
    milliseconds at most for a backlog batch of 4,096), far within the group's session
    timeout (``STREAMER_KAFKA_SESSION_TIMEOUT_S``, heartbeats every fifth of it); the
    thread's fetches and the hand-overs cost the worker CPU on every fetch. Side by side
    on the 2-core machine (docs/benchmarks.md), two workers offered 15,000
    transactions/s spent about 3 % less CPU per transaction and the broker about a sixth
    less; one worker drained transactions about 4 % faster."""

    def __init__(self, consumer: Any, *, loop: asyncio.AbstractEventLoop, **kwargs: Any) -> None:
        super().__init__(consumer, loop=loop, thread_loop=loop, **kwargs)
        self._serving: asyncio.Task[None] | None = None  # the running service, held so it is not collected

    async def start(self) -> None:
        """``ServiceThread.start``, with the service's ``_serve`` as a task where the
        thread would run it: returns once the consumer started, raises if it could not."""
        self._thread_started.set()
        self._thread_running = asyncio.Future(loop=self.parent_loop)
        self._serving = self.parent_loop.create_task(self._serve())
        try:
            await self._thread_running
        finally:
            self._thread_running = None

    async def call_thread(self, fun: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await maybe_async(fun(*args, **kwargs))

    async def _gather_remaining_tasks(self) -> None:
        """Nothing: the thread's version cancels every task left on its loop, which is
        the worker's here. The consumer's own tasks end as it stops (``on_thread_stop``)."""


class Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerOnTheLoop(self, loop=self.loop, beacon=self.beacon)

    def fetched_ends(self, topic: str) -> dict[int, FetchedEnd]:
        """``streamer.worker.highwater.fetched_ends`` of this consumer; empty while it is
        not running."""
        consumer = getattr(self._thread, "_consumer", None)
        return {} if consumer is None else fetched_ends(consumer, topic)

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        """One ``RecordRun`` per partition of a fetch. Keeps the checks of Faust's own:
        nothing while the flow is stopped (a rebalance: seek back to the committed
        offsets instead), nothing once the group's generation changed, and only
        partitions that are active or whose buffer just filled up."""
        records, active_partitions = await self._wait_next_records(timeout)
        if records is None or self.should_stop:
            return
        received_ms = time.time() * 1000.0  # the records' ``received_ms``: they reached the worker by now
        if not self.flow_active:
            try:
                await self.perform_seek()
            except Exception as exc:
                self.log.warning("seeking back while the flow is stopped failed: %r", exc)
            return
        generation_id = self.app.consumer_generation_id
        for tp, fetched in records.items():
            if not self.flow_active or self.app.consumer_generation_id != generation_id:
                break
            if fetched and (active_partitions is None or tp in active_partitions or tp in self._buffered_partitions):
                yield tp, RecordRun(tp, source_records(fetched, received_ms), fetched[0].offset, generation_id)

    def ack(self, message: Message) -> bool:
        """Faust's acknowledgement, for a ``RecordRun`` every offset it covers at once."""
        if not isinstance(message, RecordRun):
            return bool(super().ack(message))
        with ack_lock:
            if message.acked:
                return False
            message.acked = True
            tp = message.tp
            try:
                if not self.app.topics.acks_enabled_for(message.topic):
                    return False
                committed = self._committed_offset[tp]
                start = message.first_offset if committed is None else max(message.first_offset, committed)
                acked_index = self._acked_index[tp]
                offsets = [o for o in range(start, message.offset + 1) if o not in acked_index]
                self._unacked_messages.discard(message)
                if not offsets:
                    return False
                acked_index.update(offsets)
                self._acked[tp].extend(offsets)
                self._n_acked += len(offsets)
                return True
            finally:
                notify(self._waiting_for_ack)

    async def _drain_messages(self, fetcher: Any) -> None:
        """Fetch and deliver until the consumer or ``fetcher`` stops (the Fetcher
        service's task). Keeps the bookkeeping of Faust's loop: read offsets, offsets
        skipped by the broker (gaps, so commits can pass them) and commits every
        ``broker_commit_every`` acknowledgements."""
        try:
            while not (self._stopped.is_set() or fetcher._stopped.is_set()):
                if self.suspend_flow.is_set():  # a rebalance: wait for it instead of spinning
                    await self.wait(self.can_resume_flow.wait())
                    continue
                self.diag.set_flag(CONSUMER_FETCHING)
                try:
                    await self.sleep(0)
                    if not self.should_stop:
                        messages = self.getmany(timeout=self._fetch_timeout())
                        await self.wait_first(self._deliver(messages), self.suspend_flow.wait())
                finally:
                    self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if not self.transport.app.should_stop:
                raise
            self.log.info("Broker stopped consumer, shutting down...")
        except asyncio.CancelledError:
            if not self.transport.app.should_stop:
                raise
            self.log.info("Consumer shutting down for user cancel.")
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise

    def _fetch_timeout(self) -> float:
        """A partition paused for a full stream buffer resumes as soon as the buffer
        drains, but a fetch in flight asks only for the other partitions and may wait its
        whole timeout on them: fetch briefly while one is paused."""
        return PAUSED_FETCH_TIMEOUT_S if self._buffered_partitions else 1.0

    async def _deliver(self, messages: AsyncIterator[tuple[TP, Message]]) -> None:
        read_offset = self._read_offset
        since_yield = 0
        async for tp, message in messages:
            if not self.flow_active:
                break  # a rebalance began: what is left is fetched again once it is over
            since_yield += 1
            if since_yield > YIELD_EVERY:
                await asyncio.sleep(0)
                since_yield = 0
            offset, last = message.offset, read_offset[tp]
            if isinstance(message, RecordRun) and last is not None:
                # Faust starts a partition's read offset at its committed offset, the
                # next to read, then keeps the last one delivered: only what lies below
                # is skipped, as in Faust's own loop.
                run = message.after(last - 1)
                if run is None:
                    continue  # delivered before a seek back
                message, first = run, run.first_offset
            else:
                first = offset
                if last is not None and offset < last:
                    continue  # delivered before a seek back
            if last and first - last > 1 and self.app.topics.acks_enabled_for(message.topic):
                await self._add_gap(tp, last + 1, first - 1)
            if self._commit_every is not None and self._n_acked >= self._commit_every:
                self._n_acked = 0
                await self.commit()
            await self.callback(message)
            read_offset[tp] = offset


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer


TRANSPORTS.data[SCHEME] = f"{__name__}:Transport"
