"""``streamer capture``: read topics between bounds into a capture file.

Works while producers write. The end of each partition is the high watermark of the
first fetch response for it (the embedded broker answers ListOffsets "latest" wrongly,
fetch responses rightly), unless ``follow`` is set; time bounds filter on the records'
own timestamps (``offsets_for_times`` is not trusted either), so a ``to_ms`` bound
ends a partition at its first record at or past it.

Where a partition holds no record at the offset asked for, a Kafka broker answers
OffsetOutOfRange and the capture goes on where ``restart_at`` says; the embedded broker
answers an empty fetch, whose high watermark ends the partition. The consumer resets no
offset itself: aiokafka's "earliest" would capture a whole partition asked for from past
its end.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import OffsetOutOfRangeError

from streamer.errors import ConfigurationError
from streamer.replay.capture_file import CapturedRecord, CaptureWriter
from streamer.worker.topics import known_partitions

#: How long a capture waits for a topic to show in the broker's metadata before it is
#: taken as missing.
TOPIC_WAIT_S = 5.0


@dataclass(frozen=True)
class CaptureBounds:
    from_offset: int | None = None
    """Start each partition at this offset (default: the beginning)."""
    from_ms: int | None = None
    """Skip records with an earlier timestamp."""
    to_ms: int | None = None
    """Stop a partition at its first record with this timestamp or later."""
    count: int | None = None
    """Stop after this many records in all."""
    follow: bool = False
    """Keep reading past the high watermark seen at the start (until Ctrl-C or count)."""


def restart_at(offset: int, first: int, follow: bool) -> str | None:
    """Where a capture goes on in a partition whose fetch at ``offset`` was out of range,
    the partition's first kept record being at ``first``: ``"first"`` when the records
    from ``offset`` on begin there (those before were deleted), ``"end"`` when ``offset``
    is past the end and the capture follows (records below ``offset`` skipped until it is
    reached), None when it is past the end and the partition is done."""
    if offset < first:
        return "first"
    return "end" if follow else None


async def _partitions(consumer: AIOKafkaConsumer, topics: Sequence[str], only: Sequence[int] | None) -> list[TopicPartition]:
    chosen: list[TopicPartition] = []
    for topic in dict.fromkeys(topics):  # a topic named twice is captured once
        found = await known_partitions(consumer, topic, TOPIC_WAIT_S)
        if found is None:
            raise ConfigurationError(f"topic {topic!r} does not exist")
        missing = sorted(set(only or ()) - found)
        if missing:
            raise ConfigurationError(f"topic {topic!r} has no partition {', '.join(map(str, missing))} "
                                     f"(it has {len(found)})")
        chosen += [TopicPartition(topic, p) for p in sorted(found) if only is None or p in only]
    return chosen


async def seek_past_out_of_range(consumer: AIOKafkaConsumer, error: OffsetOutOfRangeError, follow: bool) -> set[TopicPartition]:
    """Seek each partition of an OffsetOutOfRange error where ``restart_at`` says;
    returns those that are done."""
    out_of_range: dict[TopicPartition, int] = error.args[0]
    firsts = await consumer.beginning_offsets(list(out_of_range))  # one request for them all
    done = set()
    for tp, offset in out_of_range.items():
        where = restart_at(offset, firsts[tp], follow)
        if where == "first":
            consumer.seek(tp, firsts[tp])
        elif where == "end":
            await consumer.seek_to_end(tp)
        else:
            done.add(tp)
    return done


async def capture(
    bootstrap_servers: str,
    topics: Sequence[str],
    out: Path,
    *,
    partitions: Sequence[int] | None = None,
    bounds: CaptureBounds = CaptureBounds(),
    progress: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Capture the records; returns how many were written."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, enable_auto_commit=False, fetch_max_wait_ms=5,
        auto_offset_reset="none", max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    source = {"bootstrap_servers": bootstrap_servers, "topics": list(topics), "partitions": partitions,
              "bounds": vars(bounds)}
    try:
        tps = await _partitions(consumer, topics, partitions)
        consumer.assign(tps)
        for tp in tps:
            if bounds.from_offset is not None:
                consumer.seek(tp, bounds.from_offset)
            else:
                await consumer.seek_to_beginning(tp)
        end: dict[TopicPartition, int] = {}
        done: set[TopicPartition] = set() if bounds.count != 0 else set(tps)
        last_report = time.monotonic()
        with CaptureWriter(out, source, time.time()) as writer:
            while len(done) < len(tps) and not (stop and stop.is_set()):
                try:
                    batches = await consumer.getmany(*[tp for tp in tps if tp not in done], timeout_ms=200,
                                                     max_records=5000)
                except OffsetOutOfRangeError as error:
                    done.update(await seek_past_out_of_range(consumer, error, bounds.follow))
                    continue
                for tp in tps:
                    high = consumer.highwater(tp)
                    if tp not in end and high is not None and not bounds.follow:
                        end[tp] = high
                for tp, records in batches.items():
                    for r in records:
                        if tp in done or (tp in end and r.offset >= end[tp]):
                            done.add(tp)
                            break
                        if bounds.to_ms is not None and r.timestamp >= bounds.to_ms:
                            done.add(tp)
                            break
                        if bounds.from_offset is not None and r.offset < bounds.from_offset:
                            continue  # followed from the end, up to the offset asked for
                        if bounds.from_ms is not None and r.timestamp < bounds.from_ms:
                            continue
                        writer.write(CapturedRecord(
                            r.topic, r.partition, r.offset, r.timestamp, r.key, r.value,
                            tuple((k, None if v is None else bytes(v)) for k, v in (r.headers or ())),
                        ))
                        if bounds.count is not None and writer.count >= bounds.count:
                            done.update(tps)
                            break
                for tp in tps:
                    if tp in end and await consumer.position(tp) >= end[tp]:
                        done.add(tp)
                if progress and time.monotonic() - last_report > 1.0:
                    last_report = time.monotonic()
                    progress(f"captured {writer.count:,} records; {len(done)}/{len(tps)} partitions done")
            if progress:
                progress(f"captured {writer.count:,} records into {out}")
            return writer.count
    finally:
        # aiokafka's stop cancels its coordinator's task and awaits it: one that has not run
        # yet (a capture refused at once) raises CancelledError, in place of the error
        await asyncio.sleep(0)
        await consumer.stop()
