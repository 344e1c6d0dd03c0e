"""Where output records go: a ``Sink`` publishes a batch and returns once all are acknowledged.

``KafkaSink`` uses its own aiokafka producer with ``acks="all"`` (no idempotent or
transactional producer: processing is at-least-once, and outputs carry their input's
id so a downstream consumer can drop the rare duplicate after a crash). ``ListSink``
keeps records in memory for unit tests and the offline replay.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
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
        producer = self.producer
        assert producer is not None
        try:
            groups: dict[tuple[str, int], list[OutputRecord]] = {}
            for record in records:
                partitions = self._partitions.get(record.topic)
                if partitions is None:
                    partitions = self._partitions[record.topic] = sorted(await producer.partitions_for(record.topic))
                partition = self._partitioner(record.key, partitions, partitions)
                groups.setdefault((record.topic, partition), []).append(record)
            futures = []
            for (topic, partition), group in groups.items():
                batch = producer.create_batch()
                for record in group:
                    headers = list(record.headers)
                    if batch.append(key=record.key, value=record.value, timestamp=None, headers=headers) is None:
                        futures.append(await producer.send_batch(batch, topic, partition=partition))
                        batch = producer.create_batch()
                        batch.append(key=record.key, value=record.value, timestamp=None, headers=headers)
                futures.append(await producer.send_batch(batch, topic, partition=partition))
            await asyncio.gather(*futures)
        except KafkaError as exc:
            raise DependencyError(f"kafka publish failed: {exc}") from exc

    async def stop(self) -> None:
        async with self._lock:
            if self.producer is not None:
                await self.producer.stop()
                self.producer = None


class ListSink:
    def __init__(self) -> None:
        self.records: list[OutputRecord] = []

    async def start(self) -> None:
        return None

    async def publish(self, records: Sequence[OutputRecord]) -> None:
        self.records.extend(records)

    async def stop(self) -> None:
        return None
