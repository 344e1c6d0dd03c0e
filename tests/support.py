"""Helpers for the tests: a worker process, producing and reading topics, the worker's
Faust app with idle pipelines."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import faust
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streamer.embedded import die_with_parent
from streamer.output.sink import ListSink
from streamer.replay.through_worker import worker_environment
from streamer.settings import Settings, TopicSettings
from streamer.worker.app import Runtime, build_app
from streamer.worker.topics import known_partitions

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"


class NoOutputs:
    async def process(self, records):  # type: ignore[no-untyped-def]
        return []


def idle_app(on_rebalance: Iterable[Callable[[], None]] = (), settings: Settings | None = None) -> faust.App:
    """The worker's Faust app (default ``settings``) over pipelines with no outputs: its
    wiring, consumer and monitor, not started."""
    pipeline = NoOutputs()
    return build_app(Runtime(settings or Settings.from_env({}), ListSink(), pipeline, pipeline, pipeline, pipeline,
                             tuple(on_rebalance)))


def next_item_child_load(monkeypatch: pytest.MonkeyPatch, settings: Settings, version: str) -> object:
    """What ``next_item_process`` gives its model process to load, without starting one."""
    from streamer.worker import main

    loads: list[object] = []

    class NotStarted:
        def __init__(self, load: object, name: str) -> None:
            loads.append(load)

        def start(self) -> NotStarted:
            return self

    monkeypatch.setattr(main, "ModelProcess", NotStarted)
    main.next_item_process(settings, version)
    (load,) = loads
    return load


def load_jsonl(path: Path) -> list[dict]:  # type: ignore[type-arg]
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def unique_topics() -> TopicSettings:
    tag = uuid.uuid4().hex[:8]
    return TopicSettings(**{name: f"{value}-{tag}" for name, value in vars(TopicSettings()).items()})


@dataclass
class WorkerProcess:
    """``streamer worker`` as a child process, configured through the environment."""

    settings: Settings
    log: Path
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)
    command: tuple[str, ...] = ("-m", "streamer.cli", "worker")
    """Its Python command line (a test may run a worker of its own making)."""

    def __post_init__(self) -> None:
        self.env = worker_environment(self.settings)

    def start(self) -> WorkerProcess:
        out = open(self.log, "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, *self.command], env=self.env, stdout=out, stderr=out, cwd=REPO,
            preexec_fn=die_with_parent,
        )
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


async def produce(bootstrap: str, topic: str, messages: Iterable[tuple[bytes | None, bytes]]) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        count = 0
        for key, value in messages:
            await producer.send(topic, value=value, key=key)
            count += 1
        await producer.flush()
        return count
    finally:
        await producer.stop()


async def read_topic(
    bootstrap: str, topic: str, expected: int, timeout_s: float = 60.0, settle_s: float = 0.0,
    done: Callable[[list], bool] | None = None,  # type: ignore[type-arg]
) -> list:  # type: ignore[type-arg]
    """Every record of ``topic`` from the start, until ``expected`` arrived (or ``done``
    says so), then ``settle_s`` more, or until time ran out."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=5)
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout_s
        partitions = await known_partitions(consumer, topic, timeout_s)
        assert partitions, f"topic {topic} does not exist"
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list = []  # type: ignore[type-arg]
        settle_until = None
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for batch in batches.values():
                records.extend(batch)
            if (done(records) if done else len(records) >= expected):
                settle_until = settle_until or time.monotonic() + settle_s
                if time.monotonic() >= settle_until:
                    break
        return records
    finally:
        await consumer.stop()


def assigned_topics(log: Path) -> set[str]:
    """The topics of the partitions a worker was last given, from the table Faust logs
    ("Setting newly assigned partitions", one ``| topic | partitions |`` row each)."""
    blocks = log.read_text().split("Setting newly assigned partitions")
    if len(blocks) < 2:
        return set()
    table = blocks[-1].split("for group")[0]
    return {row.split("|")[1].strip() for row in table.splitlines()
            if row.startswith("|") and "{" in row}
