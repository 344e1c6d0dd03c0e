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

import bisect
from collections.abc import Mapping, Sequence

import numpy as np

from streamer.events import Transaction
from streamer.features.fraud import insert_new
from streamer.inference.fraud_scorer import FraudScorer
from streamer.state.store import ROW_BYTES, CardState, joined_rows, row_bytes

History = list[tuple[float, str, bytes]]


class CardEmbeddings:
    def __init__(self, scorer: FraudScorer) -> None:
        self.scorer = scorer
        self.length = scorer.sequence_length
        self.width = len(scorer.manifest["sequence"]["fields"])
        self.encoded = 0  # encoder rows run, for the benchmarks and tests

    def embed(self, transactions: Sequence[Transaction], rows: np.ndarray, states: Mapping[str, CardState]) -> np.ndarray:
        """The embedding each transaction is scored with, ``(batch, D)``, from the cards'
        state as read with their features.

        A transaction sees the rows ordered before it among those stored and those of
        the batch's earlier transactions, as its features do, so batch boundaries never
        change a score; a transaction that arrives after later ones of its card sees
        only the rows ordered before it."""
        last = {tx.card_id: i for i, tx in enumerate(transactions)}
        again: dict[str, tuple[History, bytes]] = {}
        """The cards that come again in the batch: their rows with the batch's so far."""
        lengths: list[int] = []
        pieces: list[memoryview] = []
        size = ROW_BYTES
        for i, (tx, row) in enumerate(zip(transactions, row_bytes(rows, len(transactions)))):
            history, joined = again.get(tx.card_id) or (states[tx.card_id].rows, joined_rows(states[tx.card_id]))
            key = (tx.ts, tx.transaction_id)
            # most transactions come after every row of their card: one comparison
            at = len(history) if not history or history[-1] < key else bisect.bisect_left(history, key)
            start = max(at - self.length, 0)
            lengths.append(at - start)
            pieces.append(memoryview(joined)[start * size : at * size])  # copied once, by the join
            if last[tx.card_id] != i:  # a later transaction of the card sees this one
                if tx.card_id not in again:
                    history = list(history)  # most cards come once in a batch: theirs are read in place
                if insert_new(history, (*key, row)):
                    joined = joined[: at * size] + row + joined[at * size :]
                again[tx.card_id] = history, joined
        return self._encode(lengths, b"".join(pieces))

    def _encode(self, lengths: list[int], joined: bytes) -> np.ndarray:
        """The embeddings of histories of ``lengths`` rows whose bytes come one after the
        other in ``joined``."""
        if not lengths:
            return np.zeros((0, self.scorer.embedding_size), dtype=np.float32)
        counts = np.asarray(lengths, dtype=np.int64)
        valid = np.arange(self.length) >= (self.length - counts)[:, None]
        rows = np.frombuffer(joined, dtype=np.float32).reshape(-1, self.width)
        if len(rows) == valid.size:  # every history full, as at steady state: the rows are the batch
            batch = rows.reshape(len(lengths), self.length, self.width)
        else:
            # Left-padded: a history fills the last ``len`` positions of its sequence in
            # order, so all the histories' rows, one after the other, fill the valid
            # positions in row-major order: one copy for the batch.
            batch = np.zeros((len(lengths), self.length, self.width), dtype=np.float32)
            batch[valid] = rows
        self.encoded += len(lengths)
        return self.scorer.encode(batch, valid.astype(np.float32))
