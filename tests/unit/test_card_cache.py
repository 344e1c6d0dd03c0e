"""The card cache in front of the state store: the same features, scores and state as
reading every card from the store, with fewer reads (pure logic: the in-memory store)."""

from __future__ import annotations

import random
from collections.abc import Mapping

import numpy as np
import pytest

from streamer.errors import DependencyError
from streamer.events import Transaction, format_time
from streamer.features.fraud import DAY
from streamer.inference.fraud_scorer import FraudScorer
from streamer.pipeline.card_sequence import CardEmbeddings
from streamer.pipeline.fraud import TransactionFeatures
from streamer.settings import Settings
from streamer.state.card_cache import CardCache
from streamer.state.memory import InMemoryStateStore
from streamer.state.interface import CARD_ROWS_CAP, CardState, TimeRange

T0 = 1533081600.0


class CountingStore(InMemoryStateStore):
    """Counts the cards read; ``during_read`` runs while a read is in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.cards_read = 0
        self.during_read = lambda: None
        self.fail_writes = False

    async def read_fraud(self, cards: Mapping[str, TimeRange], *args, **kwargs):  # type: ignore[no-untyped-def]
        self.cards_read += len(cards)
        self.during_read()
        return await super().read_fraud(cards, *args, **kwargs)

    async def write_fraud(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self.fail_writes:
            raise DependencyError("redis: connection reset")
        return await super().write_fraud(*args, **kwargs)


@pytest.fixture(scope="module")
def scorer() -> FraudScorer:
    return FraudScorer(Settings.from_env().models.fraud)


def stream(n: int, seed: int = 7) -> list[Transaction]:
    """Four cards over about 100 days (past the 37 days a card keeps, and past its 64
    rows), with some events out of order by up to two days, the cards' repeats included."""
    rng = random.Random(seed)
    out, ts = [], T0
    for i in range(n):
        ts += rng.uniform(0, 4 * 3600)
        at = ts - rng.uniform(0, 2 * DAY) if rng.random() < 0.1 else ts
        out.append(Transaction(f"{i:05d}", f"c{rng.randrange(4)}", f"t{rng.randrange(5)}", round(rng.uniform(1, 200), 2),
                               at, format_time(at)))
    return out


class Scoring:
    """What ``FraudPipeline`` does with a batch, minus decoding and publishing."""

    def __init__(self, scorer: FraudScorer, cache: CardCache) -> None:
        self.store = CountingStore()
        self.scorer = scorer
        self.features = TransactionFeatures(self.store, scorer.sequence_length, cache)
        self.embeddings = CardEmbeddings(scorer)

    async def batch(self, transactions: list[Transaction]) -> tuple[np.ndarray, np.ndarray]:
        with self.features.unless_stored(transactions):
            batch = await self.features.rows(transactions)
            rows = batch.matrix
            sequences = self.embeddings.sequences(transactions, rows, batch.cards)
            await self.features.store_batch(transactions, batch)
        return rows, self.scorer.score(rows, self.embeddings.encode(sequences))


async def stored(store: InMemoryStateStore, card_id: str, since: float) -> CardState:
    cards, _, _ = await store.read_fraud({card_id: (since, float("inf"))}, {}, CARD_ROWS_CAP)
    return cards[card_id]


def same_state(a: CardState, b: CardState) -> bool:
    return a.history.entries == b.history.entries and a.rows == b.rows


async def test_features_scores_and_state_are_those_of_reading_every_card_from_the_store(scorer: FraudScorer) -> None:
    events = stream(1200)
    cache = CardCache(capacity=3)  # fewer than the cards: evictions too
    cached, uncached = Scoring(scorer, cache), Scoring(scorer, CardCache(0))
    rng = random.Random(3)
    start, batches = 0, []
    while start < len(events):
        size = rng.randint(1, 40)
        batches.append(events[start : start + size])
        start += size
    batches.insert(20, batches[12])  # a batch processed again (at-least-once)
    for batch in batches:
        rows, scores = await cached.batch(batch)
        want_rows, want_scores = await uncached.batch(batch)
        assert np.array_equal(rows, want_rows)
        assert scores == pytest.approx(want_scores, abs=1e-6)
        for card_id, card in cache.cards.items():
            assert same_state(cache.view(card_id), await stored(uncached.store, card_id, card.since)), card_id  # type: ignore[arg-type]
    assert cache.hits > cache.misses > 0
    assert cached.store.cards_read < uncached.store.cards_read / 2


async def test_a_card_needed_further_back_than_it_is_held_is_read_again(scorer: FraudScorer) -> None:
    cache = CardCache(capacity=10)
    cached, uncached = Scoring(scorer, cache), Scoring(scorer, CardCache(0))
    late = [Transaction("b", "c", "t", 20.0, T0 + 5 * DAY, format_time(T0 + 5 * DAY))]
    early = [Transaction("a", "c", "t", 10.0, T0, format_time(T0))]  # arrives after: its window starts 5 days earlier
    for batch in (late, early):
        rows, _ = await cached.batch(batch)
        want, _ = await uncached.batch(batch)
        assert np.array_equal(rows, want)
    assert (cache.hits, cache.misses) == (0, 2)
    assert [tx_id for _, tx_id, _ in cache.view("c").history.entries] == ["a", "b"]  # type: ignore[union-attr]


async def test_a_transaction_later_than_the_prune_grace_is_pruned_as_the_store_prunes_it(scorer: FraudScorer) -> None:
    """The store prunes a card below its newest transaction, whatever the order they came
    in; a held state pruned only below each transaction's own time kept one 50 days late,
    and counted it for the next late one."""
    cached, uncached = Scoring(scorer, CardCache(capacity=10)), Scoring(scorer, CardCache(0))
    for days in (100, 50, 55):
        batch = [Transaction(f"at-{days}", "c", f"t{days}", 10.0, T0 + days * DAY, format_time(T0 + days * DAY))]
        rows, _ = await cached.batch(batch)
        want, _ = await uncached.batch(batch)
        assert np.array_equal(rows, want), days


def test_a_transaction_not_keyed_by_its_card_switches_the_cache_off() -> None:
    cache = CardCache(capacity=10)
    events = stream(3)
    cache.check_keys([tx.card_id.encode() for tx in events], events)
    assert cache.enabled
    cache.check_keys([b"some-other-key"], events[:1])
    assert not cache.enabled
    served, to_read = cache.split({"c0": (T0, T0 + 1)})
    assert not served and to_read == {"c0": (T0, T0 + 1)}  # read as asked, not to +inf


async def test_a_batch_that_read_before_partitions_moved_does_not_fill_the_cache(scorer: FraudScorer) -> None:
    cache = CardCache(capacity=10)
    scoring = Scoring(scorer, cache)
    scoring.store.during_read = cache.clear  # a rebalance while the read is in flight
    await scoring.batch(stream(10))
    assert cache.cards == {}


async def test_a_failed_write_leaves_the_cache_as_the_store_is(scorer: FraudScorer) -> None:
    cache = CardCache(capacity=10)
    scoring = Scoring(scorer, cache)
    events = stream(40)
    await scoring.batch(events[:30])
    failing = [tx for tx in events[30:] if tx.card_id != "c3"]
    touched = {tx.card_id for tx in failing}
    assert set(cache.cards) == {"c0", "c1", "c2", "c3"} and touched and "c3" not in touched
    untouched = list(cache.view("c3").history.entries)  # type: ignore[union-attr]
    scoring.store.fail_writes = True
    with pytest.raises(DependencyError):
        await scoring.batch(failing)
    # the failed batch's cards are forgotten (their states took its transactions), no other
    assert set(cache.cards) == {"c0", "c1", "c2", "c3"} - touched
    assert cache.view("c3").history.entries == untouched  # type: ignore[union-attr]
    scoring.store.fail_writes = False
    await scoring.batch(failing)  # the retry
    for card_id, card in cache.cards.items():
        assert same_state(cache.view(card_id), await stored(scoring.store, card_id, card.since))  # type: ignore[arg-type]


async def test_a_batch_works_on_the_held_states_and_the_cache_takes_its_rows_once_stored(scorer: FraudScorer) -> None:
    cache = CardCache(capacity=10)
    scoring = Scoring(scorer, cache)
    events = stream(20)
    await scoring.batch(events[:10])
    held = {card_id: card.state for card_id, card in cache.cards.items()}
    served, to_read = cache.split({card_id: (T0, T0 + 10 * DAY) for card_id in held})
    assert not to_read and all(served[card_id] is state for card_id, state in held.items())  # no copies
    await scoring.batch(events[10:])
    for card_id, card in cache.cards.items():
        assert same_state(cache.view(card_id), await stored(scoring.store, card_id, card.since))  # type: ignore[arg-type]


def test_a_held_cards_joined_rows_follow_the_rows_it_takes() -> None:
    """A card's rows are held joined: rows that come after every one held extend them; a
    late one goes in its place; a repeat changes nothing; the oldest go past the cap."""
    rng = random.Random(5)
    state, rows = CardState(), []
    for step in range(300):
        newest = rows[-1][0] if rows else T0
        batch = []
        for k in range(rng.randint(1, 4)):
            ts = newest + rng.uniform(1, 100) if rng.random() < 0.8 else newest - rng.uniform(0, 5000)
            row = (ts, f"tx{step}-{k}", np.full(16, ts, dtype=np.float32).tobytes())
            batch.append(row)
            if rng.random() < 0.1:
                batch.append(row)  # a repeat
        if rng.random() < 0.1 and rows:
            batch.append(rng.choice(rows))  # a transaction stored before
        for row in batch:
            state.add_row(*row, CARD_ROWS_CAP)
            if row not in rows:
                rows = sorted([*rows, row])[-CARD_ROWS_CAP:]
        assert state.rows == rows
        assert list(zip(state.row_times, state.row_ids)) == [(ts, tx_id) for ts, tx_id, _ in rows], step
        assert state.joined == b"".join(row for _, _, row in rows), step
