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

    async def start(self) -> None:
        """Connect on first use: aiokafka clients belong to the loop that made them."""
        async with self._lock:
            if self.producer is None:
                producer = AIOKafkaProducer(**self.options)
                await producer.start()
                self.producer = producer

    async def publish(self, records: Sequence[OutputRecord]) -> None:
        """Send every record, then wait until the broker acknowledged all of them."""
        if not records:
            return
        await self.start()
        assert self.producer is not None
        try:
            futures = [
                await self.producer.send(r.topic, value=r.value, key=r.key, headers=list(r.headers) or None)
                for r in records
            ]
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
