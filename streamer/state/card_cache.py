"""The cards' state kept in the worker between batches, in front of the state store.

A card's transactions all come through one partition (the topic is keyed by card), and
a partition is consumed by one worker at a time, so while a worker holds a partition it
is the only writer of those cards' state: what it read and wrote is what the store
holds. ``CardCache`` keeps, per card, exactly what the store holds from some event time
on: the transactions and the latest feature rows. A batch then
reads from the store only the terminals and the cards it has not seen (or needs further
back than it holds).

A batch works on the held states themselves, not on copies: copying a month of a
card's transactions for every batch it came in cost more than computing its features
(docs/benchmarks.md). The batch adds its transactions to them as it computes their
features (``TransactionFeatures``), stores them, then hands over its rows (``store``).
Until the store acknowledged that write, the held states are ahead of the store by that
batch; a batch that fails in between makes the cache forget its cards (``drop``). A
state may hold more than a batch asked for (older transactions, later rows): the
features and the card embeddings read only what lies within their windows.

It stays exact because:

* a card is first read from the store from the batch's lower bound up to +inf, and its
  latest ``CARD_ROWS_CAP`` rows, all of them, so nothing the store holds above that
  bound is missing; a later batch that needs to reach further back reads it again;
* a batch's transactions stay only once the store acknowledged them (else ``drop``),
  pruned as the store prunes them;
* it forgets everything whenever partitions move (``clear``), and a batch that read
  before then does not fill it (``generation``);
* it switches itself off for good at the first transaction whose record key is not its
  card id: a producer that does not key by card may send a card's transactions to
  several partitions, hence several writers.

``capacity`` bounds the cards held (least recently used ones go first).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from streamer.events import Transaction
from streamer.features.fraud import CARD_HORIZON
from streamer.state.interface import CARD_ROWS_CAP, PRUNE_GRACE, CardState, TimeRange, row_bytes

log = logging.getLogger(__name__)


@dataclass
class CachedCard:
    since: float
    """Everything the store holds for the card after this event time is here."""
    state: CardState

    def store(self, ts: float, transaction_id: str, row: bytes | None) -> None:
        """A transaction the store acknowledged, which the state holds already, and its
        ``row``: pruned as the store prunes it, below the card's newest transaction
        (not this one's time: it may have come late)."""
        times = self.state.history.times
        if times and times[0] < (prune_below := times[-1] - CARD_HORIZON - PRUNE_GRACE):
            self.state.history.drop_before(prune_below)
        if row is not None:
            self.state.add_row(ts, transaction_id, row, CARD_ROWS_CAP)


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
        """The cards served from here (their held states), and the ranges to read from
        the store for the others (up to +inf: the cache then takes them whole)."""
        served: dict[str, CardState] = {}
        to_read: dict[str, TimeRange] = {}
        for card_id, window in cards.items():
            cached = self.cards.get(card_id) if self.enabled else None
            if cached is not None and window[0] >= cached.since:
                self.cards[card_id] = self.cards.pop(card_id)  # most recently used last
                served[card_id] = cached.state
                self.hits += 1
            else:
                to_read[card_id] = (window[0], float("inf")) if self.enabled else window
                self.misses += 1
        return served, to_read

    def take(self, read: Mapping[str, CardState], ranges: Mapping[str, TimeRange],
             generation: int) -> Mapping[str, CardState]:
        """The cards read from the store (over ``ranges``, as ``split`` gave them), as
        they are, held from now on unless the cache was cleared since the read began
        (``generation``)."""
        if self.enabled and generation == self.generation:
            for card_id, state in read.items():
                self.cards.pop(card_id, None)
                self.cards[card_id] = CachedCard(ranges[card_id][0], state)
            while len(self.cards) > self.capacity:
                del self.cards[next(iter(self.cards))]
        return read

    def store(self, transactions: Sequence[Transaction], rows: np.ndarray | None, generation: int) -> None:
        """A batch's write, once the store acknowledged it: its transactions are in the
        held states already, its rows go in."""
        if not self.enabled or generation != self.generation:
            return
        stored_rows = None if rows is None else row_bytes(rows, len(transactions))
        cards = self.cards
        for i, tx in enumerate(transactions):
            cached = cards.get(tx.card_id)
            if cached is not None:
                cached.store(tx.ts, tx.transaction_id, None if stored_rows is None else stored_rows[i])

    def drop(self, card_ids: Iterable[str]) -> None:
        """Forget these cards: a batch of theirs failed, and their held states may hold
        its transactions, which the store may not."""
        for card_id in card_ids:
            self.cards.pop(card_id, None)

    def view(self, card_id: str) -> CardState | None:
        """What is held for a card, for tests and tools."""
        cached = self.cards.get(card_id)
        return None if cached is None else cached.state
