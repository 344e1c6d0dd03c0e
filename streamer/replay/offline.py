"""The pipeline over captures without a broker, and comparing what two runs produced.

``run_offline`` feeds merged capture records to the same pipelines the worker runs
(default: an in-memory state store, batches of ``batch_size`` consecutive records of
one topic). ``Outputs`` reduces output records to what must be identical between runs
— scores, alerts, recommendation lists, dead letters — leaving out ``scored_at``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from streamer.records import SCORE_TOLERANCE, OutputRecord, SourceRecord
from streamer.replay.capture_file import CapturedRecord
from streamer.replay.replay import merged
from streamer.settings import Settings
from streamer.state.memory import InMemoryStateStore
from streamer.state.store import StateStore
from streamer.worker.app import Pipeline


@dataclass
class Outputs:
    """Outputs by input id, without wall-clock fields."""

    scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)
    recommendations: dict[str, dict[str, Any]] = field(default_factory=dict)
    dead_letters: list[tuple[str, bytes]] = field(default_factory=list)

    @classmethod
    def collect(cls, records: Iterable[tuple[str, bytes | None, bytes, Sequence[tuple[str, bytes]]]], settings: Settings) -> Outputs:
        """From ``(topic, key, value, headers)``; a duplicate (at-least-once) replaces its twin."""
        out = cls()
        topics = settings.topics
        for topic, _key, value, headers in records:
            if topic == topics.dead_letter:
                out.dead_letters.append((dict(headers).get("dlq.reason", b"").decode(), value))
                continue
            obj = orjson.loads(value)
            obj.pop("scored_at", None)
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
        """Human-readable differences; empty when the runs agree (scores within the tolerance)."""
        found: list[str] = []
        for name in ("scores", "alerts"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if set(mine) != set(theirs):
                found.append(f"{name}: ids differ ({len(set(mine) ^ set(theirs))} not in both)")
            for key in set(mine) & set(theirs):
                if abs(mine[key]["score"] - theirs[key]["score"]) > score_tolerance:
                    found.append(f"{name}[{key}]: score {mine[key]['score']} != {theirs[key]['score']}")
        if set(self.recommendations) != set(other.recommendations):
            found.append("recommendations: event ids differ")
        for key in set(self.recommendations) & set(other.recommendations):
            a = [i["item_id"] for i in self.recommendations[key]["items"]]
            b = [i["item_id"] for i in other.recommendations[key]["items"]]
            if a != b:
                found.append(f"recommendations[{key}]: {a} != {b}")
        if self.dead_letters != other.dead_letters:
            found.append("dead letters differ")
        return found


def _pipelines(settings: Settings, store: StateStore) -> dict[str, Pipeline]:
    from streamer.inference.fraud_scorer import FraudScorer
    from streamer.inference.next_item import NextItemRanker
    from streamer.pipeline.fraud import FraudPipeline, LabelPipeline
    from streamer.pipeline.recommend import RecommendPipeline

    models = settings.models
    topics = settings.topics
    return {
        topics.transactions: FraudPipeline(FraudScorer(models.fraud, provider=models.provider), store, settings),
        topics.fraud_labels: LabelPipeline(store, settings),
        topics.clickstream: RecommendPipeline(NextItemRanker(models.recommend, provider=models.provider, int8=models.int8),
                                              store, settings),
    }


async def run_offline(
    paths: Sequence[Path], settings: Settings, *, store: StateStore | None = None, batch_size: int = 256
) -> list[OutputRecord]:
    """Every output the worker would publish for these captures, in processing order."""
    pipelines = _pipelines(settings, store or InMemoryStateStore())
    outputs: list[OutputRecord] = []
    for topic, group in itertools.groupby(merged(paths), key=lambda r: r.topic):
        pipeline = pipelines.get(topic)
        if pipeline is None:
            continue
        records = [_source(r) for r in group]
        for start in range(0, len(records), batch_size):
            outputs.extend(await pipeline.process(records[start : start + batch_size]))
    return outputs


def _source(record: CapturedRecord) -> SourceRecord:
    return SourceRecord(record.topic, record.partition, record.offset, record.key, record.value,
                        record.timestamp, record.headers)
