"""High watermarks of a topic's partitions, as fetch responses report them.

ListOffsets("latest") is not trusted (the embedded broker answers it wrongly), so a
small group-less consumer sits at the end of every partition of the topic and fetches
while a caller waits (it is paused in between, so a busy topic is not fetched
continuously); the few records it brings are skipped. A caller gets watermarks from
fetch responses that arrived after it asked, never older ones. Its fetches wait 1 ms
at the broker (it fetches only while a caller waits, so a short wait costs the broker
little): the fraud pipeline asks once per batch, about 3 ms instead of 6 with 5 ms.

A worker's own consumer fetches its partitions continuously, and every fetch response
carries their high watermarks too (``seen``: the worker's view, partition -> high
watermark and when its last response came). When the worker holds every partition of
the topic and is fetching them at its usual pace, a caller waits for the worker's next
responses instead (up to ``SEEN_WAIT_S``; they come every few milliseconds): the same
guarantee, without a fetch of its own. Each of those fetches wakes the broker, and on
the 2-core benchmark machine a socket write that wakes another process cost about
0.4 ms of the worker's loop; the fraud pipeline asks on every batch while the label
stream is quiet (docs/benchmarks.md, 2026-12-04 from 15:21 UTC).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition

from streamer.worker.topics import assign_topic

log = logging.getLogger(__name__)

#: Longest a caller waits for the worker's own fetch responses before fetching itself;
#: and a worker whose last response is older than this is not fetching the partitions at
#: its usual pace (every ``fetch_max_wait_ms``, 5 ms by default), so the caller fetches at
#: once: while it drains a backlog, its fetches wait on the records in its buffer.
SEEN_WAIT_S = 0.01
#: How often a caller looks at the worker's view while it waits.
SEEN_POLL_S = 0.001

Seen = Callable[[str], Mapping[int, tuple[int | None, int | None]]]
"""A topic -> per partition the worker fetches, its high watermark and the time of its
last fetch response (ms since the epoch), either None before the first."""


def fetched_ends(consumer: AIOKafkaConsumer, topic: str) -> dict[int, tuple[int | None, int | None]]:
    """Per partition of ``topic`` that ``consumer`` holds: its high watermark and the time
    of its last fetch response (ms since the epoch), as the responses reported them;
    empty while its partitions are moving. A worker's view (``Seen``)."""
    try:
        return {tp.partition: (consumer.highwater(tp), consumer.last_poll_timestamp(tp))
                for tp in consumer.assignment() if tp.topic == topic}
    except (AssertionError, RuntimeError):  # a rebalance took a partition meanwhile
        return {}


class FetchedHighWatermarks:
    def __init__(self, bootstrap_servers: str, fetch_max_wait_ms: int = 1, max_wait_s: float = 1.0,
                 seen: Seen | None = None) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.seen = seen
        """The worker's own consumer's view (``Seen``), when there is one."""
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.consumers: dict[str, tuple[AIOKafkaConsumer, list[TopicPartition]]] = {}
        self.known: dict[TopicPartition, int] = {}
        self.max_wait_s = max_wait_s
        self.answered_by_worker = 0
        self.fetched = 0
        """Calls answered from the worker's fetch responses, and by fetching, since ``report``."""
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
            tps = await assign_topic(consumer, topic)
            consumer.pause(*tps)  # fetched only while a caller waits on it
            self.consumers[topic] = (consumer, tps)
        finally:
            del self._starting[topic]  # a failed start is tried again by the next caller

    async def highwaters(self, topic: str) -> dict[int, int]:
        """High watermarks from fetch responses received after this call began, so that
        everything appended before the caller saw its own input is counted: the
        worker's own when it holds every partition (``seen``), else this one's."""
        since_ms = time.time() * 1000.0
        consumer, tps = await self._consumer(topic)
        highs = await self._seen_since(topic, [tp.partition for tp in tps], since_ms)
        if highs is not None:
            self.answered_by_worker += 1
            return highs
        self.fetched += 1
        self._callers[topic] = self._callers.get(topic, 0) + 1
        consumer.resume(*tps)
        try:
            return await self._fresh(topic, consumer, tps, since_ms)
        finally:
            self._callers[topic] -= 1
            if not self._callers[topic]:  # paused only once no caller waits (two lanes may ask at once)
                consumer.pause(*tps)  # no fetching between calls: on a busy topic it would load the broker

    async def _seen_since(self, topic: str, partitions: list[int], since_ms: float) -> dict[int, int] | None:
        """The worker's high watermarks of every partition, from responses that came
        after ``since_ms``; None when it does not hold them all, when one's last
        response is older than ``SEEN_WAIT_S`` (it is not fetching them now), or when
        no such response came within ``SEEN_WAIT_S``."""
        if self.seen is None:
            return None
        deadline = time.monotonic() + SEEN_WAIT_S
        while True:
            view = self.seen(topic)
            if any(p not in view or view[p][0] is None or view[p][1] is None for p in partitions):
                return None
            last = [view[p][1] for p in partitions]
            if min(last) >= since_ms:  # type: ignore[type-var]
                return {p: int(view[p][0]) for p in partitions}  # type: ignore[arg-type]
            if time.monotonic() >= deadline or time.time() * 1000.0 - min(last) > SEEN_WAIT_S * 1000.0:  # type: ignore[operator]
                return None
            await asyncio.sleep(SEEN_POLL_S)

    async def _fresh(self, topic: str, consumer: AIOKafkaConsumer, tps: list[TopicPartition],
                     since_ms: float) -> dict[int, int]:
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

    def report(self) -> str | None:
        """How the calls since the last report were answered; None when there were none."""
        if not self.answered_by_worker and not self.fetched:
            return None
        line = (f"high watermarks: {self.answered_by_worker} checks answered from the worker's own fetches, "
                f"{self.fetched} fetched")
        self.answered_by_worker = self.fetched = 0
        return line

    async def close(self) -> None:
        await asyncio.gather(*self._starting.values(), return_exceptions=True)
        for consumer, _ in self.consumers.values():
            await consumer.stop()
        self.consumers.clear()
