"""High watermarks of a topic's partitions, as fetch responses report them.

ListOffsets("latest") is not trusted (the embedded broker answers it wrongly), so a
small group-less consumer sits at the end of every partition of the topic and fetches
while a caller waits (it is paused in between, so a busy topic is not fetched
continuously); the few records it brings are skipped. Its fetches wait 1 ms at the
broker (it fetches only while a caller waits, so a short wait costs the broker little).

A caller gets watermarks from responses to fetch requests sent after it asked (or
after the time it names, when it saw its input before it asked), never older ones. That
a response came after that is not enough: a broker may read a partition's high
watermark when a request comes and then hold the request for up to its fetch wait (the
embedded broker does; a CI run caught a watermark older than records acknowledged
before the call). aiokafka records when a response came, not when its
request went, so ``request_times`` records that.

A worker's own consumer fetches its partitions continuously, and every fetch response
carries their high watermarks too (``seen``: the worker's view, partition ->
``FetchedEnd``). When the worker holds every partition of
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
from typing import Any, NamedTuple

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from streamer.errors import DependencyError
from streamer.worker.topics import assign_topic

log = logging.getLogger(__name__)

#: A worker whose last response for the partitions is older than this is not fetching
#: them at its usual pace (every ``fetch_max_wait_ms``, 5 ms by default), so a caller
#: fetches at once: while it drains a backlog, its fetches wait on the records in its buffer.
SEEN_IDLE_S = 0.01
#: Longest a caller waits for the worker's own fetch responses before fetching itself:
#: the request in flight when it asks comes back, then the next one, sent after it asked,
#: is held by the broker, each up to the worker's ``fetch_max_wait_ms`` (5 ms). With
#: 10 ms half the checks of batches of one transaction waited out and fetched.
SEEN_WAIT_S = 0.015
#: How often a caller looks at the worker's view while it waits.
SEEN_POLL_S = 0.001
#: Where a fetcher keeps its ``request_times``.
REQUEST_TIMES = "_streamer_request_ms"


class FetchedEnd(NamedTuple):
    """A partition's high watermark as a consumer's latest fetch response reported it."""

    high: int | None
    response_ms: int | None
    """When that response came (ms since the epoch)."""
    request_ms: float | None
    """When the request it answered was sent: the broker held at least what the
    watermark says then. None when not known (sent before ``request_times`` began)."""


Seen = Callable[[str], Mapping[int, FetchedEnd]]
"""A topic -> per partition the worker fetches, its ``FetchedEnd`` (a worker's view)."""


def request_times(consumer: AIOKafkaConsumer) -> dict[TopicPartition, float]:
    """When the fetch request behind each partition's latest response was sent (ms since
    the epoch), for responses from the first call on. Wraps the consumer's fetcher's
    request handler (aiokafka's private ``Fetcher._proc_fetch_request``, the same in
    every version ``pyproject.toml`` allows) once; empty until the consumer has started."""
    fetcher = consumer._fetcher  # noqa: SLF001
    if fetcher is None:  # not started: it has no fetcher yet
        return {}
    times: dict[TopicPartition, float] | None = getattr(fetcher, REQUEST_TIMES, None)
    if times is None:
        times = {}
        setattr(fetcher, REQUEST_TIMES, times)
        handle = fetcher._proc_fetch_request  # noqa: SLF001

        async def timed(assignment: Any, node_id: int, request: Any) -> Any:
            sent_ms = time.time() * 1000.0
            states = {tp: assignment.state_value(tp)
                      for tp in (TopicPartition(topic, partition) for topic, partitions in request.topics
                                 for partition, *_ in partitions)}
            before = {tp: state.timestamp for tp, state in states.items() if state is not None}
            try:
                return await handle(assignment, node_id, request)
            finally:
                for tp, then in before.items():
                    # this response moved the time: it answered this request (one fetch is in
                    # flight per broker). In the same millisecond as the last, it is not known.
                    if states[tp].timestamp != then:
                        times[tp] = sent_ms

        fetcher._proc_fetch_request = timed  # noqa: SLF001
    return times


def fetched_ends(consumer: AIOKafkaConsumer, topic: str) -> dict[int, FetchedEnd]:
    """Per partition of ``topic`` that ``consumer`` holds, its ``FetchedEnd``; empty
    while its partitions are moving. A worker's view (``Seen``)."""
    sent = request_times(consumer)
    try:
        return {tp.partition: FetchedEnd(consumer.highwater(tp), consumer.last_poll_timestamp(tp), sent.get(tp))
                for tp in consumer.assignment() if tp.topic == topic}
    except (AssertionError, RuntimeError):  # a rebalance took a partition meanwhile
        return {}


def answered_after(view: Mapping[int, FetchedEnd], partitions: list[int], since_ms: float) -> dict[int, int] | None:
    """The high watermarks of ``partitions`` in ``view`` when each comes from a response
    to a fetch request sent after ``since_ms``; else None."""
    ends = [view.get(p) for p in partitions]
    if any(end is None or end.high is None or end.request_ms is None or end.request_ms < since_ms for end in ends):
        return None
    return {p: end.high for p, end in zip(partitions, ends)}  # type: ignore[union-attr,misc]


class FetchedHighWatermarks:
    def __init__(self, bootstrap_servers: str, fetch_max_wait_ms: int = 1, max_wait_s: float = 1.0,
                 seen: Seen | None = None) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.seen = seen
        """The worker's own consumer's view (``Seen``), when there is one."""
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.consumers: dict[str, tuple[AIOKafkaConsumer, list[TopicPartition]]] = {}
        self.known: dict[int, int] = {}
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
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers, enable_auto_commit=False,
            fetch_max_wait_ms=self.fetch_max_wait_ms, max_partition_fetch_bytes=1,
            auto_offset_reset="earliest",
        )
        try:
            await consumer.start()
            request_times(consumer)  # from the first fetch on
            tps = await assign_topic(consumer, topic)
            consumer.pause(*tps)  # fetched only while a caller waits on it
        except BaseException:
            await consumer.stop()
            raise
        finally:
            del self._starting[topic]  # a failed start is tried again by the next caller
        self.consumers[topic] = (consumer, tps)

    async def highwaters(self, topic: str, since_ms: float | None = None) -> dict[int, int]:
        """High watermarks from responses to fetch requests sent after ``since_ms`` (wall
        clock, ms since the epoch; by default, and at the latest, when this call began),
        so that everything appended before the caller saw its own input is counted: the
        worker's own when it holds every partition (``seen``), else this one's. A caller
        that saw its input before it called passes when: the worker's responses since
        then may answer it at once, where a response to a request sent after the call is
        one of the worker's fetches away (up to its fetch wait at the broker)."""
        try:
            return await self._highwaters(topic, since_ms)
        except KafkaError as exc:  # the batch is retried, not its transactions dead-lettered
            raise DependencyError(f"kafka high watermarks of {topic}: {exc}") from exc

    async def _highwaters(self, topic: str, since_ms: float | None) -> dict[int, int]:
        now_ms = time.time() * 1000.0
        since_ms = now_ms if since_ms is None else min(since_ms, now_ms)
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
        """The worker's high watermarks of every partition, from responses to requests
        sent after ``since_ms``; None when it does not hold them all, when one's last
        response is older than ``SEEN_IDLE_S`` (it is not fetching them now), or when
        none such came within ``SEEN_WAIT_S``."""
        if self.seen is None:
            return None
        deadline = time.monotonic() + SEEN_WAIT_S
        while True:
            view = self.seen(topic)
            ends = [view.get(p) for p in partitions]
            responses = [end.response_ms for end in ends
                         if end is not None and end.high is not None and end.response_ms is not None]
            if len(responses) < len(partitions):
                return None
            highs = answered_after(view, partitions, since_ms)
            if highs is not None:
                return highs
            oldest = min(responses)
            if time.monotonic() >= deadline or time.time() * 1000.0 - oldest > SEEN_IDLE_S * 1000.0:
                return None
            await asyncio.sleep(SEEN_POLL_S)

    async def _fresh(self, topic: str, consumer: AIOKafkaConsumer, tps: list[TopicPartition],
                     since_ms: float) -> dict[int, int]:
        deadline = time.monotonic() + self.max_wait_s
        partitions = [tp.partition for tp in tps]
        while True:
            await consumer.getmany(timeout_ms=0)  # drain what the fetcher brought: a partition holding records is not fetched
            view = fetched_ends(consumer, topic)
            highs = answered_after(view, partitions, since_ms)
            if highs is not None:
                break
            if time.monotonic() >= deadline:  # never hang a caller on the broker: use what is known
                log.warning("no fresh high watermarks of %s within %.1f s; using older ones", topic, self.max_wait_s)
                highs = {p: end.high if (end := view.get(p)) is not None and end.high is not None else self.known.get(p, 0)
                         for p in partitions}
                break
            await asyncio.sleep(self.fetch_max_wait_ms / 1000.0)
        self.known.update(highs)
        for tp in tps:
            if await consumer.position(tp) < highs[tp.partition]:
                consumer.seek(tp, highs[tp.partition])
        return highs

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
