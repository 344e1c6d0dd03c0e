"""The state store's interface: what a pipeline reads and writes, and the rules both stores keep.

A pipeline reads the state of a whole micro-batch in one call and writes it back in one
call (``StateStore``). Two stores implement it: ``streamer.state.store.RedisStateStore``,
the one workers run, and ``streamer.state.memory.InMemoryStateStore``, its twin for unit
tests, the offline replay and training. This module imports neither Redis nor anything
else outside the standard library and numpy, so the pipelines, the in-memory store and
the training code that share it do not load a Redis client.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import numpy as np

from streamer.events import Click, FraudLabel, Transaction
from streamer.features.fraud import DAY, CardHistory, TerminalCounts, TerminalHistory, new_key_position

#: Entries older than the feature horizon plus this grace are pruned, so that an event
#: re-processed after a crash (at most this much older than the newest) still sees them.
PRUNE_GRACE = 7 * DAY
#: Events kept per user sequence (the model reads the most recent ``max_len``).
SEQUENCE_CAP = 200
#: Items remembered as seen per user (never recommended again): the most recently first
#: touched ones. Bounds a user's state in Redis and the ranker's exclusion mask.
SEEN_CAP = 1000
#: Feature rows kept per card (the fraud sequence model reads the most recent 16).
CARD_ROWS_CAP = 64
#: Floats in a stored feature row.
ROW_WIDTH = 16
#: Bytes of a stored feature row (float32).
ROW_BYTES = 4 * ROW_WIDTH

TimeRange = tuple[float, float]
"""``(lo, hi)``: entries with lo < event time <= hi."""

Progress = dict[int, tuple[int, float]]
"""Per partition of a topic: the next offset to store and the latest event time stored."""

FeatureRows = Sequence[Sequence[float]] | np.ndarray
"""Feature rows as a batch holds them: lists, or one float32 matrix (``ROW_WIDTH`` columns)."""


@dataclass(frozen=True)
class StreamProgress:
    """How far the label stream has been stored: per partition, the next offset and the
    latest ``labelled_at`` (event time) seen. Written in the same round trip as the labels."""

    topic: str
    partitions: Progress


@dataclass(frozen=True)
class CachedEmbedding:
    vector: np.ndarray
    ts: float
    event_id: str
    model: str


@dataclass
class UserState:
    sequence: list[tuple[float, str, str]] = field(default_factory=list)
    """``(ts, event_id, item_id)``, sorted: the user's most recent events."""
    seen: dict[str, float] = field(default_factory=dict)
    """item id -> first time the user touched it."""
    embedding: CachedEmbedding | None = None


class FraudState(NamedTuple):
    """What ``read_fraud`` returns."""

    cards: dict[str, CardState]
    terminals: dict[str, TerminalHistory | TerminalCounts]
    progress: dict[str, Progress]
    """Per topic asked for, its stored progress, read before the state: the state holds
    everything that progress says is stored (writers store it last)."""


@dataclass
class CardState:
    """What a batch reads of a card: its transactions in the feature window and, for the
    sequence model, its latest feature rows.

    The rows are held sorted by ``(event time, transaction id)``, one per transaction:
    their event times, their ids, and their bytes one after the other, ``ROW_BYTES`` each
    (``ROW_WIDTH`` float32, as ``row_bytes`` makes them). A transaction's encoder input is
    then one slice of the bytes: joining each transaction's rows one by one took 3.3-5.3 µs
    a transaction in batches of 512 to 4,096, a slice 1.5-2.1 (docs/benchmarks.md, the
    session of 2026-12-06 from 14:18 UTC). Held as a tuple and a bytes object a row, a
    card's 64 rows took about 10 KB more (the session of 2026-12-06 from 16:52 UTC).
    Change them only through ``add_row``."""

    history: CardHistory = field(default_factory=CardHistory)
    row_times: list[float] = field(default_factory=list)
    row_ids: list[str] = field(default_factory=list)
    joined: bytearray = field(default_factory=bytearray)

    @classmethod
    def of(cls, history: CardHistory, rows: Iterable[tuple[float, str, bytes]] = ()) -> CardState:
        """From rows ``(ts, transaction_id, row)``, sorted, one per transaction."""
        rows = list(rows)
        return cls(history, [row[0] for row in rows], [row[1] for row in rows],
                   bytearray().join([row[2] for row in rows]))

    @property
    def rows(self) -> list[tuple[float, str, bytes]]:
        """The rows as ``(ts, transaction_id, row)``, made anew on each call (tests and tools)."""
        joined = bytes(self.joined)
        return [(ts, tx_id, joined[i * ROW_BYTES : (i + 1) * ROW_BYTES])
                for i, (ts, tx_id) in enumerate(zip(self.row_times, self.row_ids))]

    def add_row(self, ts: float, transaction_id: str, row: bytes, cap: int) -> None:
        """Insert the row of the transaction at ``ts`` in order unless it is there already,
        and keep the latest ``cap``."""
        at = new_key_position(self.row_times, self.row_ids, ts, transaction_id)
        if at is None:
            return
        self.insert_row(at, ts, transaction_id, row)
        dropped = len(self.row_times) - cap
        if dropped > 0:
            del self.row_times[:dropped], self.row_ids[:dropped]
            del self.joined[: dropped * ROW_BYTES]  # a bytearray moves its start: no copy

    def insert_row(self, at: int, ts: float, transaction_id: str, row: bytes) -> None:
        """Put the row of a transaction not held yet at its place ``at``
        (``key_position`` among the rows)."""
        self.row_times.insert(at, ts)
        self.row_ids.insert(at, transaction_id)
        if at == len(self.row_times) - 1:  # after every row held, as most come
            self.joined += row
        else:
            self.joined[at * ROW_BYTES : at * ROW_BYTES] = row

    def with_rows_copied(self) -> CardState:
        """The same history, with rows of its own that ``insert_row`` may change."""
        return CardState(self.history, list(self.row_times), list(self.row_ids), bytearray(self.joined))


def row_bytes(rows: FeatureRows, count: int) -> list[bytes]:
    """Each of ``count`` feature rows as stored: ``ROW_WIDTH`` float32 as bytes (slices of
    one copy of them all)."""
    blob = np.asarray(rows, dtype=np.float32).reshape(count, ROW_WIDTH).tobytes()
    return [blob[i * ROW_BYTES : (i + 1) * ROW_BYTES] for i in range(count)]


def replaces(new: CachedEmbedding, old: CachedEmbedding | None) -> bool:
    """Whether ``new`` replaces a stored ``old``: it covers a later or the same
    ``(event time, event id)``. The Redis store's script (``SET_EMBEDDINGS_IF_NEWER``)
    applies the same rule on the server."""
    return old is None or (old.ts, old.event_id) <= (new.ts, new.event_id)



@dataclass(frozen=True)
class UserUpdate:
    user_id: str
    clicks: Sequence[Click]
    embedding: CachedEmbedding | None


class StateStore(Protocol):
    async def read_fraud(
        self, cards: Mapping[str, TimeRange], terminals: Mapping[str, TimeRange], sequence_rows: int = 0,
        progress_of: Sequence[str] = (), terminal_ends: Mapping[str, Sequence[float]] | None = None,
    ) -> FraudState:
        """Card transactions and terminal transactions and frauds in the given ranges; with
        ``sequence_rows``, also that many of each card's latest rows up to the range's
        end; the stored progress of the topics in ``progress_of``.
        A terminal in ``terminal_ends`` may come as ``TerminalCounts`` for those window
        ends instead of its transactions (the caller checked they are ``countable``)."""
        ...

    async def write_fraud(
        self, transactions: Sequence[Transaction], rows: FeatureRows | None = None,
        progress: StreamProgress | None = None,
    ) -> None:
        """Store transactions (and, for the sequence model, their feature rows) and the
        consuming partitions' progress."""
        ...

    async def write_labels(self, labels: Sequence[FraudLabel], progress: StreamProgress | None = None) -> None: ...

    async def read_progress(self, topic: str) -> Progress: ...

    async def read_users(self, user_ids: Sequence[str]) -> dict[str, UserState]: ...

    async def write_users(self, updates: Sequence[UserUpdate]) -> None: ...

    async def close(self) -> None: ...
