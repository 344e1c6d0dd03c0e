"""The Faust app: a thin agent per input topic of the jobs the worker runs (two per job).

Each agent takes the runs of records the transport delivers (one per partition and
fetch, ``streamer.worker.transport.RecordRun``) and hands their records to micro-batches
(``streamer.worker.batching``: closes on size or on maximum wait, partition order
kept), which go to a pipeline, then to the sink. While a batch is processed, the next
one gathers. A pipeline with steps (``Staged``) reads a batch's state and writes what
the next batch reads first, then runs the models, then writes the rest and makes the
outputs: the next batch is read and written while this one's models run, this one is
finished while the next one's models run, and its outputs are still on their way to
the broker meanwhile; outputs are sent only after the previous batch's are
acknowledged, so they keep their order. A run is held (one more reference on its
message, ``HeldRuns``) until the outputs of all its records are acknowledged: Faust
commits its offsets only after its outputs are safe, so a crash loses nothing
(at-least-once; reprocessing is harmless).

A batch whose processing (any step) fails on an outside system is retried whole with
back-off until it succeeds, and so is its publishing. A batch that fails for any other
reason is split and retried record by record; a record that still fails goes to
dead-letter, so the stream always moves on.

Every ``STREAMER_BATCH_REPORT_S`` seconds each agent logs how many batches it took and
how long their steps took (``streamer.worker.step_times``), and the worker how its
high-watermark checks were answered (``streamer.worker.highwater``). With
``STREAMER_WORKER_METRICS_PORT`` the worker also answers health and readiness probes and
serves those counts since its start to Prometheus (``streamer.worker.metrics``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import faust
from faust.sensors.monitor import Monitor
from faust.types import TP
from mode import CrashingSupervisor

import streamer.worker.transport as streamer_transport
from streamer.errors import DependencyError, InvalidEvent
from streamer.output.dead_letter import dead_letter
from streamer.output.sink import Sink, publish
from streamer.pipeline.interface import Pipeline, Staged
from streamer.records import OutputRecord, SourceRecord
from streamer.settings import Settings
from streamer.worker.batching import Batcher, Finish, Infer, finished, inferred
from streamer.worker.highwater import FetchedHighWatermarks
from streamer.worker.metrics import WorkerMetrics, listening, serve
from streamer.worker.step_times import BatchTimes, timed

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Runs (a partition's records of one fetch) a stream buffers before Faust pauses
#: fetching that partition; Faust's default of 4,096 counts messages, and a run holds up
#: to a fetch's records.
STREAM_BUFFER_RUNS = 16


@dataclass
class Runtime:
    """What the agents need, built once per worker process."""

    settings: Settings
    sink: Sink
    transactions: Pipeline | None = None
    labels: Pipeline | None = None
    """The fraud job's pipelines; None in a worker that does not run it."""
    clicks: Pipeline | None = None
    ranking_requests: Pipeline | None = None
    """The recommendation job's pipelines; None in a worker that does not run it."""
    on_rebalance: Sequence[Callable[[], None]] = ()
    """Called whenever partitions move: what a worker keeps of its partitions' state is
    forgotten (another worker may write it now)."""
    highwaters: FetchedHighWatermarks | None = None
    """The pipelines' source of high watermarks, given the worker's consumer's view of
    its partitions' ends (``FetchedHighWatermarks.seen``)."""


async def process_batch(pipeline: Pipeline, records: Sequence[SourceRecord], dead_letter_topic: str) -> list[OutputRecord]:
    """One batch's outputs (its state written). A batch that fails on an outside system
    is retried; one that fails otherwise is processed record by record."""
    return await with_backoff(lambda: _or_one_by_one(pipeline.process(records), _as_they_are, pipeline, records,
                                                     dead_letter_topic), "the batch")


async def prepare_batch(pipeline: Pipeline, records: Sequence[SourceRecord],
                        dead_letter_topic: str) -> Infer[list[OutputRecord]]:
    """A batch's first step, and its later ones, with ``process_batch``'s rules: when any
    step fails on an outside system the batch is processed again whole (its writes are
    idempotent), with back-off; when any fails otherwise, record by record. A pipeline
    without steps is processed whole in the first."""
    if not hasattr(pipeline, "prepare"):
        return inferred(finished(await process_batch(pipeline, records, dead_letter_topic)))
    staged: Staged = pipeline  # type: ignore[assignment]
    infer = await with_backoff(lambda: _or_one_by_one(staged.prepare(records), _done, pipeline, records,
                                                      dead_letter_topic), "the batch")

    async def or_again(step: Awaitable[T], then: Callable[[list[OutputRecord]], T]) -> T:
        """What a later step gives; when it fails, the batch processed again."""
        try:
            return await step
        except DependencyError as exc:
            log.warning("%s; processing the batch again", exc)
            return then(await process_batch(pipeline, records, dead_letter_topic))
        except Exception:
            log.exception("batch of %d failed; retrying record by record", len(records))
            return then(await with_backoff(lambda: _one_by_one(pipeline, records, dead_letter_topic), "the batch"))

    async def infer_batch() -> Finish[list[OutputRecord]]:
        finish = await or_again(infer(), finished)

        async def finish_batch() -> list[OutputRecord]:
            return await or_again(finish(), _as_they_are)

        return finish_batch

    return infer_batch


async def _or_one_by_one(step: Awaitable[T], then: Callable[[list[OutputRecord]], T], pipeline: Pipeline,
                         records: Sequence[SourceRecord], dead_letter_topic: str) -> T:
    """What ``step`` gives; when it fails other than on an outside system, the batch's
    records processed one by one, their outputs passed to ``then``."""
    try:
        return await step
    except DependencyError:
        raise
    except Exception:
        log.exception("batch of %d failed; retrying record by record", len(records))
        return then(await _one_by_one(pipeline, records, dead_letter_topic))


def _as_they_are(outputs: list[OutputRecord]) -> list[OutputRecord]:
    return outputs


def _done(outputs: list[OutputRecord]) -> Infer[list[OutputRecord]]:
    return inferred(finished(outputs))


async def publish_batch(sink: Sink, outputs: Sequence[OutputRecord]) -> None:
    """Publish, retried until the broker acknowledged every output."""
    await with_backoff(lambda: publish(sink, outputs), "publishing the batch")


async def with_backoff(attempt: Callable[[], Awaitable[T]], what: str) -> T:
    """``attempt()`` until it does not fail on an outside system (``DependencyError``),
    waiting 0.1 s, then twice as long each time, at most 5 s."""
    delay = 0.1
    while True:
        try:
            return await attempt()
        except DependencyError as exc:
            log.warning("%s; retrying %s in %.1f s", exc, what, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def _one_by_one(pipeline: Pipeline, records: Sequence[SourceRecord], topic: str) -> list[OutputRecord]:
    outputs: list[OutputRecord] = []
    for record in records:
        try:
            outputs.extend(await pipeline.process([record]))
        except DependencyError:
            raise
        except Exception as exc:  # a bug or a poisoned record: never stall the partition
            log.exception("record %s[%d]@%d failed", record.topic, record.partition, record.offset)
            error = exc if isinstance(exc, InvalidEvent) else InvalidEvent("processing_error", f"{type(exc).__name__}: {exc}")
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


def report(times: BatchTimes | None) -> None:
    line = times.report() if times is not None else None
    if line is not None:
        log.info("%s", line)


def partition_of(record: SourceRecord) -> int:
    return record.partition


class HeldRuns:
    """The runs an agent took and has not let go of yet, per partition in offset order.
    A run is let go of (acknowledged: Faust may commit its offsets) once the outputs of
    its last record, and so of all of its records, are acknowledged."""

    def __init__(self) -> None:
        self.runs: dict[int, deque[Any]] = {}

    def hold(self, event: Any) -> None:
        """Keep ``event`` (its message a ``RecordRun``) from being acknowledged when the
        stream takes its next one."""
        event.message.incref()
        self.runs.setdefault(event.message.partition, deque()).append(event)

    def release(self, delivered: Sequence[SourceRecord]) -> dict[int, int]:
        """Let go of the runs whose records are all in ``delivered`` or delivered before;
        returns each partition's last offset delivered."""
        last: dict[int, int] = {}
        for record in delivered:
            last[record.partition] = record.offset
        for partition, offset in last.items():
            runs = self.runs.get(partition)
            while runs and runs[0].message.offset <= offset:
                runs.popleft().ack()
        return last


class RecordRunSchema(faust.Schema):  # type: ignore[type-arg]
    """A topic's values as the transport made them: a run's records pass through."""

    def compile(self, app: Any, **kwargs: Any) -> Callable[..., Awaitable[Any]]:
        create_event = app.create_event

        async def decode(message: Any, *, propagate: bool = False) -> Any:
            return create_event(None, message.value, message.headers, message)

        return decode


def broker_url(bootstrap_servers: str) -> str:
    hosts = [h.strip() for h in bootstrap_servers.split(",") if h.strip()]
    return ";".join(f"{streamer_transport.SCHEME}://{h}" for h in hosts)


def data_dir(group_id: str) -> str:
    """Faust's data folder: ``FAUST_DATADIR`` when set, else one in the system's temporary
    directory. Faust makes it at start even with the memory store (the worker keeps no
    table in it); its default, a folder in the working directory, cannot be made where
    that is read-only, as in the worker image, and litters the directory elsewhere."""
    folder = f"streamer-{group_id.replace(os.sep, '_')}-data"
    return os.environ.get("FAUST_DATADIR") or str(Path(tempfile.gettempdir()) / folder)


def build_app(runtime: Runtime) -> faust.App:
    settings = runtime.settings
    kafka = settings.kafka
    app = faust.App(
        kafka.group_id,
        broker=broker_url(kafka.bootstrap_servers),
        store="memory://",
        datadir=data_dir(kafka.group_id),
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        broker_rebalance_timeout=kafka.rebalance_timeout_s,
        broker_session_timeout=kafka.session_timeout_s,
        broker_heartbeat_interval=max(0.5, kafka.session_timeout_s / 5),
        broker_request_timeout=max(40.0, kafka.session_timeout_s * 2),
        broker_commit_interval=kafka.commit_interval_s,
        broker_max_poll_records=max(500, 2 * settings.batch.largest),
        stream_buffer_maxsize=STREAM_BUFFER_RUNS,
        topic_partitions=kafka.partitions,
        topic_replication_factor=kafka.replication_factor,
        topic_disable_leader=True,
        producer_acks=-1,
        stream_wait_empty=False,
        monitor=LeanMonitor(),
    )
    app.streamer_fetch_max_wait_ms = kafka.fetch_max_wait_ms  # type: ignore[attr-defined]
    if runtime.highwaters is not None:
        runtime.highwaters.seen = lambda topic: app.consumer.fetched_ends(topic)  # type: ignore[attr-defined]
    within = settings.batch.max_wait_ms / 1000.0
    dead_letters = settings.topics.dead_letter
    report_s = settings.batch.report_s
    batch_times: list[BatchTimes] = []
    metrics = WorkerMetrics() if settings.worker.metrics_port else None

    def run_topic(name: str) -> Any:
        return app.topic(name, schema=RecordRunSchema())

    def make_agent(topic_name: str, pipeline: Pipeline, name: str) -> None:
        times = BatchTimes(name) if report_s > 0 or metrics is not None else None
        if times is not None:
            batch_times.append(times)
            if metrics is not None:
                metrics.agents.append(times)
                metrics.input_topics.append(topic_name)

        async def agent(stream: Any) -> None:
            held = HeldRuns()

            async def process(records: list[SourceRecord]) -> Infer[list[OutputRecord]]:
                return await prepare_batch(pipeline, records, dead_letters)

            async def deliver(records: list[SourceRecord], outputs: list[OutputRecord]) -> None:
                await publish_batch(runtime.sink, outputs)
                answered = held.release(records)  # their offsets may be committed
                if metrics is not None:
                    metrics.delivered(name, topic_name, answered, outputs)

            steps, delivery = (process, deliver) if times is None else timed(process, deliver, times)
            try:
                async with Batcher(steps, delivery, settings.batch.max_size, settings.batch.lanes, partition_of,
                                   max_wait_s=within, backlog_size=settings.batch.backlog_size) as batcher:
                    async for event in stream.events():
                        held.hold(event)
                        await batcher.add(event.value)
            finally:
                if report_s > 0:
                    report(times)  # what was timed since the last report, as the worker stops

        agent.__name__ = name
        agent.__qualname__ = name
        # An agent that dies takes the worker down, rather than Faust's default of starting
        # it again in the same worker: the runs the dead one held are never acknowledged,
        # and Faust commits past such a gap once the new one acknowledges later runs. A
        # worker that exits leaves its committed offsets, which the next one resumes from.
        app.agent(run_topic(topic_name), name=name, supervisor_strategy=CrashingSupervisor)(agent)

    async def forget_local_state(sender: Any, partitions: Any, **kwargs: Any) -> None:
        for forget in runtime.on_rebalance:
            forget()

    # mode's handler type, a union over its generic sender, takes no function mypy can name
    app.on_partitions_revoked.connect(forget_local_state)  # type: ignore[arg-type]
    app.on_partitions_assigned.connect(forget_local_state)  # type: ignore[arg-type]

    topics = settings.topics
    for topic, pipeline, name in ((topics.transactions, runtime.transactions, "score_transactions"),
                                  (topics.fraud_labels, runtime.labels, "store_labels"),
                                  (topics.clickstream, runtime.clicks, "recommend_next_items"),
                                  (topics.recommend_requests, runtime.ranking_requests, "answer_ranking_requests")):
        if pipeline is not None:  # the consumer subscribes to the topics of the agents made
            make_agent(topic, pipeline, name)

    if metrics is not None:
        listener = listening(settings.worker.metrics_host, settings.worker.metrics_port)
        metrics.high_watermarks = lambda topic: {
            partition: end.high
            for partition, end in app.consumer.fetched_ends(topic).items()  # type: ignore[attr-defined]
        }

        async def count_assignment(sender: Any, assigned: Any, **kwargs: Any) -> None:
            metrics.assigned(len(assigned))

        app.on_partitions_assigned.connect(count_assignment)  # type: ignore[arg-type]

        @app.task  # type: ignore[untyped-decorator]
        async def answer_probes() -> None:
            await serve(metrics, listener)

    if report_s > 0:
        @app.timer(interval=report_s)  # type: ignore[untyped-decorator]
        async def report_batch_times() -> None:
            for times in batch_times:
                report(times)
            line = runtime.highwaters.report() if runtime.highwaters is not None else None
            if line is not None:
                log.info("%s", line)

    return app
