"""``run_offline`` over captures whose labels sit between their transactions."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from streamer.events import FraudLabel, Transaction, encode, format_time, label_to_json, transaction_to_json
from streamer.pipeline.fraud import FraudPipeline
from streamer.replay.capture_file import CapturedRecord, CaptureWriter
from streamer.replay.offline import Outputs, run_offline
from streamer.settings import Settings

GOLDEN_FRAUD = Path(__file__).resolve().parent.parent / "replay" / "captures" / "fraud.jsonl.gz"
DAY, T0 = 86400.0, 1533081600.0


def outputs(capture: Path, settings: Settings, batch_size: int) -> Outputs:
    records = asyncio.run(run_offline([capture], settings, batch_size=batch_size))
    return Outputs.collect(((r.topic, r.key, r.value, r.headers) for r in records), settings)


def test_transactions_go_in_full_batches_between_their_labels_with_the_outputs_of_one_at_a_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The golden capture's 403 transactions alternate with their 400 labels."""
    sizes: list[int] = []
    process = FraudPipeline.process

    async def counted(self, records):  # type: ignore[no-untyped-def]
        sizes.append(len(records))
        return await process(self, records)

    settings = Settings.from_env()
    one_at_a_time = outputs(GOLDEN_FRAUD, settings, batch_size=1)
    monkeypatch.setattr(FraudPipeline, "process", counted)
    batched = outputs(GOLDEN_FRAUD, settings, batch_size=64)
    assert sizes[:-1] == [64] * (len(sizes) - 1) and sum(sizes) == 403
    assert len(batched.scores) == 400 and batched.differences(one_at_a_time) == []


def transaction(n: int, terminal: str, ts: float) -> Transaction:
    return Transaction(f"tx{n}", f"card{n}", terminal, 50.0, ts, format_time(ts))


def test_a_label_known_at_a_gathered_transactions_time_waits_for_it(tmp_path: Path) -> None:
    """A fraud at terminal T, its label known exactly 7 days later, and a transaction at
    T at that very second captured before the label: in the capture's order it does
    not know the label yet, and a batch must not let the label go ahead of it."""
    fraud, same_second, later = transaction(1, "T", T0), transaction(2, "T", T0 + 7 * DAY), transaction(3, "T", T0 + 8 * DAY)
    label = FraudLabel("tx1", "card1", "T", T0, True, T0 + 7 * DAY)
    records = [("transactions", fraud.ts, fraud.card_id, transaction_to_json(fraud)),
               ("transactions", same_second.ts, same_second.card_id, transaction_to_json(same_second)),
               ("fraud-labels", label.labelled_ts, label.card_id, label_to_json(label)),
               ("transactions", later.ts, later.card_id, transaction_to_json(later))]
    capture = tmp_path / "tie.jsonl.gz"
    with CaptureWriter(capture, {"test": "tie"}, 0.0) as writer:
        for offset, (topic, ts, card, event) in enumerate(records):
            writer.write(CapturedRecord(topic, 0, offset, int(ts * 1000), card.encode(), encode(event)))
    settings = Settings.from_env().replace(fraud={"publish_features": True})
    batched, one_at_a_time = outputs(capture, settings, 256), outputs(capture, settings, 1)
    assert batched.differences(one_at_a_time) == []
    risk = [batched.scores[tx]["features"]["TERMINAL_ID_RISK_7DAY_WINDOW"] for tx in ("tx2", "tx3")]
    assert risk == [0.0, 1.0]


def test_ranking_requests_are_answered_offline_as_by_a_worker(tmp_path: Path) -> None:
    """A capture of the recommendation job's two input topics: a click, then a request
    for the same user, which gets a ranking from the history the click left."""
    from streamer.replay.through_worker import expected_output_count

    at = format_time(T0)
    capture = tmp_path / "asks.jsonl.gz"
    with CaptureWriter(capture, {"test": "requests"}, 0.0) as writer:
        writer.write(CapturedRecord("clickstream", 0, 0, int(T0 * 1000), b"u1", encode(
            {"event_id": "e1", "user_id": "u1", "item_id": "5", "timestamp": at})))
        writer.write(CapturedRecord("recommend-requests", 0, 0, int(T0 * 1000) + 1, b"u1", encode(
            {"request_id": "r1", "user_id": "u1", "timestamp": at})))
    settings = Settings.from_env()
    answered = outputs(capture, settings, 256).recommendations
    assert sorted(answered) == ["e1", "r1"] and answered["r1"]["items"]
    assert expected_output_count([capture], settings.topics) == 2
