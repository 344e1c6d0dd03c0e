"""Where output records go: a ``Sink`` hands a batch to the broker, and the batch's
delivery completes once every record is acknowledged.

``Sink.send`` returns as soon as the records are queued, in order after those sent
before, with their ``Delivery``: the worker processes its next batch while this one's
acknowledgements travel (``streamer.worker.batching``). ``publish`` is both steps.
``KafkaSink`` uses its own aiokafka producer with ``acks="all"`` (no idempotent or
transactional producer: processing is at-least-once, and outputs carry their input's
id so a downstream consumer can drop the rare duplicate after a crash). ``ListSink``
keeps records in memory for unit tests and the offline replay.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from streamer.errors import DependencyError
from streamer.output.partitioning import key_partitions
from streamer.records import OutputRecord

Delivery = Awaitable[None]
"""Completes once every record of a sent batch is acknowledged; raises
``DependencyError`` when the broker failed any of them."""


class Sink(Protocol):
    async def start(self) -> None: ...

    async def send(self, records: Sequence[OutputRecord]) -> Delivery:
        """Queue the records after those sent before; returns their delivery."""
        ...

    async def stop(self) -> None: ...


async def publish(sink: Sink, records: Sequence[OutputRecord]) -> None:
    """Send the records and wait until the broker acknowledged all of them."""
    await (await sink.send(records))


class KafkaSink:
    """No linger by default: the sink hands the producer whole record batches, and
    aiokafka queues one batch per partition at a time, so waiting for more records
    only delays each batch (2 ms until 2026-12-07: about 2 ms more from a worker's send
    to its outputs being readable, docs/benchmarks.md)."""

    def __init__(self, bootstrap_servers: str, *, linger_ms: int = 0, max_request_size: int = 2 * 1024 * 1024) -> None:
        self.options = {
            "bootstrap_servers": bootstrap_servers,
            "acks": "all",
            "linger_ms": linger_ms,
            "max_request_size": max_request_size,
            "max_batch_size": 1024 * 1024,
        }
        self.producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Connect on first use: aiokafka clients belong to the loop that made them."""
        async with self._lock:
            if self.producer is None:
                producer = AIOKafkaProducer(**self.options)
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()  # its connections and tasks; the next send starts anew
                    raise
                self.producer = producer

    async def send(self, records: Sequence[OutputRecord]) -> Delivery:
        """Records grouped per partition (by key, where Kafka's default partitioner puts
        them) into record batches handed to the producer whole, several times cheaper
        than one ``send()`` per record. The producer sends a partition's batches in the
        order they were queued."""
        if not records:
            return _acknowledged([])
        try:
            await self.start()  # a broker down at the first send is retried like one down later
            assert self.producer is not None
            acks = await enqueue_batched(self.producer, [(r.topic, None, r.key, r.value, r.headers, None) for r in records])
        except KafkaError as exc:
            raise DependencyError(f"kafka publish failed: {exc}") from exc
        return _acknowledged(acks)

    async def stop(self) -> None:
        async with self._lock:
            if self.producer is not None:
                await self.producer.stop()
                self.producer = None


#: A record to send: topic, partition (None: by key), key, value, headers, timestamp ms (None: now).
Outgoing = tuple[str, int | None, bytes | None, bytes | None, Sequence[tuple[str, bytes | None]], int | None]


async def topic_partitions(producer: AIOKafkaProducer, topic: str) -> list[int]:
    """A topic's partitions by id, as the producer's metadata knows them now: partitions
    added to a topic are used from the producer's next metadata refresh
    (``metadata_max_age_ms``, 5 minutes by default), as by aiokafka's own ``send()``.
    A dictionary lookup once the topic is known."""
    return sorted(await producer.partitions_for(topic))


async def enqueue_batched(producer: AIOKafkaProducer, records: Sequence[Outgoing]) -> list[asyncio.Future[object]]:
    """Queue records grouped per partition as whole record batches; returns the
    batches' acknowledgements. Several times cheaper than one ``send()`` per record,
    and fewer, larger batches in the broker's log (the embedded broker's fetches slow
    down with the number of batches in a partition). A record without a partition goes
    where Kafka's default partitioner puts its key (``streamer.output.partitioning``, the
    whole batch's keys at once)."""
    chosen = [record[1] for record in records]
    unplaced: dict[str, list[int]] = {}
    for index, record in enumerate(records):
        if record[1] is None:
            unplaced.setdefault(record[0], []).append(index)
    for topic, indexes in unplaced.items():
        partitions = await topic_partitions(producer, topic)
        for index, placed in zip(indexes, key_partitions([records[i][2] for i in indexes], partitions)):
            chosen[index] = placed
    groups: dict[tuple[str, int | None], list[Outgoing]] = {}
    for record, partition in zip(records, chosen):
        groups.setdefault((record[0], partition), []).append(record)
    acks = []
    for (topic, partition), group in groups.items():
        batch = producer.create_batch()
        for _, _, key, value, headers, timestamp in group:
            if batch.append(key=key, value=value, timestamp=timestamp, headers=list(headers)) is None:
                acks.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                batch.append(key=key, value=value, timestamp=timestamp, headers=list(headers))
        acks.append(await producer.send_batch(batch, topic, partition=partition))
    return acks


async def send_batched(producer: AIOKafkaProducer, records: Sequence[Outgoing]) -> None:
    """``enqueue_batched``, then wait for every acknowledgement."""
    await asyncio.gather(*await enqueue_batched(producer, records))


async def _acknowledged(acks: Sequence[asyncio.Future[object]]) -> None:
    try:
        await asyncio.gather(*acks)
    except KafkaError as exc:
        raise DependencyError(f"kafka publish failed: {exc}") from exc


class ListSink:
    def __init__(self) -> None:
        self.records: list[OutputRecord] = []

    async def start(self) -> None:
        return None

    async def send(self, records: Sequence[OutputRecord]) -> Delivery:
        self.records.extend(records)
        return _acknowledged([])

    async def stop(self) -> None:
        return None
