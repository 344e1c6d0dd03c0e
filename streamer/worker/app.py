"""The Faust app: four thin agents over the input topics.

Each agent takes micro-batches (``take_events``: closes on size or on maximum wait,
partition order kept), hands them to a pipeline and publishes the outputs. While a
batch is processed, the next one gathers (``streamer.worker.batching``: Faust's
per-event work fills the waits on Redis and the broker); it is processed only once
every output of this one is acknowledged by the broker, so it reads the state this one
wrote. A batch's events are held (one more reference on each message) until then:
Faust acknowledges and commits their offsets only after their outputs are safe, so a
crash loses nothing (at-least-once; reprocessing is harmless).

A batch whose processing fails on an outside system is retried with back-off until it
succeeds. A batch that fails for any other reason is split and retried record by
record; a record that still fails goes to dead-letter, so the stream always moves on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import faust
from faust.sensors.monitor import Monitor
from faust.types import TP

import streamer.worker.transport as streamer_transport
from streamer.errors import DependencyError, InvalidEvent
from streamer.output.dead_letter import dead_letter
from streamer.output.sink import Sink
from streamer.records import OutputRecord, SourceRecord
from streamer.settings import Settings
from streamer.worker.batching import Batcher

log = logging.getLogger(__name__)


class Pipeline(Protocol):
    async def process(self, records: Sequence[SourceRecord]) -> list[OutputRecord]: ...


@dataclass
class Runtime:
    """What the agents need, built once per worker process."""

    settings: Settings
    sink: Sink
    transactions: Pipeline
    labels: Pipeline
    clicks: Pipeline
    ranking_requests: Pipeline


async def run_batch(pipeline: Pipeline, sink: Sink, records: Sequence[SourceRecord], dead_letter_topic: str) -> None:
    """Process and publish one batch; returns only when its outputs are acknowledged."""
    delay = 0.1
    while True:
        try:
            try:
                outputs = await pipeline.process(records)
            except DependencyError:
                raise
            except Exception:
                log.exception("batch of %d failed; retrying record by record", len(records))
                outputs = await _one_by_one(pipeline, records, dead_letter_topic)
            await sink.publish(outputs)
            return
        except DependencyError as exc:
            log.warning("%s; retrying the batch in %.1f s", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def run_and_release(pipeline: Pipeline, sink: Sink, events: Sequence[Any], dead_letter_topic: str) -> None:
    """``run_batch`` over Faust events, then let go of them: their offsets may be committed."""
    await run_batch(pipeline, sink, [source_record(e) for e in events], dead_letter_topic)
    for event in events:
        event.ack()


async def _one_by_one(pipeline: Pipeline, records: Sequence[SourceRecord], topic: str) -> list[OutputRecord]:
    outputs: list[OutputRecord] = []
    for record in records:
        try:
            outputs.extend(await pipeline.process([record]))
        except DependencyError:
            raise
        except Exception as exc:  # a bug or a poisoned record: never stall the partition
            log.exception("record %s[%d]@%d failed", record.topic, record.partition, record.offset)
            error = InvalidEvent("processing_error", f"{type(exc).__name__}: {exc}")
            outputs.append(dead_letter(record, error, topic))
    return outputs


class LeanMonitor(Monitor):
    """Faust's monitor without its per-message and per-event statistics, which only its
    web views read (the worker runs without them); about 10 us per event on these
    machines. Kept: when a partition's stream last took an event, which the consumer's
    stalled-stream warnings read."""

    def on_message_in(self, tp: TP, offset: int, message: Any) -> None:
        return None

    def on_stream_event_in(self, tp: TP, offset: int, stream: Any, event: Any) -> None:
        self.stream_inbound_time[tp] = time.monotonic()

    def on_stream_event_out(self, tp: TP, offset: int, stream: Any, event: Any, state: Any = None) -> None:
        return None

    def on_message_out(self, tp: TP, offset: int, message: Any) -> None:
        return None


def source_record(event: Any) -> SourceRecord:
    message = event.message
    return SourceRecord(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        timestamp_ms=int(message.timestamp * 1000) if message.timestamp else None,
        headers=tuple((k, v) for k, v in (message.headers or ())),
    )


def broker_url(bootstrap_servers: str) -> str:
    hosts = [h.strip() for h in bootstrap_servers.split(",") if h.strip()]
    return ";".join(f"{streamer_transport.SCHEME}://{h}" for h in hosts)


def build_app(runtime: Runtime) -> faust.App:
    settings = runtime.settings
    kafka = settings.kafka
    app = faust.App(
        kafka.group_id,
        broker=broker_url(kafka.bootstrap_servers),
        store="memory://",
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        broker_rebalance_timeout=kafka.rebalance_timeout_s,
        broker_session_timeout=kafka.session_timeout_s,
        broker_heartbeat_interval=max(0.5, kafka.session_timeout_s / 5),
        broker_request_timeout=max(40.0, kafka.session_timeout_s * 2),
        broker_commit_interval=kafka.commit_interval_s,
        broker_max_poll_records=max(500, settings.batch.max_size * 2),
        topic_partitions=kafka.partitions,
        topic_replication_factor=kafka.replication_factor,
        topic_disable_leader=True,
        producer_acks=-1,
        stream_wait_empty=False,
        monitor=LeanMonitor(),
    )
    app.streamer_fetch_max_wait_ms = kafka.fetch_max_wait_ms  # type: ignore[attr-defined]
    within = settings.batch.max_wait_ms / 1000.0
    dead_letters = settings.topics.dead_letter

    def raw_topic(name: str) -> Any:
        return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

    def make_agent(topic_name: str, pipeline: Pipeline, name: str) -> None:
        async def agent(stream: Any) -> None:
            async def process(events: list[Any]) -> None:
                await run_and_release(pipeline, runtime.sink, events, dead_letters)

            async with Batcher(process, settings.batch.max_size) as batcher:
                async for events in stream.take_events(settings.batch.max_size, within=within):
                    for event in events:
                        event.message.incref()  # take_events acks on its next step: hold the offset until published
                    await batcher.add(events)

        agent.__name__ = name
        agent.__qualname__ = name
        app.agent(raw_topic(topic_name), name=name)(agent)

    make_agent(settings.topics.transactions, runtime.transactions, "score_transactions")
    make_agent(settings.topics.fraud_labels, runtime.labels, "store_labels")
    make_agent(settings.topics.clickstream, runtime.clicks, "recommend_next_items")
    make_agent(settings.topics.recommend_requests, runtime.ranking_requests, "answer_ranking_requests")
    return app
