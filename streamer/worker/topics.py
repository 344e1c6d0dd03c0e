"""Creating the engine's topics on start, with the configured partition count; assigning
a consumer the whole of one.

Existing topics are left as they are (Kafka cannot shrink partitions, and the
embedded broker cannot add any), so a running deployment keeps its layout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from streamer.errors import DependencyError

log = logging.getLogger(__name__)


async def assign_topic(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """Assign a started group-less (or not joining) consumer every partition of ``topic``,
    once its metadata knows them (a topic just created may take a refresh or two); returns
    them in order."""
    partitions = None
    while not partitions:
        await consumer._client.force_metadata_update()  # noqa: SLF001 - aiokafka offers no public refresh
        partitions = consumer.partitions_for_topic(topic)
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(tps)
    return tps


async def ensure_topics(
    bootstrap_servers: str, names: Iterable[str], partitions: int, replication_factor: int = 1, timeout_s: float = 30.0
) -> list[str]:
    """Create the missing topics; returns the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=10000)
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            await admin.start()
            break
        except KafkaConnectionError as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise DependencyError(f"no Kafka broker at {bootstrap_servers}") from exc
            await asyncio.sleep(0.5)
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in dict.fromkeys(names) if n not in existing]
        for name in missing:
            try:
                await admin.create_topics([NewTopic(name, partitions, replication_factor)])
                log.info("created topic %s with %d partitions", name, partitions)
            except TopicAlreadyExistsError:
                pass
        return missing
    finally:
        await admin.close()


async def delete_topics(bootstrap_servers: str, names: Iterable[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        doomed = [n for n in names if n in existing]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()
