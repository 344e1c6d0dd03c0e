"""The pipeline over captures without a broker, and comparing what two runs produced.

``run_offline`` feeds merged capture records to the same pipelines the worker runs
(default: an in-memory state store, batches of up to ``batch_size`` consecutive records
of one topic, labels gathered ahead of transactions that cannot know them yet: see
``run_offline``). ``Outputs`` reduces output records to what must be identical between runs
— scores, alerts, recommendation lists, dead letters — leaving out ``scored_at``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from streamer.errors import InvalidEvent
from streamer.events import decode_label, decode_transaction
from streamer.records import SCORE_TOLERANCE, OutputRecord, SourceRecord
from streamer.pipeline.interface import Pipeline
from streamer.replay.capture_file import CapturedRecord, merged
from streamer.settings import Settings
from streamer.state.memory import InMemoryStateStore
from streamer.state.interface import StateStore


#: Output fields that say how a run went, not what the events were: when an output was
#: made, and whether another partition lagged behind at the time (``partial_state``,
#: which a replay through a worker sets as its partitions happen to progress).
TIMING_FIELDS = ("scored_at", "partial_state")


@dataclass
class Outputs:
    """Outputs by input id, without the fields of a run's timing (``TIMING_FIELDS``)."""

    scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)
    recommendations: dict[str, dict[str, Any]] = field(default_factory=dict)
    dead_letters: list[tuple[str, bytes]] = field(default_factory=list)

    @classmethod
    def collect(cls, records: Iterable[tuple[str, bytes | None, bytes, Sequence[tuple[str, bytes | None]]]],
                settings: Settings) -> Outputs:
        """From ``(topic, key, value, headers)``; a duplicate (at-least-once) replaces its twin."""
        out = cls()
        topics = settings.topics
        for topic, _key, value, headers in records:
            if topic == topics.dead_letter:
                out.dead_letters.append(((dict(headers).get("dlq.reason") or b"").decode(), value))
                continue
            obj = orjson.loads(value)
            for timing in TIMING_FIELDS:
                obj.pop(timing, None)
            if topic == topics.fraud_scores:
                out.scores[obj["transaction_id"]] = obj
            elif topic == topics.fraud_alerts:
                out.alerts[obj["transaction_id"]] = obj
            elif topic == topics.recommendations:
                out.recommendations[obj["event_id"]] = obj
        out.dead_letters.sort()
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "scores": self.scores,
            "alerts": self.alerts,
            "recommendations": self.recommendations,
            "dead_letters": [[reason, value.decode("latin-1")] for reason, value in self.dead_letters],
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Outputs:
        return cls(obj["scores"], obj["alerts"], obj["recommendations"],
                   [(reason, value.encode("latin-1")) for reason, value in obj["dead_letters"]])

    def differences(self, other: Outputs, score_tolerance: float = SCORE_TOLERANCE) -> list[str]:
        """Human-readable differences; empty when the runs agree: every field of every
        output (but ``TIMING_FIELDS``), numbers within ``score_tolerance``
        (a float32 result varies slightly with how the events were batched), and each
        recommendation's items in the same order."""
        found: list[str] = []
        for name in ("scores", "alerts", "recommendations"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if set(mine) != set(theirs):
                found.append(f"{name}: ids differ ({len(set(mine) ^ set(theirs))} not in both)")
            for key in sorted(set(mine) & set(theirs)):
                found += _differences(mine[key], theirs[key], score_tolerance, f"{name}[{key}]")
        if self.dead_letters != other.dead_letters:
            found.append("dead letters differ")
        return found


def _pipelines(settings: Settings, store: StateStore) -> dict[str, Pipeline]:
    from streamer.inference.fraud_scorer import FraudScorer
    from streamer.inference.next_item import NextItemRanker
    from streamer.pipeline.fraud import FraudPipeline, LabelPipeline
    from streamer.pipeline.recommend import RankingRequestPipeline, RecommendPipeline

    models = settings.models
    topics = settings.topics
    ranker = NextItemRanker(models.recommend, provider=models.provider, int8=models.int8)
    return {
        topics.transactions: FraudPipeline(FraudScorer(models.fraud, provider=models.provider), store, settings),
        topics.fraud_labels: LabelPipeline(store, settings),
        topics.clickstream: RecommendPipeline(ranker, store, settings),
        topics.recommend_requests: RankingRequestPipeline(ranker, store, settings),
    }


def _differences(a: Any, b: Any, tolerance: float, where: str) -> list[str]:
    """Where two decoded outputs differ: numbers by more than ``tolerance``, anything
    else at all."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [diff for name in sorted(a.keys() | b.keys())
                for diff in _differences(a.get(name), b.get(name), tolerance, f"{where}.{name}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [diff for i, (x, y) in enumerate(zip(a, b)) for diff in _differences(x, y, tolerance, f"{where}[{i}]")]
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))
    if numbers and abs(a - b) <= tolerance or not numbers and a == b:
        return []
    return [f"{where}: {a!r} != {b!r}"]


async def run_offline(
    paths: Sequence[Path], settings: Settings, *, store: StateStore | None = None, batch_size: int = 256
) -> list[OutputRecord]:
    """Every output the worker would publish for these captures, in processing order.

    A capture of transactions holds their labels between them, as often as one a
    transaction. A label reaches the features only once its ``labelled_at`` has passed,
    so a label labelled after every transaction gathered for a batch so far goes ahead
    of them, and the transactions go in full batches, as in a worker. Any other label
    has the batch sent first. The outputs are those of the capture's order."""
    pipelines = _pipelines(settings, store or InMemoryStateStore())
    topics, max_bytes = settings.topics, settings.kafka.max_message_bytes
    outputs: list[OutputRecord] = []
    labels: list[SourceRecord] = []
    run: list[SourceRecord] = []  # consecutive records of one topic
    latest = float("-inf")  # the newest event time among the transactions of ``run``

    async def send(records: list[SourceRecord]) -> None:
        if records:
            pipeline = pipelines[records[0].topic]
            for start in range(0, len(records), batch_size):
                outputs.extend(await pipeline.process(records[start : start + batch_size]))
            records.clear()

    for record in merged(paths):
        if record.topic not in pipelines:
            continue
        source = _source(record)
        if record.topic == topics.fraud_labels and (not run or run[0].topic == topics.transactions):
            if run and _event_time(source.value, decode_label, "labelled_ts", float("inf"), max_bytes) <= latest:
                await send(labels)
                await send(run)
            labels.append(source)
            if len(labels) == batch_size:  # they go first whenever they go
                await send(labels)
            continue
        if run and (run[0].topic != record.topic or len(run) == batch_size):
            await send(labels)
            await send(run)
        if not run:
            latest = float("-inf")
        run.append(source)
        if record.topic == topics.transactions:
            latest = max(latest, _event_time(source.value, decode_transaction, "ts", float("-inf"), max_bytes))
    await send(labels)
    await send(run)
    return outputs


def _event_time(value: bytes | None, decode: Callable[[bytes | None, int], Any], name: str, otherwise: float,
                max_bytes: int) -> float:
    """Field ``name`` of the decoded event; ``otherwise`` for one that does not decode
    (a dead letter, which changes no state)."""
    try:
        return float(getattr(decode(value, max_bytes), name))
    except InvalidEvent:
        return otherwise


def _source(record: CapturedRecord) -> SourceRecord:
    return SourceRecord(record.topic, record.partition, record.offset, record.key, record.value,
                        record.timestamp, record.headers)
