"""Fraud scoring of a micro-batch of transactions, and the labels that feed it.

``FraudPipeline.process`` runs in three steps (``prepare``, then the step it returns, then
the step that one returns; a worker runs a batch's first step while the previous batch's
second one runs, and its second while the previous batch's third runs):

1. decode → read card and terminal state and the clocks' stream progress (one round
   trip, while both clocks' high watermarks are fetched; the cards this worker
   holds come from its ``CardCache``; Redis counts the terminals' windows,
   ``TerminalCounts``) → the 15 features per transaction, in arrival
   order (and, for a sequence model, each one's encoder input: ``card_sequence``) →
   write the batch's transactions, their rows (for a sequence model) and the
   partitions' progress (one round trip): what the next batch's features read;
2. the models (on the inference thread for a large batch): for a sequence model, the
   card embeddings (one encoder call, a row per transaction), then one scorer call;
3. a score per transaction, an alert with reasons for risky ones, and a dead letter
   per bad message.

``LabelPipeline`` stores late fraud labels that the terminal risk features read.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np

from streamer.events import Transaction, decode_all, decode_label, decode_transaction, encode, format_time
from streamer.features.explain import alert_reasons
from streamer.features.fraud import (
    CARD_HORIZON, DAY, DELAY_DAYS, FEATURE_NAMES, ROW_FIELDS, TERMINAL_HORIZON, TimeWindows, countable,
    transaction_features,
)
from streamer.inference.fraud_scorer import FraudScorer
from streamer.inference.runner import off_the_loop
from streamer.output.dead_letter import dead_letter
from streamer.pipeline.card_sequence import CardEmbeddings, Sequences
from streamer.pipeline.event_clock import EventClock, progress_of, received_by
from streamer.records import OutputRecord, SourceRecord, published_score
from streamer.settings import Settings
from streamer.state.card_cache import CardCache
from streamer.state.interface import CARD_ROWS_CAP, CardState, Progress, StateStore, StreamProgress
from streamer.worker.batching import Finish, Infer, every_step, finished, inferred


class FeatureBatch(NamedTuple):
    rows: list[list[float]]
    matrix: np.ndarray
    """The rows as float32, as the models take them and the store keeps them."""
    cards: dict[str, CardState]
    """The card states the rows were computed from."""
    generation: int
    """The card cache's generation when they were read (``CardCache.store``)."""
    progress: dict[str, Progress]
    """The stored progress of the topics asked for, read before the state."""


class TransactionFeatures:
    """State read → the 15 features per transaction in arrival order (→ state write).

    With ``sequence_rows``, each transaction's feature row is stored too, and the cards'
    latest rows are read with their history, for ``CardEmbeddings``. With a ``cache``,
    cards it holds are not read from the store."""

    def __init__(self, store: StateStore, sequence_rows: int = 0, cache: CardCache | None = None) -> None:
        self.store = store
        self.sequence_rows = sequence_rows
        self.cache = cache or CardCache(0)
        self.cards: dict[str, CardState] = {}
        """The card states ``compute`` read for its last batch."""

    async def rows(self, transactions: Sequence[Transaction], progress_of: Sequence[str] = ()) -> FeatureBatch:
        """The feature rows, the card states they were computed from, and the stored
        progress of the topics in ``progress_of`` (same round trip); writes nothing to
        the store. The cards' states take the batch's transactions, the cache's held
        ones too: call it within ``unless_stored``."""
        cards = TimeWindows()
        terminals = TimeWindows()
        window_ends: dict[str, dict[float, None]] = {}
        for tx in transactions:
            cards.cover(tx.card_id, tx.ts - CARD_HORIZON, tx.ts)
            window_end = tx.ts - DELAY_DAYS * DAY
            terminals.cover(tx.terminal_id, tx.ts - TERMINAL_HORIZON, window_end)
            window_ends.setdefault(tx.terminal_id, {})[window_end] = None
        # The store counts a terminal's windows itself unless the batch's transactions
        # there span a week or more (one of them may then fall in another's window).
        countable_ends = {terminal_id: list(ends) for terminal_id, ends in window_ends.items() if countable(ends)}
        # Every row the store keeps: a transaction that arrives after later ones of its card
        # needs the rows before it, below those; the cache takes a card's rows whole.
        rows_to_read = CARD_ROWS_CAP if self.sequence_rows else 0
        generation = self.cache.generation
        card_state, to_read = self.cache.split(cards.ranges)
        read, terminal_state, progress = await self.store.read_fraud(to_read, terminals.ranges, rows_to_read, progress_of,
                                                                     countable_ends)
        card_state.update(self.cache.take(read, to_read, generation))
        rows = []
        for tx in transactions:
            card = card_state[tx.card_id].history
            card.add(tx.ts, tx.transaction_id, tx.amount)  # in the cache's held state too: ``unless_stored``
            terminal = terminal_state[tx.terminal_id]
            rows.append(transaction_features(tx.ts, tx.transaction_id, tx.amount, card, terminal))
            terminal.add_transaction(tx.ts, tx.transaction_id)
        return FeatureBatch(rows, np.asarray(rows, dtype=np.float32), card_state, generation, progress)

    async def rows_again(self, transactions: Sequence[Transaction], progress_of: Sequence[str] = ()) -> FeatureBatch:
        """``rows`` once more for the same batch (after a wait for its labels). The cards
        are read from the store again: the first call added the batch's transactions to
        the states the cache holds, so each transaction would now see those of the batch
        that came after it, which the first call, training's ``compute`` and a worker
        without the cache do not."""
        self.cache.drop({tx.card_id for tx in transactions})
        return await self.rows(transactions, progress_of)

    async def compute(self, transactions: Sequence[Transaction], progress: StreamProgress | None = None) -> list[list[float]]:
        """``rows``, then the batch stored (training, evaluation and tools run it batch by batch)."""
        with self.unless_stored(transactions):
            batch = await self.rows(transactions)
            self.cards = batch.cards
            await self.store_batch(transactions, batch, progress)
        return batch.rows

    @contextlib.contextmanager
    def unless_stored(self, transactions: Sequence[Transaction]) -> Iterator[None]:
        """A block that computes a batch's ``rows`` and stores it: when it fails, the
        cache forgets the batch's cards, whose held states took its transactions
        (``CardCache``), which the store may not have."""
        try:
            yield
        except BaseException:
            self.cache.drop({tx.card_id for tx in transactions})
            raise

    async def store_batch(self, transactions: Sequence[Transaction], batch: FeatureBatch,
                          progress: StreamProgress | None = None) -> None:
        """The batch's transactions, with their rows (for the sequence model), and the
        partitions' progress: one write; then the card cache. That is what the next
        batch's features read, and all a batch stores: scoring it changes no state."""
        rows = batch.matrix if self.sequence_rows else None
        await self.store.write_fraud(transactions, rows, progress)
        self.cache.store(transactions, rows, batch.generation)


class FraudPipeline:
    def __init__(
        self,
        scorer: FraudScorer,
        store: StateStore,
        settings: Settings,
        clock: Callable[[], float] = time.time,
        label_clock: EventClock | None = None,
        transaction_clock: EventClock | None = None,
    ) -> None:
        self.scorer = scorer
        self.features = TransactionFeatures(store, scorer.sequence_length, CardCache(settings.redis.card_cache))
        self.topics = settings.topics
        self.threshold = settings.fraud.alert_threshold
        self.max_reasons = settings.fraud.max_reasons
        self.publish_features = settings.fraud.publish_features
        self.max_bytes = settings.kafka.max_message_bytes
        self.max_ahead_s = settings.kafka.max_event_ahead_s
        self.clock = clock
        self.label_clock = label_clock
        self.transaction_clock = transaction_clock
        self.card_embeddings = CardEmbeddings(scorer) if scorer.sequence_length else None
        self.inference_thread = settings.models.thread

    async def process(self, records: Sequence[SourceRecord]) -> list[OutputRecord]:
        """Every step, one after the other."""
        return await every_step(await self.prepare(records))

    async def prepare(self, records: Sequence[SourceRecord]) -> Infer[list[OutputRecord]]:
        """The first step: features, and the batch's transactions and progress stored.
        Returns the second: the scores, which returns the third: the scores and alerts
        made."""
        good, bad = decode_all(records, decode_transaction, self.max_bytes, self.max_ahead_s)
        outputs = [dead_letter(records[b.index], b.error, self.topics.dead_letter) for b in bad]
        if not good:
            return inferred(finished(outputs))
        transactions = [tx for _, tx in good]
        progress = progress_of(records, [(index, tx.ts) for index, tx in good], records[0].topic)
        self.features.cache.check_keys([records[index].key for index, _ in good], transactions)
        with self.features.unless_stored(transactions):
            batch, partial = await self._read(transactions, progress, received_by(records))
            # before the batch's rows go into the cache's held states
            sequences = None if self.card_embeddings is None else self.card_embeddings.sequences(
                transactions, batch.matrix, batch.cards)
            await self.features.store_batch(transactions, batch, progress)

        async def infer() -> Finish[list[OutputRecord]]:
            scores = await off_the_loop(len(batch.rows), self._score, transactions, batch.matrix, sequences,
                                        thread=self.inference_thread)

            async def finish() -> list[OutputRecord]:
                return outputs + self._outputs(transactions, batch.rows, scores, partial)

            return finish

        return infer

    def _outputs(self, transactions: Sequence[Transaction], rows: Sequence[list[float]], scores: np.ndarray,
                 partial: bool) -> list[OutputRecord]:
        """A score per transaction, and an alert per risky one."""
        outputs = []
        scored_at = format_time(self.clock())
        for tx, row, score in zip(transactions, rows, scores.tolist()):
            key = tx.card_id.encode()
            record: dict[str, Any] = {
                "transaction_id": tx.transaction_id,
                "card_id": tx.card_id,
                "score": published_score(score),
                "model_version": self.scorer.version,
                "timestamp": tx.timestamp,
                "scored_at": scored_at,
            }
            if partial:
                record["partial_state"] = True
            if self.publish_features:
                record["features"] = dict(zip(ROW_FIELDS, row))
            outputs.append(OutputRecord(self.topics.fraud_scores, key, encode(record)))
            if score >= self.threshold:
                record["reasons"] = alert_reasons(
                    row[: len(FEATURE_NAMES)], self.scorer.feature_mean, self.scorer.feature_std, self.max_reasons
                )
                outputs.append(OutputRecord(self.topics.fraud_alerts, key, encode(record)))
        return outputs

    async def _read(self, transactions: Sequence[Transaction], progress: StreamProgress,
                    received_ms: float | None) -> tuple[FeatureBatch, bool]:
        """The batch's features once every label up to its newest transaction is stored
        (or the wait ran out), and whether another partition's transactions may be
        missing from its terminal features (``partial_state``). Both clocks' high
        watermarks are asked for at once, while the state is read (``fetch_ahead``),
        from fetch requests sent after the batch's records reached the worker
        (``received_ms``; None: from now on): under load, the worker's fetches while
        they waited for their batch answer at once; else the next one, a few
        milliseconds away."""
        newest = max(tx.ts for tx in transactions)
        clocks = [clock for clock in (self.label_clock, self.transaction_clock) if clock is not None]
        topics = [clock.topic for clock in clocks]
        ahead = {clock.topic: clock.fetch_ahead(received_ms) for clock in clocks}
        try:
            batch = await self.features.rows(transactions, topics)
            if self.label_clock is not None and await self.label_clock.lagging(
                    newest, batch.progress[self.label_clock.topic], ahead[self.label_clock.topic]):
                await self.label_clock.wait_until(newest)
                batch = await self.features.rows_again(transactions, topics)  # with those labels
            if self.transaction_clock is None:
                return batch, False
            lagging = await self.transaction_clock.lagging(newest, batch.progress[self.transaction_clock.topic],
                                                           ahead[self.transaction_clock.topic])
        finally:
            for highwaters in ahead.values():
                if highwaters is not None:
                    highwaters.cancel()
        return batch, any(p not in progress.partitions for p in lagging)  # this batch's own are stored in order

    def _score(self, transactions: Sequence[Transaction], matrix: np.ndarray, sequences: Sequences | None) -> np.ndarray:
        """The scores of ``transactions`` (for a sequence model, with the card
        embeddings of their ``sequences``: one encoder call)."""
        if self.card_embeddings is None or sequences is None:
            return self.scorer.score(matrix, None)
        return self.scorer.score(matrix, self.card_embeddings.encode(sequences))


class LabelPipeline:
    """Stores fraud labels; they reach the features once their ``labelled_at`` has passed."""

    def __init__(self, store: StateStore, settings: Settings) -> None:
        self.store = store
        self.topics = settings.topics
        self.max_bytes = settings.kafka.max_message_bytes
        self.max_ahead_s = settings.kafka.max_event_ahead_s

    async def process(self, records: Sequence[SourceRecord]) -> list[OutputRecord]:
        good, bad = decode_all(records, decode_label, self.max_bytes, self.max_ahead_s)
        times = [(index, label.labelled_ts) for index, label in good]
        progress = progress_of(records, times, records[0].topic) if records else None
        await self.store.write_labels([label for _, label in good], progress)
        return [dead_letter(records[b.index], b.error, self.topics.dead_letter) for b in bad]
