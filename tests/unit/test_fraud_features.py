"""The 15 handbook features, computed the way the stream computes them."""

from __future__ import annotations

import csv
import gzip
import collections

import numpy as np
import pytest

from streamer.datasets import FRAUD_CSV, SHARED_DATA
from streamer.events import Transaction, format_time
from streamer.features.fraud import (
    DAY, FEATURE_NAMES, NO_PREVIOUS, ROW_FIELDS, CardHistory, TerminalHistory, insert_new, transaction_features,
)
from streamer.pipeline.fraud import TransactionFeatures
from streamer.state.memory import InMemoryStateStore

T0 = 1533081600.0  # 2018-08-01T00:00:00Z, a Wednesday


def tx(n: int, ts: float, amount: float, card: str = "c", terminal: str = "t") -> Transaction:
    return Transaction(str(n), card, terminal, amount, ts, format_time(ts))


def test_entries_stay_sorted_by_time_then_id_one_per_id_wherever_they_land() -> None:
    entries: list[tuple[float, str, float]] = []
    arrivals = [(T0, "b", 1.0), (T0, "c", 2.0), (T0, "c", 2.0), (T0, "a", 3.0), (T0 - 1, "z", 4.0), (T0 + 1, "a", 5.0),
                (T0 + 1, "a", 5.0), (T0, "b", 1.0)]
    inserted = [insert_new(entries, entry) for entry in arrivals]
    assert inserted == [True, True, False, True, True, True, False, False]
    assert entries == sorted(set(arrivals))


def test_a_card_history_answers_as_its_transactions_sorted_whatever_the_ties_and_arrival_order() -> None:
    """The history keeps its times, ids and amounts in lists of their own: checked against
    the sorted transactions themselves, with many at the same event time."""
    import random

    rng = random.Random(11)
    card, stored = CardHistory(), {}
    for step in range(2000):
        ts = T0 + rng.choice([0, 1, 2, 3]) * 3600 + rng.randrange(3) * DAY
        tx_id = f"{rng.randrange(400):03d}"
        amount = stored.get(tx_id, (ts, tx_id, rng.uniform(1, 100)))[2]
        ts = stored.get(tx_id, (ts,))[0]  # an id always comes with the same time and amount
        card.add(ts, tx_id, amount)
        stored[tx_id] = (ts, tx_id, amount)
        entries = sorted(stored.values())
        assert card.entries == entries, step
        seen = [e for e in entries if (e[0], e[1]) <= (ts, tx_id)]
        want = []
        for days in (1, 7, 30):
            window = [e[2] for e in seen if e[0] > ts - days * DAY]
            want += [float(len(window)), sum(window) / len(window) if window else 0.0]
        assert card.windows(ts, tx_id) == pytest.approx(want), step
        before = [e for e in entries if (e[0], e[1]) < (ts, tx_id)]
        assert card.seconds_since_previous(ts, tx_id) == (ts - before[-1][0] if before else NO_PREVIOUS)


def test_card_windows_include_the_current_transaction_and_respect_boundaries() -> None:
    card = CardHistory()
    card.add(T0 - 30 * DAY, "0", 1000.0)  # exactly 30 days before: outside (t - 30 d, t]
    card.add(T0 - 2 * DAY, "1", 10.0)
    card.add(T0 - 3600, "2", 20.0)
    card.add(T0, "3", 30.0)
    card.add(T0 + 10, "4", 999.0)  # later: never visible
    features = transaction_features(T0, "3", 30.0, card, TerminalHistory())
    named = dict(zip(FEATURE_NAMES, features))
    assert named["CUSTOMER_ID_NB_TX_1DAY_WINDOW"] == 2
    assert named["CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW"] == pytest.approx(25.0)
    assert named["CUSTOMER_ID_NB_TX_7DAY_WINDOW"] == 3
    assert named["CUSTOMER_ID_NB_TX_30DAY_WINDOW"] == 3
    assert named["TX_DURING_NIGHT"] == 1.0 and named["TX_DURING_WEEKEND"] == 0.0


def test_terminal_risk_uses_only_labels_known_at_event_time() -> None:
    terminal = TerminalHistory()
    terminal.add_transaction(T0 - 8 * DAY, "a")
    terminal.add_transaction(T0 - 7.5 * DAY, "b")
    terminal.add_transaction(T0 - 1 * DAY, "c")  # inside the 7-day delay: not counted
    terminal.add_fraud(T0 - 8 * DAY, "a", labelled_ts=T0 - 1 * DAY)
    terminal.add_fraud(T0 - 7.5 * DAY, "b", labelled_ts=T0 + 1)  # not known yet at T0
    named = dict(zip(FEATURE_NAMES, transaction_features(T0, "x", 5.0, _card_with("x", 5.0), terminal)))
    assert named["TERMINAL_ID_NB_TX_1DAY_WINDOW"] == 1
    assert named["TERMINAL_ID_RISK_1DAY_WINDOW"] == 0.0
    assert named["TERMINAL_ID_NB_TX_7DAY_WINDOW"] == 2
    assert named["TERMINAL_ID_RISK_7DAY_WINDOW"] == pytest.approx(0.5)


def test_terminal_risk_is_a_share_even_with_labels_of_transactions_never_stored_there() -> None:
    """A label counts whether or not its transaction reached the terminal's state (it
    was dead-lettered, or the label names another terminal): two of them against one
    stored transaction made a risk of 2.0, which training never sees."""
    terminal = TerminalHistory()
    terminal.add_transaction(T0 - 7.5 * DAY, "a")
    terminal.add_fraud(T0 - 7.5 * DAY, "a", labelled_ts=T0 - 1 * DAY)
    terminal.add_fraud(T0 - 7.5 * DAY + 60, "never-stored", labelled_ts=T0 - 1 * DAY)
    named = dict(zip(FEATURE_NAMES, transaction_features(T0, "x", 5.0, _card_with("x", 5.0), terminal)))
    assert named["TERMINAL_ID_NB_TX_1DAY_WINDOW"] == 1
    assert named["TERMINAL_ID_RISK_1DAY_WINDOW"] == 1.0


def _card_with(transaction_id: str, amount: float) -> CardHistory:
    card = CardHistory()
    card.add(T0, transaction_id, amount)
    return card


async def test_features_do_not_depend_on_batch_boundaries() -> None:
    events = [tx(i, T0 + 3600 * i, 10.0 + i, card=f"c{i % 3}", terminal=f"t{i % 2}") for i in range(60)]

    async def run(batch: int) -> list[list[float]]:
        features = TransactionFeatures(InMemoryStateStore())
        rows: list[list[float]] = []
        for start in range(0, len(events), batch):
            rows.extend(await features.compute(events[start : start + batch]))
        return rows

    assert await run(1) == await run(7) == await run(60)


async def test_reprocessing_an_event_gives_the_same_features() -> None:
    store = InMemoryStateStore()
    features = TransactionFeatures(store)
    events = [tx(i, T0 + 60 * i, 5.0 * i) for i in range(10)]
    first = await features.compute(events)
    again = await features.compute(events[3:6])
    assert again == first[3:6]


def test_seconds_since_previous_follows_event_order_and_the_card_horizon() -> None:
    card = CardHistory()
    card.add(T0 - 31 * DAY, "0", 1.0)
    card.add(T0 - 100, "1", 1.0)
    card.add(T0, "2", 1.0)
    card.add(T0, "3", 1.0)  # same second: ordered after "2" by id
    assert card.seconds_since_previous(T0, "2") == 100
    assert card.seconds_since_previous(T0, "3") == 0
    assert card.seconds_since_previous(T0 - 100, "1") == NO_PREVIOUS  # 31 days back: beyond the state
    row = transaction_features(T0, "2", 1.0, card, TerminalHistory())
    assert len(row) == len(ROW_FIELDS) and row[-1] == 100


def test_a_card_history_holding_older_transactions_gives_the_same_features() -> None:
    """What a batch reads of a card starts at the card horizon before its transaction; a
    worker's card cache hands it a history that may reach further back (its held state):
    the features and the time since the previous transaction must not see the difference,
    also for a transaction exactly at the horizon."""
    horizon = T0 - 30 * DAY
    older = [(horizon - 5 * DAY, "a", 7.0), (horizon, "b", 11.0)]
    within = [(horizon + 60, "c", 13.0), (T0 - DAY, "d", 17.0), (T0 - 100, "e", 19.0)]
    read, held = CardHistory(list(within)), CardHistory(older + within)
    for card in (read, held):
        card.add(T0, "f", 23.0)
    assert held.windows(T0, "f") == read.windows(T0, "f")
    assert held.seconds_since_previous(T0, "f") == read.seconds_since_previous(T0, "f") == 100
    at_horizon, without = CardHistory([(horizon, "b", 11.0)]), CardHistory()
    for card in (at_horizon, without):
        card.add(T0, "f", 23.0)
    assert at_horizon.seconds_since_previous(T0, "f") == without.seconds_since_previous(T0, "f") == NO_PREVIOUS


@pytest.mark.data
@pytest.mark.timeout(1200)  # about 2 minutes on an idle 2-core machine
@pytest.mark.skipif(not FRAUD_CSV.is_file(), reason="needs ../shared/data")
async def test_matches_the_handbook_feature_file_on_every_row() -> None:
    """The whole raw file through the engine's feature stage as training computes it
    (``online_features``: the code the worker runs, over the in-memory twin of its state
    store, labels released 7 days late), against the book's feature file, matched by
    transaction id.

    Rows of one card in the same second are ordered by transaction id in the engine;
    the book's file is inconsistent for them, and the engine also sees only partners that
    arrived before (8 rows differ). For those groups the test checks what does not depend
    on that: every feature but the card windows, and card counts within the group's size
    of the book's."""
    from models.fraud.train import online_features

    online = await online_features(FRAUD_CSV, delay_days=7.0, limit=None, chunk=5000)
    computed = {transaction_id: i for i, transaction_id in enumerate(online["id"].tolist())}
    group_of = list(zip(online["card"].tolist(), online["ts"].tolist()))
    x = online["x"][:, : len(FEATURE_NAMES)].astype(np.float64)
    sizes = collections.Counter(group_of)
    ties: dict[tuple[str, float], list[tuple[list[float], list[float]]]] = collections.defaultdict(list)
    got_rows, expected_rows, ids = [], [], []
    compared = 0
    path = SHARED_DATA / "fraud" / "features_2018-04-01_2018-07-31.csv.gz"
    with gzip.open(path, "rt") as handle:
        rows = csv.reader(handle)  # by column position, as read_fraud_csv reads
        header = next(rows)
        columns, id_column = [header.index(name) for name in FEATURE_NAMES], header.index("TRANSACTION_ID")
        for row in rows:
            expected = [float(row[i]) for i in columns]
            transaction_id = row[id_column]
            at = computed.pop(transaction_id)
            group = group_of[at]
            if sizes[group] > 1:
                ties[group].append((x[at].tolist(), expected))
            else:
                got_rows.append(at)
                expected_rows.append(expected)
                ids.append(transaction_id)
            compared += 1
    close = np.isclose(x[got_rows], np.asarray(expected_rows), rtol=1e-6, atol=1e-9).all(axis=1)
    assert close.all(), [ids[i] for i in np.flatnonzero(~close)[:10]]
    assert not computed and compared == 1_169_723
    assert 0 < len(ties) < 50
    order_free = [*range(3), *range(9, 15)]  # every feature but the card windows
    for pairs in ties.values():
        for got, expected in pairs:
            assert [got[i] for i in order_free] == pytest.approx([expected[i] for i in order_free], rel=1e-6)
        for got, expected in pairs:  # the two orders may differ: counts within the group size
            assert all(abs(e - g) <= len(pairs) - 1 for g, e in zip(got[3:9:2], expected[3:9:2]))
