"""Card embeddings of the fraud sequence model: each transaction's card history before it,
batch-independent, one encoder row per transaction."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.events import Transaction, format_time
from streamer.inference.fraud_scorer import FraudScorer
from streamer.pipeline.card_sequence import CardEmbeddings
from streamer.pipeline.fraud import TransactionFeatures
from streamer.settings import Settings
from streamer.state.memory import InMemoryStateStore

T0 = 1533081600.0


@pytest.fixture(scope="module")
def scorer() -> FraudScorer:
    shipped = FraudScorer(Settings.from_env().models.fraud)
    assert shipped.sequence_length > 0, "the shipped fraud model is the card-sequence transformer"
    return shipped


def transactions(n: int) -> list[Transaction]:
    return [Transaction(f"{i:04d}", f"c{i % 3}", f"t{i % 5}", 10.0 + 7 * i % 50, T0 + 1800 * i, format_time(T0 + 1800 * i))
            for i in range(n)]


async def scores_in_batches(scorer: FraudScorer, events: list[Transaction], size: int) -> tuple[np.ndarray, CardEmbeddings]:
    store = InMemoryStateStore()
    features, embeddings = TransactionFeatures(store, scorer.sequence_length), CardEmbeddings(scorer)
    out = []
    for start in range(0, len(events), size):
        batch = events[start : start + size]
        rows = np.asarray(await features.compute(batch), dtype=np.float32)
        out.append(scorer.score(rows, embeddings.embed(batch, rows, features.cards)))
    return np.concatenate(out), embeddings


async def test_scores_do_not_depend_on_batch_boundaries(scorer: FraudScorer) -> None:
    events = transactions(60)
    one, _ = await scores_in_batches(scorer, events, 1)
    seven, _ = await scores_in_batches(scorer, events, 7)
    whole, _ = await scores_in_batches(scorer, events, 60)
    assert one == pytest.approx(seven, abs=1e-6) and one == pytest.approx(whole, abs=1e-6)


async def test_each_transaction_is_encoded_once_whatever_the_batches(scorer: FraudScorer) -> None:
    for size in (1, 7, 30):
        _, embeddings = await scores_in_batches(scorer, transactions(30), size)
        assert embeddings.encoded == 30, size


async def test_a_transaction_is_scored_with_the_encoding_of_its_cards_rows_before_it(scorer: FraudScorer) -> None:
    """The embedding is the encoder's over the card's last ``L`` feature rows ordered
    before the transaction (left-padded), the rows stored by earlier batches and those of
    the batch's earlier transactions alike."""
    events = transactions(3 * (scorer.sequence_length + 4))  # cards c0..c2: more rows each than the encoder reads
    store = InMemoryStateStore()
    features, embeddings = TransactionFeatures(store, scorer.sequence_length), CardEmbeddings(scorer)
    rows: list[np.ndarray] = []
    got: list[np.ndarray] = []
    for start in range(0, len(events), 5):
        batch = events[start : start + 5]
        batch_rows = np.asarray(await features.compute(batch), dtype=np.float32)
        rows += list(batch_rows)
        got += list(embeddings.embed(batch, batch_rows, features.cards))
    length, width = scorer.sequence_length, batch_rows.shape[1]
    for i, tx in enumerate(events):
        before = [row for j, row in enumerate(rows[:i]) if events[j].card_id == tx.card_id][-length:]
        history = np.zeros((1, length, width), dtype=np.float32)
        valid = np.zeros((1, length), dtype=np.float32)
        if before:
            history[0, length - len(before) :] = before
            valid[0, length - len(before) :] = 1.0
        assert got[i] == pytest.approx(scorer.encode(history, valid)[0], abs=1e-5), i


async def test_history_comes_from_the_store_and_later_rows_stay_invisible(scorer: FraudScorer) -> None:
    events = transactions(12)
    store = InMemoryStateStore()
    features, embeddings = TransactionFeatures(store, scorer.sequence_length), CardEmbeddings(scorer)
    rows = np.asarray(await features.compute(events), dtype=np.float32)
    first = scorer.score(rows, embeddings.embed(events, rows, features.cards))
    # Re-processing an early transaction after later ones were stored gives its old score.
    again_rows = np.asarray(await features.compute(events[4:5]), dtype=np.float32)
    again = scorer.score(again_rows, embeddings.embed(events[4:5], again_rows, features.cards))
    assert again[0] == pytest.approx(first[4], abs=1e-6)



async def test_a_transaction_arriving_late_with_a_later_one_of_its_card_is_scored_as_in_order(scorer: FraudScorer) -> None:
    """Scores depend on the events, not their arrival: a card's transaction that comes
    after 30 later ones, in one batch with a yet later one, still gets the embedding of
    the rows before it (they lie below the card's latest rows in the store)."""
    events = [Transaction(f"{i:04d}", "c", "t", 10.0 + i, T0 + 1800 * i, format_time(T0 + 1800 * i)) for i in range(40)]
    in_order, _ = await scores_in_batches(scorer, events, 1)
    store = InMemoryStateStore()
    features, embeddings = TransactionFeatures(store, scorer.sequence_length), CardEmbeddings(scorer)
    for batch in [*([e] for e in events[:5] + events[6:36]), [events[5], events[36]]]:
        rows = np.asarray(await features.compute(batch), dtype=np.float32)
        scores = scorer.score(rows, embeddings.embed(batch, rows, features.cards))
    assert scores[0] == pytest.approx(in_order[5], abs=1e-6)  # the later one's history rows were computed without it


async def test_a_transaction_arriving_after_a_later_one_of_its_card_is_scored_alike_in_any_batches(scorer: FraudScorer) -> None:
    """Two transactions of a card at the same second arrive in reverse id order (so the
    second to arrive is ordered first): the scores, theirs and the next ones', are the
    same whether the two share a batch or not. The first to arrive does not see the
    other; the card's latest embedding then covers both, though its key (the latest
    row) stays the same."""
    events = transactions(30)
    late, early = events[12], events[15]  # both of card c0
    events[12] = Transaction("0013b", late.card_id, late.terminal_id, late.amount, late.ts, late.timestamp)
    events[15] = Transaction("0013a", early.card_id, early.terminal_id, early.amount, late.ts, late.timestamp)
    events.insert(13, events.pop(15))  # "0013b" arrives, then "0013a", ordered before it
    together, _ = await scores_in_batches(scorer, events, 30)
    for size in (1, 13):  # "0013a" in the batch after "0013b"'s
        apart, _ = await scores_in_batches(scorer, events, size)
        assert apart == pytest.approx(together, abs=1e-6), size


async def test_embedding_a_batch_leaves_the_card_states_as_read(scorer: FraudScorer) -> None:
    """The states are read, never written: a card that comes once in the batch is read in
    place, one that comes again gets a copy with the batch's earlier rows."""
    events = transactions(30)
    store = InMemoryStateStore()
    features, embeddings = TransactionFeatures(store, scorer.sequence_length), CardEmbeddings(scorer)
    await features.compute(events[:20])
    batch = [events[20], events[23], events[21], events[22]]  # c2, c2 again, c0 and c1 once
    rows = np.asarray(await features.compute(batch), dtype=np.float32)
    read = {card_id: list(state.rows) for card_id, state in features.cards.items()}
    embeddings.embed(batch, rows, features.cards)
    assert {card_id: state.rows for card_id, state in features.cards.items()} == read
