"""The cards' state kept in the worker between batches, in front of the state store.

A card's transactions all come through one partition (the topic is keyed by card), and
a partition is consumed by one worker at a time, so while a worker holds a partition it
is the only writer of those cards' state: what it read and wrote is what the store
holds. ``CardCache`` keeps, per card, exactly what the store holds from some event time
on: the transactions and the latest feature rows. A batch then
reads from the store only the terminals and the cards it has not seen (or needs further
back than it holds).

It stays exact because:

* a card is first read from the store from the batch's lower bound up to +inf, and its
  latest ``CARD_ROWS_CAP`` rows, all of them, so nothing the store holds above that
  bound is missing; a later batch that needs to reach further back reads it again;
* a batch's writes reach it only once the store acknowledged them, pruned as the store
  prunes them;
* what it hands out are copies, so a batch's own work never changes it;
* it forgets everything whenever partitions move (``clear``), and a batch that read
  before then does not fill it (``generation``);
* it switches itself off for good at the first transaction whose record key is not its
  card id: a producer that does not key by card may send a card's transactions to
  several partitions, hence several writers.

``capacity`` bounds the cards held (least recently used ones go first).
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from streamer.events import Transaction
from streamer.features.fraud import AFTER_EVERY_ID, CARD_HORIZON, CardHistory, insert_new
from streamer.state.store import CARD_ROWS_CAP, PRUNE_GRACE, CardState, TimeRange, row_bytes

log = logging.getLogger(__name__)

Row = tuple[float, str, bytes]


@dataclass
class CachedCard:
    since: float
    """Everything the store holds for the card after this event time is here."""
    transactions: list[tuple[float, str, float]] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)

    def serve(self, window: TimeRange) -> CardState:
        """What the store would answer for ``window``: transactions in (lo, hi], rows up
        to hi (all of them: at least as many as asked for)."""
        lo = bisect.bisect_right(self.transactions, (window[0], AFTER_EVERY_ID))
        return CardState(CardHistory(self.transactions[lo : _end(self.transactions, window[1])]),
                         self.rows[: _end(self.rows, window[1])])

    def store(self, transactions: Sequence[Transaction], rows: Sequence[bytes] | None) -> None:
        """A write the store acknowledged, pruned as the store prunes it."""
        for tx in transactions:
            insert_new(self.transactions, (tx.ts, tx.transaction_id, tx.amount))
        prune_below = max(tx.ts for tx in transactions) - CARD_HORIZON - PRUNE_GRACE if transactions else None
        if prune_below is not None and self.transactions and self.transactions[0][0] < prune_below:
            del self.transactions[: bisect.bisect_left(self.transactions, (prune_below,))]
        if rows is not None:
            for tx, row in zip(transactions, rows):
                insert_new(self.rows, (tx.ts, tx.transaction_id, row))
            del self.rows[:-CARD_ROWS_CAP]


def _end(entries: list, ts: float) -> int:  # type: ignore[type-arg]
    """Where the entries ``(ts, id, …)`` (sorted) at or before ``ts`` end: one comparison
    when that is all of them, as it mostly is."""
    if not entries or entries[-1][0] <= ts:
        return len(entries)
    return bisect.bisect_right(entries, (ts, AFTER_EVERY_ID))


class CardCache:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.cards: dict[str, CachedCard] = {}
        self.generation = 0
        """Bumped by ``clear``: a batch that read before it must not fill the cache."""
        self.enabled = capacity > 0
        self.hits = 0  # card reads served here, for the tests
        self.misses = 0

    def clear(self) -> None:
        self.cards.clear()
        self.generation += 1

    def check_keys(self, keys: Sequence[bytes | None], transactions: Sequence[Transaction]) -> None:
        """Switch off for good unless every transaction came keyed by its card id."""
        if not self.enabled:
            return
        for key, tx in zip(keys, transactions):
            if key != tx.card_id.encode():
                log.warning("transaction %s arrived with key %r, not its card id: the card cache is off "
                            "(a card's transactions may be in several partitions)", tx.transaction_id, key)
                self.enabled = False
                self.clear()
                return

    def split(self, cards: Mapping[str, TimeRange]) -> tuple[dict[str, CardState], dict[str, TimeRange]]:
        """The cards served from here, and the ranges to read from the store for the
        others (up to +inf: the cache then takes them whole)."""
        served: dict[str, CardState] = {}
        to_read: dict[str, TimeRange] = {}
        for card_id, window in cards.items():
            cached = self.cards.get(card_id) if self.enabled else None
            if cached is not None and window[0] >= cached.since:
                self.cards[card_id] = self.cards.pop(card_id)  # most recently used last
                served[card_id] = cached.serve(window)
                self.hits += 1
            else:
                to_read[card_id] = (window[0], float("inf")) if self.enabled else window
                self.misses += 1
        return served, to_read

    def take(self, read: Mapping[str, CardState], ranges: Mapping[str, TimeRange],
             windows: Mapping[str, TimeRange], generation: int) -> dict[str, CardState]:
        """The cards read from the store (over ``ranges``, as ``split`` gave them) as the
        store would answer for ``windows``; kept unless the cache was cleared since the
        read began (``generation``)."""
        if not self.enabled:
            return dict(read)
        served = {}
        keep = generation == self.generation
        for card_id, state in read.items():
            card = CachedCard(ranges[card_id][0], list(state.history.entries), list(state.rows))
            served[card_id] = card.serve(windows[card_id])
            if keep:
                self.cards.pop(card_id, None)
                self.cards[card_id] = card
        while len(self.cards) > self.capacity:
            del self.cards[next(iter(self.cards))]
        return served

    def store(self, transactions: Sequence[Transaction], rows: np.ndarray | None, generation: int) -> None:
        """A batch's write, once the store acknowledged it."""
        if not self.enabled or generation != self.generation:
            return
        stored_rows = None if rows is None else row_bytes(rows, len(transactions))
        by_card: dict[str, list[int]] = {}
        for i, tx in enumerate(transactions):
            by_card.setdefault(tx.card_id, []).append(i)
        for card_id, indices in by_card.items():
            cached = self.cards.get(card_id)
            if cached is not None:
                card_rows = None if stored_rows is None else [stored_rows[i] for i in indices]
                cached.store([transactions[i] for i in indices], card_rows)

    def view(self, card_id: str) -> CardState | None:
        """What is held for a card, for tests and tools."""
        cached = self.cards.get(card_id)
        return None if cached is None else cached.serve((cached.since, float("inf")))
