"""``bench.run.drain`` through the embedded broker, the real Redis and a ``streamer worker``:
its time, and the worker's step-time reports of every batch it drained."""

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

    drained = drain(base, "transactions", messages, 128, tmp_path / "worker.log", step_reports=reports)

    assert drained.events == len(messages) and drained.produced_s > 0
    # the worker, paused while the backlog was produced, answered nothing before it resumed
    assert 0 < drained.first_output_s < drained.seconds
    taken = parse_reports(reports, "score_transactions")
    assert taken is not None
    assert abs(taken["batches"] * taken["mean_size"] - len(messages)) <= taken["batches"]  # type: ignore[operator]
    assert set(taken["steps_ms"]) == set(STEPS)  # type: ignore[arg-type]
    assert all(step["mean"] > 0 for step in taken["steps_ms"].values())  # type: ignore[attr-defined]


async def test_a_steady_state_drain_starts_from_the_state_a_worker_would_have_stored(redis_url: str, namespace: str) -> None:
    """``store_history`` writes what a worker writes for those transactions and labels:
    the features read back are those of the same history in the in-memory store."""
    from bench.run import store_history
    from streamer.datasets import label_for
    from streamer.events import decode_transaction
    from streamer.pipeline.fraud import TransactionFeatures
    from streamer.settings import RedisSettings, Secret
    from streamer.state.memory import InMemoryStateStore
    from streamer.state.store import RedisStateStore

    rows = load_jsonl(DATA / "transactions_sample.jsonl")
    transactions = [decode_transaction(orjson.dumps(row)) for row in rows]
    history, batch = transactions[:-100], transactions[-100:]
    labels = [label_for(tx, row["is_fraud_label"], delay_days=0.0) for tx, row in zip(history, rows)]
    redis = RedisSettings(url=Secret(redis_url), namespace=namespace)
    await store_history(redis, history, labels, chunk=256)
    memory = InMemoryStateStore()
    await memory.write_fraud(history)
    await memory.write_labels(labels)
    store = RedisStateStore.from_settings(redis)
    try:
        stored = await TransactionFeatures(store).rows(batch)
    finally:
        await store.close()
    expected = await TransactionFeatures(memory).rows(batch)
    assert stored.rows == expected.rows
    assert any(row[3] > 1 for row in stored.rows)  # the cards' windows hold the history
