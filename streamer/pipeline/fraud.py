"""Fraud scoring of a micro-batch of transactions, and the labels that feed it.

``FraudPipeline.process``: decode → read card and terminal state (one round trip) →
the 15 features per transaction, in arrival order → one model call → write state
(one round trip) → a score per transaction, an alert with reasons for risky ones,
and a dead letter per bad message. ``LabelPipeline`` stores late fraud labels that
the terminal risk features read.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from streamer.events import Transaction, decode_all, decode_label, decode_transaction, encode, format_time
from streamer.features.explain import alert_reasons
from streamer.features.fraud import CARD_HORIZON, DAY, DELAY_DAYS, TERMINAL_HORIZON, TimeWindows, transaction_features
from streamer.inference.fraud_scorer import FraudScorer
from streamer.output.dead_letter import dead_letter
from streamer.pipeline.label_clock import LabelClock, progress_of
from streamer.records import OutputRecord, SourceRecord
from streamer.settings import Settings
from streamer.state.store import StateStore


class TransactionFeatures:
    """State read → the 15 features per transaction in arrival order → state write."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    async def compute(self, transactions: Sequence[Transaction]) -> list[list[float]]:
        cards = TimeWindows()
        terminals = TimeWindows()
        for tx in transactions:
            cards.cover(tx.card_id, tx.ts - CARD_HORIZON, tx.ts)
            terminals.cover(tx.terminal_id, tx.ts - TERMINAL_HORIZON, tx.ts - DELAY_DAYS * DAY)
        card_state, terminal_state = await self.store.read_fraud(cards.ranges, terminals.ranges)
        rows = []
        for tx in transactions:
            card = card_state[tx.card_id]
            card.add(tx.ts, tx.transaction_id, tx.amount)
            terminal = terminal_state[tx.terminal_id]
            rows.append(transaction_features(tx.ts, tx.transaction_id, tx.amount, card, terminal))
            terminal.add_transaction(tx.ts, tx.transaction_id)
        await self.store.write_transactions(transactions)
        return rows


class FraudPipeline:
    def __init__(
        self,
        scorer: FraudScorer,
        store: StateStore,
        settings: Settings,
        clock: Callable[[], float] = time.time,
        label_clock: LabelClock | None = None,
    ) -> None:
        self.scorer = scorer
        self.features = TransactionFeatures(store)
        self.topics = settings.topics
        self.threshold = settings.fraud.alert_threshold
        self.max_reasons = settings.fraud.max_reasons
        self.max_bytes = settings.kafka.max_message_bytes
        self.clock = clock
        self.label_clock = label_clock

    async def process(self, records: Sequence[SourceRecord]) -> list[OutputRecord]:
        good, bad = decode_all([r.value for r in records], decode_transaction, self.max_bytes)
        outputs = [dead_letter(records[b.index], b.error, self.topics.dead_letter) for b in bad]
        if not good:
            return outputs
        transactions = [tx for _, tx in good]
        if self.label_clock is not None:
            await self.label_clock.wait_until(max(tx.ts for tx in transactions))
        rows = await self.features.compute(transactions)
        scores = self.scorer.score(np.asarray(rows, dtype=np.float32))

        scored_at = format_time(self.clock())
        for tx, row, score in zip(transactions, rows, scores.tolist()):
            key = tx.card_id.encode()
            record: dict[str, Any] = {
                "transaction_id": tx.transaction_id,
                "card_id": tx.card_id,
                "score": round(score, 6),
                "model_version": self.scorer.version,
                "timestamp": tx.timestamp,
                "scored_at": scored_at,
            }
            outputs.append(OutputRecord(self.topics.fraud_scores, key, encode(record)))
            if score >= self.threshold:
                record["reasons"] = alert_reasons(
                    row, self.scorer.feature_mean, self.scorer.feature_std, self.max_reasons
                )
                outputs.append(OutputRecord(self.topics.fraud_alerts, key, encode(record)))
        return outputs


class LabelPipeline:
    """Stores fraud labels; they reach the features once their ``labelled_at`` has passed."""

    def __init__(self, store: StateStore, settings: Settings) -> None:
        self.store = store
        self.topics = settings.topics
        self.max_bytes = settings.kafka.max_message_bytes

    async def process(self, records: Sequence[SourceRecord]) -> list[OutputRecord]:
        good, bad = decode_all([r.value for r in records], decode_label, self.max_bytes)
        progress = progress_of(records, good, records[0].topic) if records else None
        await self.store.write_labels([label for _, label in good], progress)
        return [dead_letter(records[b.index], b.error, self.topics.dead_letter) for b in bad]
