"""``streamer replay``: write captures back into topics, fast or paced by their timestamps.

Several captures are merged in timestamp order (transactions with their late labels,
say). Each source partition's records stay in their captured order, so the order within
every key is kept; keys, values, headers and timestamps are written as captured. Keyed
records go where the target topic's partitioner puts their key; records without a key
keep their partition number (modulo the target's partition count).

Records are written in chunks of the merged order: up to ``chunk_records`` records
(fast), or the records due within one ``pace_step_s`` of wall time (``speed`` > 0: a
gap of t ms between two timestamps takes t / speed ms). A chunk goes out as whole
record batches per partition and is acknowledged before the next one, so the broker's
logs keep the merged order from chunk to chunk. Within a chunk, the records of the
``lead`` topics (the fraud labels, by default) are written and acknowledged first: a
label is then never behind a transaction that comes after it in time (it may be ahead
by one chunk, which the engine allows: it reads a label only once its ``labelled_at``
has passed). One record per batch, as a per-record ordered write would produce, is what
the embedded broker handles worst: its fetches slow to a halt once a partition holds
some ten thousand batches.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from aiokafka import AIOKafkaProducer

from streamer.output.sink import send_batched, topic_partitions
from streamer.replay.capture_file import CapturedRecord, merged, read_capture


def chunks(records: Iterable[CapturedRecord], speed: float, chunk_records: int, pace_step_s: float,
           span: tuple[str, float] | None = None) -> Iterator[tuple[float, list[CapturedRecord]]]:
    """The merged records cut into chunks, each with the wall-clock offset (s from the
    start) at which it is due: 0 when fast; paced, the due time of its first record.
    With ``span = (topic, s)``, no chunk holds records of that topic more than ``s`` of
    event time apart."""
    chunk: list[CapturedRecord] = []
    first_ts: int | None = None
    span_topic, span_ms = (None, 0.0) if span is None else (span[0], span[1] * 1000.0)
    span_start: int | None = None  # the chunk's first record of the span topic
    due = 0.0
    for record in records:
        if first_ts is None:
            first_ts = record.timestamp
        record_due = (record.timestamp - first_ts) / 1000.0 / speed if speed > 0 else 0.0
        spanned = record.topic == span_topic
        if chunk and (len(chunk) >= chunk_records or record_due >= due + pace_step_s
                      or (spanned and span_start is not None and record.timestamp - span_start > span_ms)):
            yield due, chunk
            chunk, span_start = [], None
        if not chunk:
            due = record_due
        if spanned and span_start is None:
            span_start = record.timestamp
        chunk.append(record)
    if chunk:
        yield due, chunk


def lead_first(chunk: Sequence[CapturedRecord], lead: Collection[str]) -> list[list[CapturedRecord]]:
    """A chunk's writes in order: the records of the lead topics, then the rest."""
    first = [r for r in chunk if r.topic in lead]
    rest = [r for r in chunk if r.topic not in lead]
    return [part for part in (first, rest) if part]


async def replay(
    bootstrap_servers: str,
    paths: Sequence[Path],
    *,
    rename: Mapping[str, str] | None = None,
    speed: float = 0.0,
    progress: Callable[[str], None] | None = None,
    create_partitions: int | None = None,
    lead: Collection[str] = ("fraud-labels",),
    chunk_records: int = 5000,
    pace_step_s: float = 0.5,
    before_chunk: Callable[[Sequence[CapturedRecord]], Awaitable[None]] | None = None,
    chunk_span: tuple[str, float] | None = None,
) -> int:
    """Produce the captures' records; returns how many were written (all acknowledged).
    With ``create_partitions``, missing target topics are created first with that many.
    ``lead`` names captured topics (before ``rename``). ``before_chunk`` is awaited with
    each chunk (as captured) before it is sent: flow control, for which ``chunk_span``
    (captured topic, seconds) bounds how much of that topic's event time one chunk covers."""
    rename = rename or {}
    if create_partitions:
        from streamer.worker.topics import ensure_topics

        targets = {rename.get(r.topic, r.topic) for path in paths for r in read_capture(path)}
        await ensure_topics(bootstrap_servers, sorted(targets), create_partitions)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", linger_ms=0,
                                max_request_size=4 * 1024 * 1024, max_batch_size=1024 * 1024)
    await producer.start()
    sent = 0
    try:
        started = last_report = time.monotonic()
        for due, chunk in chunks(merged(paths), speed, chunk_records, pace_step_s, chunk_span):
            ahead = due - (time.monotonic() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
            if before_chunk is not None:
                await before_chunk(chunk)
            for part in lead_first(chunk, lead):
                outgoing = []
                for r in part:
                    topic = rename.get(r.topic, r.topic)
                    partition = None
                    if r.key is None:
                        partition = r.partition % len(await topic_partitions(producer, topic))
                    outgoing.append((topic, partition, r.key, r.value, r.headers, r.timestamp))
                await send_batched(producer, outgoing)
            sent += len(chunk)
            if progress and time.monotonic() - last_report > 1.0:
                last_report = time.monotonic()
                progress(f"replayed {sent:,} records")
        if progress:
            progress(f"replayed {sent:,} records in {time.monotonic() - started:.1f} s")
        return sent
    finally:
        await producer.stop()
