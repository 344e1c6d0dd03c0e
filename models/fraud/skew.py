"""How much do scores move when one partition runs days behind another?

``python -m models.fraud.skew --days 3 10 14`` replays the file through the engine's
fraud stages (features, card embeddings, the shipped model; in-memory state) twice per
skew: once in event-time order, once with the cards of one of two partitions consumed
``--days`` later than the other (labels still released on time, as the label clock
guarantees). Terminal features read other cards' transactions at least 7 days old, so a
lag under 7 days cannot change them; this measures what a larger one does. Reports the
share of July rows whose features differ, and the metrics of both runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import zlib
from pathlib import Path

import numpy as np

from models.fraud.train import DAY, day_start, evaluate_scores
from streamer.datasets import FRAUD_CSV, label_for, read_fraud_csv
from streamer.events import Transaction
from streamer.inference.fraud_scorer import FraudScorer
from streamer.pipeline.card_sequence import CardEmbeddings
from streamer.pipeline.fraud import TransactionFeatures
from streamer.state.memory import InMemoryStateStore


async def replay(events: list[tuple[Transaction, bool]], lag: float, scorer: FraudScorer, score_from: float,
                 batch_size: int = 2000) -> dict[str, tuple[list[float], float]]:
    """Rows and scores by transaction id, partition 1 consumed ``lag`` seconds late."""
    def consumed_at(tx: Transaction) -> float:
        return tx.ts + (lag if zlib.crc32(tx.card_id.encode()) % 2 else 0.0)

    ordered = sorted(events, key=lambda pair: consumed_at(pair[0]))
    labels = sorted((label_for(tx, True) for tx, fraud in events if fraud), key=lambda label: label.labelled_ts)
    store = InMemoryStateStore()
    features, embeddings = TransactionFeatures(store, scorer.sequence_length), CardEmbeddings(scorer)
    out: dict[str, tuple[list[float], float]] = {}
    released = 0
    for start in range(0, len(ordered), batch_size):
        batch = [tx for tx, _ in ordered[start : start + batch_size]]
        clock = max(consumed_at(tx) for tx in batch)
        upto = released
        while upto < len(labels) and labels[upto].labelled_ts <= clock:
            upto += 1
        await store.write_labels(labels[released:upto])
        released = upto
        rows = np.asarray(await features.compute(batch), dtype=np.float32)
        if max(tx.ts for tx in batch) < score_from - 10 * DAY:  # card rows need a few days to fill
            continue
        scores = scorer.score(rows, embeddings.embed(batch, rows, features.cards))
        out.update((tx.transaction_id, (row.tolist(), float(s))) for tx, row, s in zip(batch, rows, scores))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=float, nargs="+", default=[3.0, 10.0, 14.0])
    parser.add_argument("--model", type=Path, default=Path("models/shipped/fraud"))
    parser.add_argument("--from", dest="start", default="2018-07-04")
    parser.add_argument("--out", type=Path, default=Path("runs/fraud-skew.json"))
    args = parser.parse_args(argv)
    scorer = FraudScorer(args.model, provider="cpu")
    events = list(read_fraud_csv(FRAUD_CSV))
    start = day_start(args.start)
    july = [(tx, fraud) for tx, fraud in events if tx.ts >= start]
    y = np.asarray([fraud for _, fraud in july], dtype=np.float32)
    ts = np.asarray([tx.ts for tx, _ in july])
    cards = np.asarray([tx.card_id for tx, _ in july])

    def metrics(run: dict[str, tuple[list[float], float]]) -> dict[str, float]:
        return evaluate_scores(y, np.asarray([run[tx.transaction_id][1] for tx, _ in july]), ts, cards)

    clean = asyncio.run(replay(events, 0.0, scorer, start))
    report: dict[str, object] = {"from": args.start, "in_order": metrics(clean), "skewed": {}}
    print(f"in order: {report['in_order']}", flush=True)
    for days in args.days:
        skewed = asyncio.run(replay(events, days * DAY, scorer, start))
        differ = sum(1 for tx, _ in july if not np.allclose(skewed[tx.transaction_id][0], clean[tx.transaction_id][0]))
        moved = np.asarray([abs(skewed[tx.transaction_id][1] - clean[tx.transaction_id][1]) for tx, _ in july])
        result = {"rows_with_different_features": round(differ / len(july), 4),
                  "max_score_change": round(float(moved.max()), 4), "metrics": metrics(skewed)}
        report["skewed"][f"{days:g} days"] = result  # type: ignore[index]
        print(f"partition lag {days:g} days: {result}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
