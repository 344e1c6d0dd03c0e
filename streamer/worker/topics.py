"""Creating the engine's topics on start, with the configured partition count; assigning
a consumer the whole of one.

Existing topics are left as they are (Kafka cannot shrink partitions, and the
embedded broker cannot add any), so a running deployment keeps its layout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError, for_code

from streamer.errors import ConfigurationError, DependencyError

log = logging.getLogger(__name__)

ASSIGN_RETRY_S = 0.05


async def known_partitions(consumer: AIOKafkaConsumer, topic: str, timeout_s: float) -> set[int] | None:
    """The partitions of ``topic`` once a started consumer's metadata knows them (a topic
    just created may take a refresh or two); None when it has none within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        await consumer._client.force_metadata_update()  # noqa: SLF001 - aiokafka offers no public refresh
        partitions: set[int] | None = consumer.partitions_for_topic(topic)
        if partitions:
            return partitions
        if time.monotonic() > deadline:
            return None
        await asyncio.sleep(ASSIGN_RETRY_S)


async def assign_topic(consumer: AIOKafkaConsumer, topic: str, timeout_s: float = 30.0) -> list[TopicPartition]:
    """Assign a started group-less (or not joining) consumer every partition of ``topic``
    (``known_partitions``); returns them in order. ``DependencyError`` when the topic has
    none within ``timeout_s``."""
    partitions = await known_partitions(consumer, topic, timeout_s)
    if partitions is None:
        raise DependencyError(f"kafka: topic {topic} has no partitions after {timeout_s:g} s")
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
            refused = refusal(await admin.create_topics([NewTopic(name, partitions, replication_factor)]))
            if refused is None:
                log.info("created topic %s with %d partitions", name, partitions)
            elif refused.retriable:
                raise DependencyError(f"kafka did not create topic {name}: {refused}")
            else:
                raise ConfigurationError(f"kafka refused to create topic {name} with {partitions} partitions and "
                                         f"replication factor {replication_factor}: {refused}")
        return missing
    finally:
        await admin.close()


def refusal(response: Any) -> KafkaError | None:
    """The error in a CreateTopics response, None when the topic was created or already
    existed (another worker made it meanwhile). aiokafka's admin client returns the
    broker's per-topic error codes without raising them."""
    for topic_error in response.topic_errors:  # (name, code) or (name, code, message)
        code = topic_error[1]
        if code not in (0, TopicAlreadyExistsError.errno):
            message = topic_error[2] if len(topic_error) > 2 else None
            error: KafkaError = for_code(code)(message or f"error code {code}")
            return error
    return None


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
