"""Where output records go: a ``Sink`` publishes a batch and returns once all are acknowledged.

``KafkaSink`` uses its own aiokafka producer with ``acks="all"`` (no idempotent or
transactional producer: processing is at-least-once, and outputs carry their input's
id so a downstream consumer can drop the rare duplicate after a crash). ``ListSink``
keeps records in memory for unit tests and the offline replay.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from streamer.errors import DependencyError
from streamer.records import OutputRecord


class Sink(Protocol):
    async def start(self) -> None: ...

    async def publish(self, records: Sequence[OutputRecord]) -> None: ...

    async def stop(self) -> None: ...


class KafkaSink:
    def __init__(self, bootstrap_servers: str, *, linger_ms: int = 2, max_request_size: int = 2 * 1024 * 1024) -> None:
        self.options = {
            "bootstrap_servers": bootstrap_servers,
            "acks": "all",
            "linger_ms": linger_ms,
            "max_request_size": max_request_size,
            "max_batch_size": 1024 * 1024,
        }
        self.producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        self._partitioner = DefaultPartitioner()
        self._partitions: dict[str, list[int]] = {}

    async def start(self) -> None:
        """Connect on first use: aiokafka clients belong to the loop that made them."""
        async with self._lock:
            if self.producer is None:
                producer = AIOKafkaProducer(**self.options)
                await producer.start()
                self.producer = producer

    async def publish(self, records: Sequence[OutputRecord]) -> None:
        """Send every record, then wait until the broker acknowledged all of them.

        Records are grouped per partition (the producer's own key partitioner) into
        record batches handed to the producer whole, several times cheaper than one
        ``send()`` per record."""
        if not records:
            return
        await self.start()
        assert self.producer is not None
        try:
            await send_batched(self.producer, [(r.topic, None, r.key, r.value, r.headers, None) for r in records],
                               self._partitions, self._partitioner)
        except KafkaError as exc:
            raise DependencyError(f"kafka publish failed: {exc}") from exc

    async def stop(self) -> None:
        async with self._lock:
            if self.producer is not None:
                await self.producer.stop()
                self.producer = None


#: A record to send: topic, partition (None: by key), key, value, headers, timestamp ms (None: now).
Outgoing = tuple[str, int | None, bytes | None, bytes | None, Sequence[tuple[str, bytes]], int | None]


async def topic_partitions(producer: AIOKafkaProducer, topic: str, cache: dict[str, list[int]]) -> list[int]:
    """A topic's partitions, asked of the producer once and kept in ``cache``."""
    if topic not in cache:
        cache[topic] = sorted(await producer.partitions_for(topic))
    return cache[topic]


async def send_batched(
    producer: AIOKafkaProducer, records: Sequence[Outgoing], partitions_of: dict[str, list[int]],
    partitioner: Callable[[bytes | None, list[int], list[int]], int],
) -> None:
    """Send records grouped per partition as whole record batches, and wait for every
    acknowledgement. Several times cheaper than one ``send()`` per record, and fewer,
    larger batches in the broker's log (the embedded broker's fetches slow down with
    the number of batches in a partition). ``partitions_of`` caches topic partitions;
    a record without a partition goes where ``partitioner`` puts its key."""
    groups: dict[tuple[str, int], list[Outgoing]] = {}
    for record in records:
        topic, partition = record[0], record[1]
        if partition is None:
            partitions = await topic_partitions(producer, topic, partitions_of)
            partition = partitioner(record[2], partitions, partitions)
        groups.setdefault((topic, partition), []).append(record)
    futures = []
    for (topic, partition), group in groups.items():
        batch = producer.create_batch()
        for _, _, key, value, headers, timestamp in group:
            if batch.append(key=key, value=value, timestamp=timestamp, headers=list(headers)) is None:
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                batch.append(key=key, value=value, timestamp=timestamp, headers=list(headers))
        futures.append(await producer.send_batch(batch, topic, partition=partition))
    await asyncio.gather(*futures)


class ListSink:
    def __init__(self) -> None:
        self.records: list[OutputRecord] = []

    async def start(self) -> None:
        return None

    async def publish(self, records: Sequence[OutputRecord]) -> None:
        self.records.extend(records)

    async def stop(self) -> None:
        return None
