"""High watermarks of a topic's partitions, as fetch responses report them.

ListOffsets("latest") is not trusted (the embedded broker answers it wrongly), so a
small group-less consumer sits at the end of every partition of the topic and fetches
while a caller waits (it is paused in between, so a busy topic is not fetched
continuously); the few records it brings are skipped. A caller gets watermarks from
fetch responses that arrived after it asked, never older ones. Its fetches wait 1 ms
at the broker (it fetches only while a caller waits, so a short wait costs the broker
little): the fraud pipeline asks once per batch, about 3 ms instead of 6 with 5 ms.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaConsumer, TopicPartition

from streamer.worker.topics import assign_topic

log = logging.getLogger(__name__)


class FetchedHighWatermarks:
    def __init__(self, bootstrap_servers: str, fetch_max_wait_ms: int = 1, max_wait_s: float = 1.0) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.consumers: dict[str, tuple[AIOKafkaConsumer, list[TopicPartition]]] = {}
        self.known: dict[TopicPartition, int] = {}
        self.max_wait_s = max_wait_s
        self._callers: dict[str, int] = {}
        self._starting: dict[str, asyncio.Future[None]] = {}

    async def _consumer(self, topic: str) -> tuple[AIOKafkaConsumer, list[TopicPartition]]:
        """The topic's consumer, started once. A caller cancelled meanwhile (the fraud
        pipeline cancels a fetch it no longer needs) leaves the start running for the next."""
        if topic not in self.consumers:
            if topic not in self._starting:
                self._starting[topic] = asyncio.ensure_future(self._start(topic))
            await asyncio.shield(self._starting[topic])
        return self.consumers[topic]

    async def _start(self, topic: str) -> None:
        try:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap_servers, enable_auto_commit=False,
                fetch_max_wait_ms=self.fetch_max_wait_ms, max_partition_fetch_bytes=1,
                auto_offset_reset="earliest",
            )
            await consumer.start()
            self.consumers[topic] = (consumer, await assign_topic(consumer, topic))
        finally:
            del self._starting[topic]  # a failed start is tried again by the next caller

    async def highwaters(self, topic: str) -> dict[int, int]:
        """High watermarks from fetch responses received after this call began, so that
        everything appended before the caller saw its own input is counted."""
        consumer, tps = await self._consumer(topic)
        self._callers[topic] = self._callers.get(topic, 0) + 1
        consumer.resume(*tps)
        try:
            return await self._fresh(topic, consumer, tps)
        finally:
            self._callers[topic] -= 1
            if not self._callers[topic]:  # paused only once no caller waits (two lanes may ask at once)
                consumer.pause(*tps)  # no fetching between calls: on a busy topic it would load the broker

    async def _fresh(self, topic: str, consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> dict[int, int]:
        since_ms = time.time() * 1000.0
        deadline = time.monotonic() + self.max_wait_s
        while True:
            await consumer.getmany(timeout_ms=0)  # drain what the fetcher brought
            highs = {tp: consumer.highwater(tp) for tp in tps}
            fresh = all((consumer.last_poll_timestamp(tp) or 0) >= since_ms for tp in tps)
            if fresh and all(h is not None for h in highs.values()):
                break
            if time.monotonic() >= deadline:  # never hang a caller on the broker: use what is known
                log.warning("no fresh high watermarks of %s within %.1f s; using older ones", topic, self.max_wait_s)
                highs = {tp: high if high is not None else self.known.get(tp, 0) for tp, high in highs.items()}
                break
            await asyncio.sleep(self.fetch_max_wait_ms / 1000.0)
        self.known.update(highs)  # type: ignore[arg-type]
        for tp, high in highs.items():
            if await consumer.position(tp) < high:  # type: ignore[operator]
                consumer.seek(tp, high)  # type: ignore[arg-type]
        return {tp.partition: int(high) for tp, high in highs.items()}  # type: ignore[arg-type]

    async def close(self) -> None:
        await asyncio.gather(*self._starting.values(), return_exceptions=True)
        for consumer, _ in self.consumers.values():
            await consumer.stop()
        self.consumers.clear()
