"""The fraud model's 15 engineered features, computed in event time.

Sits between the state read and inference: given a card's recent transactions and a
terminal's transactions and fraud labels (as read from Redis, plus the earlier events
of the same micro-batch), compute the features of the Fraud Detection Handbook:

* ``TX_AMOUNT``, ``TX_DURING_WEEKEND``, ``TX_DURING_NIGHT`` (hour <= 6, UTC);
* per card, over (t - w, t], the current transaction included: count and mean amount
  for w = 1, 7, 30 days;
* per terminal, over (t - 7 d - w, t - 7 d]: count, and the share of those that were
  labelled fraud with a label known at t (its ``labelled_at`` <= t); 0 when empty.

Events are ordered by ``(event time, id)``; an event sees exactly the events ordered
at or before it, so results depend on the set of events stored, never on batch
boundaries or wall-clock time. Training imports this module, so the model learns on
the very features the stream computes.
"""

from __future__ import annotations

import bisect
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone

DAY = 86400.0
WINDOWS_DAYS = (1, 7, 30)  # ascending
DELAY_DAYS = 7

FEATURE_NAMES = (
    "TX_AMOUNT",
    "TX_DURING_WEEKEND",
    "TX_DURING_NIGHT",
    "CUSTOMER_ID_NB_TX_1DAY_WINDOW",
    "CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW",
    "CUSTOMER_ID_NB_TX_7DAY_WINDOW",
    "CUSTOMER_ID_AVG_AMOUNT_7DAY_WINDOW",
    "CUSTOMER_ID_NB_TX_30DAY_WINDOW",
    "CUSTOMER_ID_AVG_AMOUNT_30DAY_WINDOW",
    "TERMINAL_ID_NB_TX_1DAY_WINDOW",
    "TERMINAL_ID_RISK_1DAY_WINDOW",
    "TERMINAL_ID_NB_TX_7DAY_WINDOW",
    "TERMINAL_ID_RISK_7DAY_WINDOW",
    "TERMINAL_ID_NB_TX_30DAY_WINDOW",
    "TERMINAL_ID_RISK_30DAY_WINDOW",
)
#: ``TX_DURING_NIGHT``: the hour (UTC) is at most this; ``TX_DURING_WEEKEND``: the
#: weekday (Monday 0) is at least this.
NIGHT_LAST_HOUR = 6
WEEKEND_FIRST_DAY = 5

#: A feature row as the engine computes it: the book's 15, and the seconds since the
#: card's previous transaction (the sequence model's time step; ``NO_PREVIOUS`` when
#: the card has none within its 30-day state).
ROW_FIELDS = (*FEATURE_NAMES, "SECONDS_SINCE_PREVIOUS")
NO_PREVIOUS = 30 * DAY

#: What a model trained on these features learnt them as: the names and every constant
#: that defines their values. A model's manifest records its hash, and the worker
#: refuses a model whose hash differs (``FraudScorer``), so a change to a window, the
#: label delay or the night would not go on scoring with a model trained before it.
FEATURE_SCHEMA: Mapping[str, object] = {
    "features": FEATURE_NAMES, "row": ROW_FIELDS, "windows_days": WINDOWS_DAYS, "label_delay_days": DELAY_DAYS,
    "night_last_hour_utc": NIGHT_LAST_HOUR, "weekend_first_day": WEEKEND_FIRST_DAY, "no_previous_s": NO_PREVIOUS,
}


def schema_hash(schema: Mapping[str, object]) -> str:
    """A feature schema's hash, as manifests record it."""
    return hashlib.sha256(json.dumps(schema, sort_keys=True).encode()).hexdigest()[:16]


FEATURE_SCHEMA_HASH = schema_hash(FEATURE_SCHEMA)

#: How far back a card's state must reach, and a terminal's.
CARD_HORIZON = max(WINDOWS_DAYS) * DAY
TERMINAL_HORIZON = (DELAY_DAYS + max(WINDOWS_DAYS)) * DAY


#: Sorts after every id: ``(ts, AFTER_EVERY_ID)`` bounds the entries at or before ``ts``.
AFTER_EVERY_ID = "\U0010ffff"


def position(entries: list, ts: float, entry_id: str) -> int:  # type: ignore[type-arg]
    """Where ``(ts, entry_id)`` goes among the sorted entries ``(ts, id, …)``: before any
    entry of that time and id (``bisect_left``). One comparison when it comes after every
    one, as most events do."""
    if entries:
        last = entries[-1]
        if last[0] > ts or (last[0] == ts and last[1] >= entry_id):
            return bisect.bisect_left(entries, (ts, entry_id))
    return len(entries)


def key_position(times: list[float], ids: list[str], ts: float, entry_id: str) -> int:
    """``position`` among entries held as two lists in the same order, sorted by
    ``(event time, id)``: their times and their ids."""
    if times and (times[-1] > ts or (times[-1] == ts and ids[-1] >= entry_id)):
        lo = bisect.bisect_left(times, ts)
        return bisect.bisect_left(ids, entry_id, lo, bisect.bisect_right(times, ts, lo))
    return len(times)


def held_at(times: list[float], ids: list[str], at: int, ts: float, entry_id: str) -> bool:
    """Whether the transaction ``(ts, entry_id)`` is there already, given its
    ``key_position`` ``at`` (an id always comes with the same event time, so a repeat
    sits right at its place)."""
    return at < len(times) and ids[at] == entry_id and times[at] == ts


def new_key_position(times: list[float], ids: list[str], ts: float, entry_id: str) -> int | None:
    """``key_position``, or None when that transaction is there already (``new_position``
    for entries held as their times and ids)."""
    at = key_position(times, ids, ts, entry_id)
    return None if held_at(times, ids, at, ts, entry_id) else at


def new_position(entries: list, ts: float, entry_id: str) -> int | None:  # type: ignore[type-arg]
    """``position`` of ``(ts, entry_id)``, or None when that transaction is there already
    (an id always comes with the same event time, so a repeat sits right at its place)."""
    at = position(entries, ts, entry_id)
    if at < len(entries) and entries[at][1] == entry_id and entries[at][0] == ts:
        return None
    return at


def insert_new(entries: list, entry: tuple) -> bool:  # type: ignore[type-arg]
    """Insert ``(ts, id, …)`` in order unless that transaction is there already; returns
    whether it was inserted."""
    at = new_position(entries, entry[0], entry[1])
    if at is None:
        return False
    entries.insert(at, entry)
    return True


class CardHistory:
    """A card's transactions, sorted by ``(event time, id)``, one per id, as three lists in
    that order: their event times, ids and amounts. ``windows`` bisects the times and
    sums slices of the amounts, where picking them out of tuples cost about half of its
    time for a month of a card's transactions; and with no tuple a transaction, a card
    held for its next batch takes about 5 KB less for 80 transactions (docs/benchmarks.md,
    the session of 2026-12-06 from 16:52 UTC)."""

    __slots__ = ("times", "ids", "amounts")

    def __init__(self, entries: Iterable[tuple[float, str, float]] = ()) -> None:
        """From ``entries`` ``(ts, transaction_id, amount)``, sorted, one per id."""
        self.times: list[float] = []
        self.ids: list[str] = []
        self.amounts: list[float] = []
        for ts, transaction_id, amount in entries:
            self.times.append(ts)
            self.ids.append(transaction_id)
            self.amounts.append(amount)

    @classmethod
    def of(cls, entries: Iterable[tuple[float, str, float]]) -> CardHistory:
        """From a store's entries (one per id), in any order: one sort, not one insertion each."""
        return cls(sorted(entries))

    @classmethod
    def of_columns(cls, times: list[float], ids: list[str], amounts: list[float]) -> CardHistory:
        """From columns already in order, taken as they are (not copied)."""
        history = cls()
        history.times, history.ids, history.amounts = times, ids, amounts
        return history

    @property
    def entries(self) -> list[tuple[float, str, float]]:
        """The transactions as ``(ts, transaction_id, amount)``, made anew on each call
        (tests and tools)."""
        return list(zip(self.times, self.ids, self.amounts))

    def add(self, ts: float, transaction_id: str, amount: float) -> None:
        at = new_key_position(self.times, self.ids, ts, transaction_id)
        if at is None:
            return
        self.times.insert(at, ts)
        self.ids.insert(at, transaction_id)
        self.amounts.insert(at, amount)

    def drop_before(self, ts: float) -> None:
        """Forget the entries before event time ``ts``."""
        cut = bisect.bisect_left(self.times, ts)
        del self.times[:cut], self.ids[:cut], self.amounts[:cut]

    def windows(self, ts: float, transaction_id: str) -> list[float]:
        """Count and mean amount per window, for the event at ``(ts, transaction_id)``."""
        times, amounts = self.times, self.amounts
        end = len(times)
        if end and (times[-1] > ts or (times[-1] == ts and self.ids[-1] > transaction_id)):
            lo = bisect.bisect_left(times, ts)  # those at or before (ts, transaction_id)
            end = bisect.bisect_right(self.ids, transaction_id, lo, bisect.bisect_right(times, ts, lo))
        out: list[float] = []
        for days in WINDOWS_DAYS:
            start = bisect.bisect_right(times, ts - days * DAY, 0, end)
            count = end - start
            out.append(float(count))
            out.append(sum(amounts[start:end]) / count if count else 0.0)
        return out

    def seconds_since_previous(self, ts: float, transaction_id: str) -> float:
        """Time since the card's transaction ordered just before ``(ts, transaction_id)``,
        at most ``NO_PREVIOUS`` (the card horizon): entries a history holds from before
        the range a batch reads for the event change nothing."""
        at = key_position(self.times, self.ids, ts, transaction_id)
        return min(ts - self.times[at - 1], NO_PREVIOUS) if at else NO_PREVIOUS


@dataclass
class TerminalHistory:
    """A terminal's transactions ``(ts, id)`` and fraud labels ``(ts, id, labelled_ts)``, sorted, one per id."""

    transactions: list[tuple[float, str]] = field(default_factory=list)
    frauds: list[tuple[float, str, float]] = field(default_factory=list)

    @classmethod
    def of(cls, transactions: Iterable[tuple[float, str]], frauds: Iterable[tuple[float, str, float]]) -> TerminalHistory:
        """From a store's entries (one per id), in any order."""
        return cls(sorted(transactions), sorted(frauds))

    def add_transaction(self, ts: float, transaction_id: str) -> None:
        insert_new(self.transactions, (ts, transaction_id))

    def add_fraud(self, ts: float, transaction_id: str, labelled_ts: float) -> None:
        insert_new(self.frauds, (ts, transaction_id, labelled_ts))

    def windows(self, ts: float) -> list[float]:
        """Count and risk per window (t - delay - w, t - delay], labels known at t."""
        return terminal_windows(window_counts(self.transactions, ts - DELAY_DAYS * DAY), self.frauds, ts)


@dataclass
class TerminalCounts:
    """A terminal as the store counted it: its transactions per window for given window
    ends (``ts - DELAY_DAYS`` of the batch's transactions there), and its frauds.

    It gives the same features as the terminal's ``TerminalHistory`` for a batch whose
    transactions at the terminal span less than ``DELAY_DAYS`` (``countable``): none of
    them then falls in another's window, so adding them changes no count."""

    counts: dict[float, list[int]]
    """Window end -> transactions in each window (``WINDOWS_DAYS`` order)."""
    frauds: list[tuple[float, str, float]] = field(default_factory=list)

    def add_transaction(self, ts: float, transaction_id: str) -> None:
        """Nothing to add: no transaction of the batch falls in a window asked for."""

    def windows(self, ts: float) -> list[float]:
        return terminal_windows(self.counts[ts - DELAY_DAYS * DAY], self.frauds, ts)


def window_starts(end_ts: float) -> list[float]:
    """Where each terminal window that ends at ``end_ts`` starts (exclusive), by ``WINDOWS_DAYS``."""
    return [end_ts - days * DAY for days in WINDOWS_DAYS]


def window_counts(entries: list[tuple[float, str]], end_ts: float) -> list[int]:
    """Entries ``(ts, id)`` (sorted) in each window that ends at ``end_ts`` (``window_starts``):
    what Redis's ``ZCOUNT`` gives the ``TerminalCounts`` of a stored terminal."""
    end = bisect.bisect_right(entries, (end_ts, AFTER_EVERY_ID))
    return [end - bisect.bisect_right(entries, (start_ts, AFTER_EVERY_ID), 0, end) for start_ts in window_starts(end_ts)]


def terminal_windows(counts: list[int], frauds: list[tuple[float, str, float]], ts: float) -> list[float]:
    """Count and risk per window from the windows' transaction counts and the terminal's
    frauds (sorted): the share of a window's transactions labelled fraud by ``ts``."""
    if not frauds:  # most terminals: no risk to look up
        return [x for count in counts for x in (float(count), 0.0)]
    end_ts = ts - DELAY_DAYS * DAY
    fraud_end = bisect.bisect_right(frauds, (end_ts, AFTER_EVERY_ID))
    out: list[float] = []
    for count, start_ts in zip(counts, window_starts(end_ts)):
        fraud_start = bisect.bisect_right(frauds, (start_ts, AFTER_EVERY_ID))
        known = sum(1 for f in frauds[fraud_start:fraud_end] if f[2] <= ts)
        out.append(float(count))
        # a label counts even when its transaction was never stored here (a dead letter, another
        # terminal's id): the share is capped at 1, where training's always is
        out.append(min(known / count, 1.0) if count else 0.0)
    return out


def countable(window_ends: Iterable[float]) -> bool:
    """Whether a batch's transactions at a terminal, by their window ends, may be read as
    ``TerminalCounts``: they span less than ``DELAY_DAYS`` (with a second to spare for
    rounding), so none falls in another's window."""
    ends = list(window_ends)
    return max(ends) - min(ends) < DELAY_DAYS * DAY - 1.0


def calendar_features(ts: float) -> tuple[float, float]:
    """``TX_DURING_WEEKEND`` and ``TX_DURING_NIGHT`` of an event time (UTC)."""
    moment = datetime.fromtimestamp(ts, tz=timezone.utc)
    return float(moment.weekday() >= WEEKEND_FIRST_DAY), float(moment.hour <= NIGHT_LAST_HOUR)


def transaction_features(
    ts: float,
    transaction_id: str,
    amount: float,
    card: CardHistory,
    terminal: TerminalHistory | TerminalCounts,
) -> list[float]:
    """The row of ``ROW_FIELDS``: the 15 features in ``FEATURE_NAMES`` order, then the
    seconds since the card's previous transaction. ``card`` must hold the event itself."""
    weekend, night = calendar_features(ts)
    return [amount, weekend, night, *card.windows(ts, transaction_id), *terminal.windows(ts),
            card.seconds_since_previous(ts, transaction_id)]


@dataclass
class TimeWindows:
    """Per entity, the smallest ``(lo, hi]`` range of event time a batch needs to read."""

    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)

    def cover(self, entity_id: str, lo: float, hi: float) -> None:
        old = self.ranges.get(entity_id)
        self.ranges[entity_id] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))
