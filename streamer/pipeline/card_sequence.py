"""Card embeddings for the fraud sequence model: one encoder row per transaction.

A transaction is scored with the embedding of its card's rows ordered before it (by
``(event time, id)``) among those that came before it, the last ``L`` of them: the
card's rows as read with its features (``TransactionFeatures``: from the worker's card
cache, else from the store), with the rows of the batch's earlier transactions put in
their place. Every transaction of a batch is encoded in one encoder call.

Nothing is cached: a card's next transaction needs the embedding of a history one row
longer, which is one encoder row either way. Computing it when that transaction comes,
instead of storing each card's latest embedding for it, spares a Redis write and its
bookkeeping per transaction and leaves nothing to recompute when partitions move
(``docs/benchmarks.md``, the session of 2026-12-06 from 01:51 UTC).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from streamer.events import Transaction
from streamer.features.fraud import held_at, key_position
from streamer.inference.fraud_scorer import FraudScorer
from streamer.state.interface import ROW_BYTES, CardState, row_bytes

Sequences = tuple[np.ndarray, np.ndarray]
"""The encoder's input for a batch: rows ``(batch, L, width)``, left-padded, and which are valid ``(batch, L)``."""


class CardEmbeddings:
    def __init__(self, scorer: FraudScorer) -> None:
        self.scorer = scorer
        self.length = scorer.sequence_length
        self.width = len(scorer.manifest["sequence"]["fields"])
        self.encoded = 0  # encoder rows run, for the benchmarks and tests

    def embed(self, transactions: Sequence[Transaction], rows: np.ndarray, states: Mapping[str, CardState]) -> np.ndarray:
        """The embedding each transaction is scored with, ``(batch, D)``: ``encode`` of
        its ``sequences``."""
        return self.encode(self.sequences(transactions, rows, states))

    def sequences(self, transactions: Sequence[Transaction], rows: np.ndarray,
                  states: Mapping[str, CardState]) -> Sequences:
        """The encoder's input for each transaction, from the cards' state as read with
        their features (before the batch's rows go into a cache's held states).

        A transaction sees the rows ordered before it among those stored and those of
        the batch's earlier transactions, as its features do, so batch boundaries never
        change a score; a transaction that arrives after later ones of its card sees
        only the rows ordered before it."""
        last = {tx.card_id: i for i, tx in enumerate(transactions)}
        again: dict[str, CardState] = {}  # cards that come again: with the batch's rows so far
        pieces: list[bytearray] = []  # each transaction's rows, joined
        lengths: list[int] = []
        size = ROW_BYTES
        for i, (tx, row) in enumerate(zip(transactions, row_bytes(rows, len(transactions)))):
            held = again.get(tx.card_id)
            state = states[tx.card_id] if held is None else held  # most cards come once in a batch: as read
            at = key_position(state.row_times, state.row_ids, tx.ts, tx.transaction_id)
            start = max(at - self.length, 0)
            pieces.append(state.joined[start * size : at * size])
            lengths.append(at - start)
            if last[tx.card_id] != i:  # a later transaction of the card sees this one
                if held is None:
                    state = again[tx.card_id] = state.with_rows_copied()
                if not held_at(state.row_times, state.row_ids, at, tx.ts, tx.transaction_id):
                    state.insert_row(at, tx.ts, tx.transaction_id, row)
        # Left-padded: a history fills the last ``len`` positions of its sequence in
        # order, so the transactions' pieces, one after the other, fill the valid
        # positions in row-major order: one join and one copy for the batch, not one
        # per history (about 1 µs less per transaction).
        counts = np.asarray(lengths, dtype=np.int64)
        valid = np.arange(self.length) >= (self.length - counts)[:, None]
        batch = np.zeros((len(pieces), self.length, self.width), dtype=np.float32)
        if counts.any():
            batch[valid] = np.frombuffer(b"".join(pieces), dtype=np.float32).reshape(-1, self.width)
        return batch, valid

    def encode(self, sequences: Sequences) -> np.ndarray:
        """The embeddings of ``sequences``: one encoder call."""
        batch, valid = sequences
        if not len(batch):
            return np.zeros((0, self.scorer.embedding_size), dtype=np.float32)
        self.encoded += len(batch)
        return self.scorer.encode(batch, valid.astype(np.float32))
