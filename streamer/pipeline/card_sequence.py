"""Card embeddings for the fraud sequence model, cached in Redis.

A transaction is scored with the embedding of the card's rows ordered before it (by
``(event time, id)``) among those that came before it, the last ``L`` of them. The embedding of a card's rows up to its
latest transaction is stored with that transaction's ``(ts, id)``; when the next
transaction of the card comes, that cached embedding is exactly the one it needs, so
scoring needs no encoder call. Per batch: the cards' latest rows and embeddings come
with the features' state read (``TransactionFeatures``), then one encoder call for
every embedding not cached (batch-internal histories, misses, and the new latest
embedding of each card); the new embeddings are stored with the rows.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence

import numpy as np

from streamer.events import Transaction
from streamer.features.fraud import insert_new
from streamer.inference.fraud_scorer import FraudScorer
from streamer.state.store import CachedEmbedding, CardState, StateStore, row_bytes

History = list[tuple[float, str, bytes]]
Key = tuple[str, tuple[float, str] | None, int]
"""An embedding wanted: the card, the ``(event time, id)`` of the last row it covers
(None: no rows), and how many of the batch's rows had landed below the card's latest
by then (the same last row then sits on different rows below it)."""


class CardEmbeddings:
    def __init__(self, scorer: FraudScorer, store: StateStore) -> None:
        self.scorer = scorer
        self.store = store
        self.length = scorer.sequence_length
        self.width = len(scorer.manifest["sequence"]["fields"])
        self.encoded = 0  # encoder rows run, for the benchmarks and tests
        self.reused = 0

    async def for_batch(self, transactions: Sequence[Transaction], rows: np.ndarray, states: Mapping[str, CardState]) -> np.ndarray:
        """``embed``, then the cards' new embeddings stored."""
        vectors, fresh = self.embed(transactions, rows, states)
        await self.store.write_card_embeddings(fresh)
        return vectors

    def embed(self, transactions: Sequence[Transaction], rows: np.ndarray,
              states: Mapping[str, CardState]) -> tuple[np.ndarray, dict[str, CachedEmbedding]]:
        """The embedding each transaction is scored with, from the cards' state as read
        with their features, and the cards' new embeddings to store.

        A transaction sees the rows ordered before it among those stored and those of
        the batch's earlier transactions, as its features do, so batch boundaries never
        change a score. A row that lands below a card's latest one (a transaction that
        arrives after a later one of its card) changes the history of every key from
        there up without changing the key: embeddings keyed before that are not reused
        (``Key``'s count), and the card's latest is encoded again and stored."""
        histories: dict[str, History] = {}
        late: dict[str, int] = {}
        needed: dict[Key, History] = {}
        wanted: list[Key] = []
        for tx, row in zip(transactions, row_bytes(rows, len(transactions))):
            card_id = tx.card_id
            if card_id not in histories:
                histories[card_id], late[card_id] = list(states[card_id].rows), 0
            history = histories[card_id]
            at = bisect.bisect_left(history, (tx.ts, tx.transaction_id))
            before = history[max(at - self.length, 0) : at]
            key = (card_id, (before[-1][0], before[-1][1]) if before else None, late[card_id])
            wanted.append(key)
            needed[key] = before
            if insert_new(history, (tx.ts, tx.transaction_id, row)) and at < len(history) - 1:  # not if re-processed
                late[card_id] += 1
        latest: dict[str, Key] = {}
        for card_id, history in histories.items():
            key = (card_id, (history[-1][0], history[-1][1]), late[card_id])
            latest[card_id] = key
            needed[key] = history[-self.length :]

        vectors = self._vectors(needed, states)
        fresh = {
            card_id: CachedEmbedding(vectors[key], key[1][0], key[1][1], self.scorer.version)  # type: ignore[index]
            for card_id, key in latest.items()
            if not self._matches(states[card_id].embedding, key)
        }
        return np.stack([vectors[key] for key in wanted]), fresh

    def _matches(self, cached: CachedEmbedding | None, key: Key) -> bool:
        """Whether the stored embedding is the one ``key`` asks for: the stored one covers
        the card's rows as read, before the batch put any of its own below the latest."""
        return (cached is not None and key[2] == 0 and key[1] == (cached.ts, cached.event_id)
                and cached.model == self.scorer.version)

    def _vectors(self, needed: dict[Key, History], states: Mapping[str, CardState]) -> dict[Key, np.ndarray]:
        vectors: dict[Key, np.ndarray] = {}
        to_encode = []
        for key, history in needed.items():
            cached = states[key[0]].embedding
            if self._matches(cached, key):
                vectors[key] = cached.vector  # type: ignore[union-attr]
                self.reused += 1
            else:
                to_encode.append(key)
        if to_encode:
            histories = [needed[key] for key in to_encode]
            lengths = np.fromiter(map(len, histories), dtype=np.int64, count=len(histories))
            # Left-padded: a history fills the last ``len`` positions of its sequence in
            # order, so all the histories' rows, one after the other, fill the valid
            # positions in row-major order: one join and one copy for the batch, not one
            # per history (about 1 µs less per transaction) nor one per row.
            valid = np.arange(self.length) >= (self.length - lengths)[:, None]
            batch = np.zeros((len(to_encode), self.length, self.width), dtype=np.float32)
            if lengths.any():
                joined = b"".join([row for history in histories for _, _, row in history])
                batch[valid] = np.frombuffer(joined, dtype=np.float32).reshape(-1, self.width)
            for key, vector in zip(to_encode, self.scorer.encode(batch, valid.astype(np.float32))):
                vectors[key] = vector
            self.encoded += len(to_encode)
        return vectors
