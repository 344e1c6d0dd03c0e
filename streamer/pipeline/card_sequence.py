"""Card embeddings for the fraud sequence model, cached in Redis.

A transaction is scored with the embedding of the card's rows ordered before it (by
``(event time, id)``), the last ``L`` of them. The embedding of a card's rows up to its
latest transaction is stored with that transaction's ``(ts, id)``; when the next
transaction of the card comes, that cached embedding is exactly the one it needs, so
scoring needs no encoder call. Per batch: the cards' latest rows and embeddings come
with the features' state read (``TransactionFeatures``), then one encoder call for
every embedding not cached (batch-internal histories, misses, and the new latest
embedding of each card); the new embeddings are stored with the rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from streamer.events import Transaction
from streamer.inference.fraud_scorer import FraudScorer
from streamer.state.store import CachedEmbedding, CardState, StateStore

Key = tuple[float, str]
History = list[tuple[float, str, np.ndarray]]


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
        with their features, and the cards' new embeddings to store."""
        merged: dict[str, History] = {}
        for tx, row in zip(transactions, rows):
            history = merged.setdefault(tx.card_id, list(states[tx.card_id].rows))
            if all(tx_id != tx.transaction_id for _, tx_id, _ in history):
                history.append((tx.ts, tx.transaction_id, row))
        for history in merged.values():
            history.sort(key=lambda entry: (entry[0], entry[1]))

        needed: dict[tuple[str, Key | None], History] = {}
        wanted: list[tuple[str, Key | None]] = []
        for tx in transactions:
            before = [e for e in merged[tx.card_id] if (e[0], e[1]) < (tx.ts, tx.transaction_id)][-self.length :]
            key = (tx.card_id, (before[-1][0], before[-1][1]) if before else None)
            wanted.append(key)
            needed[key] = before
        latest: dict[str, tuple[str, Key]] = {}
        for card_id, history in merged.items():
            key = (card_id, (history[-1][0], history[-1][1]))
            latest[card_id] = key
            needed[key] = history[-self.length :]

        vectors = self._vectors(needed, states)
        fresh = {
            card_id: CachedEmbedding(vectors[key], key[1][0], key[1][1], self.scorer.version)
            for card_id, key in latest.items()
            if not self._matches(states[card_id].embedding, key)
        }
        return np.stack([vectors[key] for key in wanted]), fresh

    def _matches(self, cached: CachedEmbedding | None, key: tuple[str, Key | None]) -> bool:
        return cached is not None and key[1] == (cached.ts, cached.event_id) and cached.model == self.scorer.version

    def _vectors(self, needed: dict[tuple[str, Key | None], History],
                 states: Mapping[str, CardState]) -> dict[tuple[str, Key | None], np.ndarray]:
        vectors: dict[tuple[str, Key | None], np.ndarray] = {}
        to_encode = []
        for key, history in needed.items():
            cached = states[key[0]].embedding
            if self._matches(cached, key):
                vectors[key] = cached.vector  # type: ignore[union-attr]
                self.reused += 1
            else:
                to_encode.append(key)
        if to_encode:
            batch = np.zeros((len(to_encode), self.length, self.width), dtype=np.float32)
            valid = np.zeros((len(to_encode), self.length), dtype=np.float32)
            for i, key in enumerate(to_encode):
                history = needed[key]
                if history:
                    batch[i, self.length - len(history) :] = [row for _, _, row in history]  # 3x np.stack's speed
                    valid[i, self.length - len(history) :] = 1.0
            for key, vector in zip(to_encode, self.scorer.encode(batch, valid)):
                vectors[key] = vector
            self.encoded += len(to_encode)
        return vectors
