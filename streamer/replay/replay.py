"""``streamer replay``: write captures back into topics, fast or paced by their timestamps.

Several captures are merged in timestamp order (transactions with their late labels,
say). Each source partition's records stay in their captured order, so the order within
every key is kept; keys, values, headers and timestamps are written as captured. Keyed
records go where the target topic's partitioner puts their key; records without a key
keep their partition number (modulo the target's partition count). ``speed`` > 0 paces
the records: a gap of t ms between two timestamps takes t / speed ms. When the topic
changes from one record to the next, the earlier records are acknowledged first, so the
broker's logs hold the merged order across topics (labels before later transactions).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from aiokafka import AIOKafkaProducer

from streamer.replay.capture_file import CapturedRecord, read_capture


def merged(paths: Sequence[Path]) -> Iterator[CapturedRecord]:
    """All records of the captures in timestamp order, each source partition in its own order."""
    streams: dict[tuple[int, str, int], list[CapturedRecord]] = {}
    for n, path in enumerate(paths):
        for record in read_capture(path):
            streams.setdefault((n, record.topic, record.partition), []).append(record)
    return heapq.merge(*streams.values(), key=lambda r: r.timestamp)


def renamed(records: Iterable[CapturedRecord], rename: Mapping[str, str]) -> Iterator[CapturedRecord]:
    for r in records:
        yield CapturedRecord(rename.get(r.topic, r.topic), r.partition, r.offset, r.timestamp, r.key, r.value, r.headers)


async def replay(
    bootstrap_servers: str,
    paths: Sequence[Path],
    *,
    rename: Mapping[str, str] | None = None,
    speed: float = 0.0,
    progress: Callable[[str], None] | None = None,
    create_partitions: int | None = None,
) -> int:
    """Produce the captures' records; returns how many were written (all acknowledged).
    With ``create_partitions``, missing target topics are created first with that many."""
    if create_partitions:
        from streamer.worker.topics import ensure_topics

        targets = {(rename or {}).get(r.topic, r.topic) for path in paths for r in read_capture(path)}
        await ensure_topics(bootstrap_servers, sorted(targets), create_partitions)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", linger_ms=0, max_request_size=4 * 1024 * 1024)
    await producer.start()
    sent = 0
    try:
        records = renamed(merged(paths), rename or {})
        first = next(records, None)
        if first is None:
            return 0
        started = time.monotonic()
        last_report = started
        pending: list[asyncio.Future[object]] = []
        previous_topic = first.topic
        for record in itertools.chain([first], records):
            if record.topic != previous_topic:
                # Everything of the other topic that comes earlier in time is in the log before
                # this record, so a consumer never sees a transaction before its earlier label.
                await asyncio.gather(*pending)
                pending.clear()
                previous_topic = record.topic
            if speed > 0:
                ahead = (record.timestamp - first.timestamp) / 1000.0 / speed - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            partition = None
            if record.key is None:
                partitions = await producer.partitions_for(record.topic)
                partition = record.partition % len(partitions)
            pending.append(await producer.send(
                record.topic, value=record.value, key=record.key, partition=partition,
                timestamp_ms=record.timestamp, headers=list(record.headers) or None,
            ))
            sent += 1
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
            if progress and time.monotonic() - last_report > 1.0:
                last_report = time.monotonic()
                progress(f"replayed {sent:,} records")
        await asyncio.gather(*pending)
        if progress:
            progress(f"replayed {sent:,} records in {time.monotonic() - started:.1f} s")
        return sent
    finally:
        await producer.stop()
