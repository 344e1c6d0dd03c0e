"""The in-memory twin of ``RedisStateStore``: same contract, plain dicts.

Used by unit tests, by the offline (broker-less) replay and by training, which runs
the very features the stream computes over a whole data file. No TTLs: nothing idles.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Mapping, Sequence

from streamer.events import FraudLabel, Transaction
from streamer.features.fraud import (
    AFTER_EVERY_ID, CARD_HORIZON, TERMINAL_HORIZON, CardHistory, TerminalCounts, TerminalHistory, window_counts,
)
from streamer.state.interface import (
    CARD_ROWS_CAP, PRUNE_GRACE, SEEN_CAP, SEQUENCE_CAP, CachedEmbedding, CardState, FeatureRows, FraudState, Progress,
    StreamProgress, TimeRange, UserState, UserUpdate, replaces, row_bytes,
)


class _EventLog:
    """One key's entries ``(ts, id, …)``, sorted, one per id; the in-memory sorted set."""

    def __init__(self) -> None:
        self.entries: list[tuple] = []  # type: ignore[type-arg]
        self.ids: set[str] = set()

    def insert(self, entry: tuple) -> None:  # type: ignore[type-arg]
        """Insert keeping order; skip an id already there."""
        if entry[1] in self.ids:
            return
        self.ids.add(entry[1])
        bisect.insort(self.entries, entry)

    def insert_earliest_label(self, entry: tuple[float, str, float]) -> None:
        """``insert`` a fraud ``(ts, id, labelled_ts)``, or put it in place of its
        transaction's when it was labelled earlier (``store.earliest_labels``)."""
        if entry[1] in self.ids:
            held = next(i for i, old in enumerate(self.entries) if old[1] == entry[1])
            if entry[2] >= self.entries[held][2]:
                return
            del self.entries[held]
            self.ids.discard(entry[1])
        self.insert(entry)

    def prune_before(self, cutoff: float) -> None:
        """Forget the entries before event time ``cutoff``."""
        if self.entries and self.entries[0][0] < cutoff:
            cut = bisect.bisect_left(self.entries, (cutoff,))
            self.ids.difference_update(old[1] for old in self.entries[:cut])
            del self.entries[:cut]

    def window(self, window: TimeRange) -> list[tuple]:  # type: ignore[type-arg]
        """Entries with lo < ts <= hi."""
        lo = bisect.bisect_right(self.entries, (window[0], AFTER_EVERY_ID))
        hi = bisect.bisect_right(self.entries, (window[1], AFTER_EVERY_ID))
        return self.entries[lo:hi]


_EMPTY = _EventLog()


class _CardLog:
    """One card's transactions, one per id, in ``CardHistory``'s columns: a read is
    three slices, not a tuple per transaction to take apart (the handbook test reads
    about a million cards)."""

    __slots__ = ("history", "ids")

    def __init__(self) -> None:
        self.history = CardHistory()
        self.ids: set[str] = set()

    def insert(self, ts: float, transaction_id: str, amount: float) -> None:
        """Insert keeping order, skip an id already there, prune past the horizon + grace."""
        if transaction_id in self.ids:
            return
        self.ids.add(transaction_id)
        history = self.history
        history.add(ts, transaction_id, amount)
        cutoff = history.times[-1] - CARD_HORIZON - PRUNE_GRACE
        if history.times[0] < cutoff:
            self.ids.difference_update(history.ids[: bisect.bisect_left(history.times, cutoff)])
            history.drop_before(cutoff)

    def window(self, window: TimeRange) -> CardHistory:
        """A new history of the transactions with lo < ts <= hi."""
        times = self.history.times
        lo, hi = bisect.bisect_right(times, window[0]), bisect.bisect_right(times, window[1])
        return CardHistory.of_columns(times[lo:hi], self.history.ids[lo:hi], self.history.amounts[lo:hi])


_NO_CARD = _CardLog()


def _prune(logs: Mapping[str, _EventLog], newest: Mapping[str, float]) -> None:
    """Each terminal a write touched, pruned past the horizon and grace behind the newest
    event of that write, as the Redis store's write prunes it (``ADD_MANY``)."""
    for terminal_id, ts in newest.items():
        logs[terminal_id].prune_before(ts - TERMINAL_HORIZON - PRUNE_GRACE)


class InMemoryStateStore:
    """``count_terminals``: terminals named in ``read_fraud``'s ``terminal_ends`` come
    counted (``TerminalCounts``), as the Redis store sends them; without it, every
    terminal comes with its transactions (``TerminalHistory``), the reference the
    counts are checked against."""

    def __init__(self, count_terminals: bool = True) -> None:
        self.count_terminals = count_terminals
        self.cards: dict[str, _CardLog] = defaultdict(_CardLog)
        self.terminal_tx: dict[str, _EventLog] = defaultdict(_EventLog)
        self.terminal_fraud: dict[str, _EventLog] = defaultdict(_EventLog)
        self.sequences: dict[str, dict[str, tuple[float, str]]] = defaultdict(dict)
        self.seen: dict[str, dict[str, float]] = defaultdict(dict)
        self.embeddings: dict[str, CachedEmbedding] = {}
        self.stream_progress: dict[str, Progress] = {}
        self.card_rows: dict[str, dict[str, tuple[float, bytes]]] = defaultdict(dict)

    async def read_fraud(
        self, cards: Mapping[str, TimeRange], terminals: Mapping[str, TimeRange], sequence_rows: int = 0,
        progress_of: Sequence[str] = (), terminal_ends: Mapping[str, Sequence[float]] | None = None,
    ) -> FraudState:
        progress = {topic: dict(self.stream_progress.get(topic, {})) for topic in progress_of}
        card_state: dict[str, CardState] = {}
        for card_id, window in cards.items():
            rows: list[tuple[float, str, bytes]] = []
            if sequence_rows:
                rows = sorted((ts, tx_id, row) for tx_id, (ts, row) in self.card_rows.get(card_id, {}).items()
                              if ts <= window[1])[-sequence_rows:]
            card_state[card_id] = CardState.of(self.cards.get(card_id, _NO_CARD).window(window), rows)
        ends = terminal_ends if terminal_ends and self.count_terminals else {}
        terminal_state: dict[str, TerminalHistory | TerminalCounts] = {}
        for terminal_id, window in terminals.items():
            transactions = self.terminal_tx.get(terminal_id, _EMPTY)
            frauds = self.terminal_fraud.get(terminal_id, _EMPTY).window(window)
            if terminal_id in ends:
                counts = {end: window_counts(transactions.entries, end) for end in ends[terminal_id]}
                terminal_state[terminal_id] = TerminalCounts(counts, frauds)
            else:
                terminal_state[terminal_id] = TerminalHistory.of(transactions.window(window), frauds)
        return FraudState(card_state, terminal_state, progress)

    async def write_fraud(
        self, transactions: Sequence[Transaction], rows: FeatureRows | None = None,
        progress: StreamProgress | None = None,
    ) -> None:
        if progress is not None:
            self.stream_progress.setdefault(progress.topic, {}).update(progress.partitions)
        stored_rows = [] if rows is None else row_bytes(rows, len(transactions))
        newest: dict[str, float] = {}  # per terminal, of this write
        for i, tx in enumerate(transactions):
            self.cards[tx.card_id].insert(tx.ts, tx.transaction_id, tx.amount)
            self.terminal_tx[tx.terminal_id].insert((tx.ts, tx.transaction_id))
            newest[tx.terminal_id] = max(tx.ts, newest.get(tx.terminal_id, tx.ts))
            if rows is not None:
                stored = self.card_rows[tx.card_id]
                stored.setdefault(tx.transaction_id, (tx.ts, stored_rows[i]))
                if len(stored) > CARD_ROWS_CAP:
                    ordered = sorted(stored.items(), key=lambda kv: (kv[1][0], kv[0]))
                    self.card_rows[tx.card_id] = dict(ordered[-CARD_ROWS_CAP:])
        _prune(self.terminal_tx, newest)

    async def write_labels(self, labels: Sequence[FraudLabel], progress: StreamProgress | None = None) -> None:
        if progress is not None:
            self.stream_progress.setdefault(progress.topic, {}).update(progress.partitions)
        newest: dict[str, float] = {}
        for label in labels:
            if label.is_fraud:
                self.terminal_fraud[label.terminal_id].insert_earliest_label((label.ts, label.transaction_id,
                                                                              label.labelled_ts))
                newest[label.terminal_id] = max(label.ts, newest.get(label.terminal_id, label.ts))
        _prune(self.terminal_fraud, newest)

    async def read_progress(self, topic: str) -> Progress:
        return dict(self.stream_progress.get(topic, {}))

    async def read_users(self, user_ids: Sequence[str]) -> dict[str, UserState]:
        return {
            user_id: UserState(
                sequence=sorted((ts, event_id, item) for event_id, (ts, item) in self.sequences.get(user_id, {}).items()),
                seen=dict(self.seen.get(user_id, {})),
                embedding=self.embeddings.get(user_id),
            )
            for user_id in user_ids
        }

    async def write_users(self, updates: Sequence[UserUpdate]) -> None:
        for update in updates:
            sequence = self.sequences[update.user_id]
            seen = self.seen[update.user_id]
            for click in update.clicks:
                sequence[click.event_id] = (click.ts, click.item_id)
                seen[click.item_id] = min(seen.get(click.item_id, click.ts), click.ts)
            if len(sequence) > SEQUENCE_CAP:
                ordered = sorted(sequence.items(), key=lambda kv: (kv[1][0], kv[0]))
                self.sequences[update.user_id] = dict(ordered[-SEQUENCE_CAP:])
            if len(seen) > SEEN_CAP:  # Redis's order: score, then member
                self.seen[update.user_id] = dict(sorted(seen.items(), key=lambda kv: (kv[1], kv[0]))[-SEEN_CAP:])
            new = update.embedding
            old = self.embeddings.get(update.user_id)
            if new is not None and replaces(new, old):
                self.embeddings[update.user_id] = new

    async def close(self) -> None:
        return None

