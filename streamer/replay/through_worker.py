"""Replaying captures through a real ``streamer worker`` process and collecting its outputs.

Used by the pytest plugin (``streamer.testing``), by ``streamer evaluate`` and by the
benchmarks: fresh topics, a fresh consumer group and a fresh Redis namespace per run,
so runs never see each other's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from streamer.embedded import die_with_parent
from streamer.errors import InvalidEvent
from streamer.events import decode_label
from streamer.replay.capture_file import read_capture
from streamer.replay.offline import Outputs
from streamer.settings import EVERY_JOB, Settings, TopicSettings, env_name


def expected_output_count(captures: Sequence[Path], topics: TopicSettings) -> int:
    """Every transaction, click and ranking request yields one output; a label only when
    it is bad."""
    count = 0
    for path in captures:
        for record in read_capture(path):
            if record.topic in (topics.transactions, topics.clickstream, topics.recommend_requests):
                count += 1
            elif record.topic == topics.fraud_labels:
                try:
                    decode_label(record.value)
                except InvalidEvent:
                    count += 1
    return count


def worker_environment(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    for section in dataclasses.fields(settings):
        values = getattr(settings, section.name)
        for f in dataclasses.fields(values):
            env[env_name(section.name, f.name)] = str(getattr(values, f.name))
    return env


def _input_of(topic: str, value: bytes, headers: Sequence[tuple[str, bytes | None]],
              topics: TopicSettings) -> tuple[str, str] | None:
    """Which input an output answers (scores and recommendations by id, dead letters by offset)."""
    import orjson

    if topic == topics.dead_letter:
        h = {name: (raw or b"").decode() for name, raw in headers}
        return topic, f"{h['dlq.topic']}/{h['dlq.partition']}/{h['dlq.offset']}"
    if topic == topics.fraud_scores:
        return topic, str(orjson.loads(value)["transaction_id"])
    if topic == topics.recommendations:
        return topic, str(orjson.loads(value)["event_id"])
    return None


async def read_outputs(settings: Settings, expected: int, timeout_s: float) -> list[tuple[str, bytes | None, bytes, Any]]:
    """Read the output topics from the start until ``expected`` distinct inputs were answered."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    topics = settings.topics
    names = [topics.fraud_scores, topics.recommendations, topics.dead_letter, topics.fraud_alerts]
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers, enable_auto_commit=False, fetch_max_wait_ms=5)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()  # noqa: SLF001 - aiokafka offers no public refresh
        tps = [TopicPartition(t, p) for t in names for p in (consumer.partitions_for_topic(t) or ())]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        answered: set[tuple[str, str]] = set()
        records: list[tuple[str, bytes | None, bytes, Any]] = []
        deadline = time.monotonic() + timeout_s
        settle_until = None
        while time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                for r in batch:
                    headers = tuple(r.headers)
                    records.append((r.topic, r.key, r.value, headers))
                    answer = _input_of(r.topic, r.value, headers, topics)
                    if answer:
                        answered.add(answer)
            if len(answered) >= expected:
                settle_until = settle_until or time.monotonic() + 0.5  # the last batch's alerts
                if time.monotonic() >= settle_until:
                    return records
        raise TimeoutError(f"only {len(answered)} of {expected} inputs answered within {timeout_s} s")
    finally:
        await consumer.stop()


async def wait_until_consuming(settings: Settings, timeout_s: float) -> str:
    """Send a probe click for a user of its own and wait for its recommendation, so a replay
    starts only once the worker has joined its group and consumes every partition alike
    (a backlog waiting at assignment time is fetched partition by partition). Returns the
    probe's event id."""
    from aiokafka import AIOKafkaProducer

    from streamer.events import encode

    event_id = f"probe-{uuid.uuid4().hex[:8]}"
    click = {"event_id": event_id, "user_id": "__streamer_probe__", "item_id": "__probe__", "timestamp": "1970-01-01T00:00:00Z"}
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(settings.topics.clickstream, value=encode(click), key=b"__streamer_probe__")
    finally:
        await producer.stop()
    await read_outputs(settings, 1, timeout_s)
    return event_id


@contextlib.contextmanager
def running_worker(settings: Settings, log: Path, module: str = "streamer.cli worker") -> Iterator[subprocess.Popen[bytes]]:
    """``streamer worker`` (or ``python -m`` another ``module`` and its arguments) as a
    child process configured by ``settings``; stopped on exit."""
    with open(log, "ab") as out:
        worker = subprocess.Popen([sys.executable, "-m", *module.split()], env=worker_environment(settings),
                                  stdout=out, stderr=out, preexec_fn=die_with_parent)
    try:
        yield worker
    finally:
        worker.terminate()
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


class WorkerPacer:
    """Flow control for a fast replay through a worker: a chunk at event time T is sent
    only once every partition of the transactions topic has stored up to T minus
    ``lead_s`` (a day), so no partition runs days ahead of another however unevenly the
    worker fetches a backlog (terminal features read other partitions' transactions 7
    days back). Chunks must then span at most ``lead_s`` of event time (a small capture
    would otherwise go out as one chunk, unpaced). A chunk does not wait once every
    transaction sent before it is stored (the topics are fresh, so the partitions' next
    offsets count them): a capture's labels run days past its last transaction, and its
    last chunks would otherwise each wait out the stall. Waits at most ``stall_s``
    without the worker's progress moving."""

    def __init__(self, settings: Settings, lead_s: float = 86400.0, stall_s: float = 10.0) -> None:
        from streamer.state.store import RedisStateStore

        self.store = RedisStateStore.from_settings(settings.redis)
        self.topic = settings.topics.transactions
        self.captured_topic = TopicSettings().transactions
        self.partitions = settings.kafka.partitions
        self.lead_s = lead_s
        self.stall_s = stall_s
        self.transactions_sent = 0

    async def __call__(self, chunk: Sequence[Any]) -> None:
        if self.transactions_sent:
            await self._wait_for(chunk[0].timestamp / 1000.0)
        self.transactions_sent += sum(1 for r in chunk if r.topic == self.captured_topic)

    async def _wait_for(self, ts: float) -> None:
        last, moved = None, time.monotonic()
        while True:
            progress = await self.store.read_progress(self.topic)
            if sum(offset for offset, _ in progress.values()) >= self.transactions_sent:
                break
            if len(progress) >= self.partitions and min(t for _, t in progress.values()) >= ts - self.lead_s:
                break
            if progress != last:
                last, moved = progress, time.monotonic()
            elif time.monotonic() - moved > self.stall_s:
                break
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        await self.store.close()


class Replayer:
    """Replays captures through a worker process; see ``streamer_replay``."""

    def __init__(self, bootstrap: str, redis_url: str, log_dir: Path) -> None:
        self.bootstrap = bootstrap
        self.redis_url = redis_url
        self.log_dir = log_dir

    def settings(self, **changes: dict[str, Any]) -> Settings:
        tag = uuid.uuid4().hex[:8]
        topics = TopicSettings(**{f.name: f"{getattr(TopicSettings(), f.name)}-{tag}" for f in dataclasses.fields(TopicSettings)})
        base = Settings.from_env().replace(
            kafka={"bootstrap_servers": self.bootstrap, "group_id": f"replay-{tag}", "partitions": 2},
            redis={"url": self.redis_url, "namespace": f"replay-{tag}"},
            worker={"jobs": EVERY_JOB},  # a capture may hold any input topic, and the probe is a click
        )
        return dataclasses.replace(base, topics=topics).replace(**changes)

    async def _replay(self, settings: Settings, captures: Sequence[Path], rename: dict[str, str], speed: float) -> None:
        from streamer.replay.replay import replay

        pacer = WorkerPacer(settings) if speed == 0 else None
        try:
            await replay(self.bootstrap, captures, rename=rename, speed=speed, before_chunk=pacer,
                         chunk_span=(pacer.captured_topic, pacer.lead_s) if pacer is not None else None)
        finally:
            if pacer is not None:
                await pacer.close()

    def __call__(self, captures: Sequence[Path], *, speed: float = 0.0, timeout_s: float = 180.0, **changes: dict[str, Any]) -> Outputs:
        from streamer.state.store import delete_namespace
        from streamer.worker.topics import delete_topics, ensure_topics

        settings = self.settings(**changes)
        topics = settings.topics
        asyncio.run(ensure_topics(self.bootstrap, topics.all(), settings.kafka.partitions))
        log = self.log_dir / f"worker-{settings.kafka.group_id}.log"
        try:
            with running_worker(settings, log) as worker:
                probe = asyncio.run(wait_until_consuming(settings, timeout_s=120))
                rename = {getattr(TopicSettings(), f.name): getattr(topics, f.name) for f in dataclasses.fields(TopicSettings)}
                asyncio.run(self._replay(settings, captures, rename, speed))
                expected = expected_output_count(captures, TopicSettings()) + 1
                records = asyncio.run(read_outputs(settings, expected, timeout_s))
                if worker.poll() is not None:
                    raise RuntimeError(f"the worker died; see {log}")
                outputs = Outputs.collect(records, settings)
                outputs.recommendations.pop(probe, None)
                return outputs
        finally:
            asyncio.run(delete_topics(self.bootstrap, topics.all()))
            asyncio.run(delete_namespace(settings.redis))
