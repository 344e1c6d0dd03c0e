"""The engine's Faust Kafka transport, registered as the ``streamer-kafka://`` scheme.

Two changes to faust-streaming's aiokafka transport, both about speed:

* The consumer waits at most ``fetch_max_wait_ms`` per fetch. faust-streaming hard-codes
  1500 ms; brokers that ignore fetch-min-bytes (the embedded Tansu does) then hold every
  fetch that long, which puts 1.5 s on every event's latency.
* Fetched messages are handed to the streams one fetch at a time. Faust's drain loop
  races each message's delivery against the consumer's flow being suspended (a
  rebalance), stopped or crashed: four tasks and an ``asyncio.wait`` per message, about
  a third of a worker's time per event on these machines. Here one race covers the
  delivery of a whole fetch; a rebalance still interrupts it at once, between two
  messages, and what was not delivered is fetched again from the committed offsets.
* While a partition is paused because its stream's buffer is full, fetches wait at most
  10 ms instead of a second: Faust resumes the partition when the buffer drains, but a
  fetch already waiting on the other partitions (idle ones) would hold the worker idle
  for the rest of its second.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message

SCHEME = "streamer-kafka"
YIELD_EVERY = 100  # messages delivered between two turns given to the rest of the loop
PAUSED_FETCH_TIMEOUT_S = 0.01


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = int(getattr(self.app, "streamer_fetch_max_wait_ms", 5))
        return consumer


class Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:
        """Fetch and deliver until the consumer or ``fetcher`` stops (the Fetcher
        service's task). Keeps the bookkeeping of Faust's loop: read offsets, offsets
        skipped by the broker (gaps, so commits can pass them) and commits every
        ``broker_commit_every`` acknowledgements."""
        try:
            while not (self._stopped.is_set() or fetcher._stopped.is_set()):
                if self.suspend_flow.is_set():  # a rebalance: wait for it instead of spinning
                    await self.wait(self.can_resume_flow)
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
            if last is not None and offset < last:
                continue  # delivered before a seek back
            if last and offset - last > 1 and self.app.topics.acks_enabled_for(message.topic):
                await self._add_gap(tp, last + 1, offset)
            if self._commit_every is not None and self._n_acked >= self._commit_every:
                self._n_acked = 0
                await self.commit()
            await self.callback(message)
            read_offset[tp] = offset


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer


TRANSPORTS.data[SCHEME] = f"{__name__}:Transport"
