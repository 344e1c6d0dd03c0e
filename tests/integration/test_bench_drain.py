"""``bench.run.drain`` through the embedded broker, the real Redis and a ``streamer worker``:
the rate, and the worker's step-time reports of every batch it drained."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from bench.run import drain
from streamer.embedded import EmbeddedBroker
from streamer.settings import Settings
from streamer.worker.step_times import STEPS, parse_reports
from tests.support import DATA, load_jsonl

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]


def test_a_drain_collects_the_step_times_of_every_batch(broker: EmbeddedBroker, redis_url: str, tmp_path: Path) -> None:
    base = Settings.from_env().replace(kafka={"bootstrap_servers": broker.bootstrap_servers, "partitions": 4},
                                       redis={"url": redis_url})
    messages = [(tx["card_id"].encode(), orjson.dumps(tx)) for tx in load_jsonl(DATA / "transactions_sample.jsonl")]
    reports: list[str] = []

    rate = drain(base, "transactions", messages, 128, tmp_path / "worker.log", step_reports=reports)

    assert rate > 0
    taken = parse_reports(reports, "score_transactions")
    assert taken is not None
    assert abs(taken["batches"] * taken["mean_size"] - len(messages)) <= taken["batches"]  # type: ignore[operator]
    assert set(taken["steps_ms"]) == set(STEPS)  # type: ignore[arg-type]
    assert all(step["mean"] > 0 for step in taken["steps_ms"].values())  # type: ignore[attr-defined]
