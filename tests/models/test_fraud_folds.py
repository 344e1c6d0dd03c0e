"""``models.fraud.folds``: the book's test set (the cards known to be compromised
removed), and out-of-fold scores."""

from __future__ import annotations

import numpy as np

from models.fraud.folds import book_test_set, out_of_fold
from models.fraud.train import DAY

START = 100 * DAY  # a test week's first day


def test_each_test_day_drops_the_cards_whose_fraud_was_known_by_its_start() -> None:
    """As the book's ``get_train_test_set``: a fraud is known 7 days after it, and the
    book looks back to its training week (two weeks before the test week)."""
    history = [  # (card, days from the test week's start, fraud)
        ("known-early", -10.0, 1),  # in the book's training week: known on every test day
        ("known-later", -4.5, 1),  # known from 7 days later: test days 3 to 6
        ("too-old", -20.0, 1),  # before the book's training week: never removed
        ("genuine", -3.0, 0),
    ]
    week = [(card, day + 0.5, 0) for day in range(7) for card in ("known-early", "known-later", "too-old", "genuine")]
    rows = history + week
    cards = np.array([card for card, _, _ in rows])
    ts = np.array([START + days * DAY for _, days, _ in rows])
    y = np.array([fraud for _, _, fraud in rows])
    test = np.flatnonzero(ts >= START)

    kept = book_test_set(test, ts, y, cards, START)

    by_day: dict[int, set[str]] = {}
    for index in kept:
        by_day.setdefault(int((ts[index] - START) // DAY), set()).add(str(cards[index]))
    assert by_day[0] == by_day[1] == by_day[2] == {"known-later", "too-old", "genuine"}
    assert all(by_day[day] == {"too-old", "genuine"} for day in range(3, 7))
    assert list(kept) == sorted(kept)  # in time order, as the week's rows


def test_out_of_fold_scores_each_row_by_a_model_fitted_without_it() -> None:
    class Memory:
        """Scores a row 1 if it was among the rows fitted on, else 0."""

        def __init__(self, fitted: np.ndarray) -> None:
            self.fitted = set(fitted.tolist())

        def predict(self, x: np.ndarray) -> np.ndarray:
            return np.array([float(row in self.fitted) for row in x[:, 0].tolist()])

    x = np.arange(100, dtype=float)[:, None]  # a row's one feature is its index
    rows = np.arange(10, 90, 2)
    fits: list[np.ndarray] = []

    def fit_without(fitted: np.ndarray) -> Memory:
        fits.append(fitted)
        return Memory(fitted)

    scores = out_of_fold(fit_without, x, rows, blocks=4)

    assert scores.tolist() == [0.0] * len(rows)  # no row scored by a model that saw it
    assert len(fits) == 4 and all(len(f) == 30 for f in fits)  # each fitted on the other three blocks
    assert sorted(np.concatenate([np.setdiff1d(rows, f) for f in fits]).tolist()) == rows.tolist()


def test_training_refuses_validation_rows_before_its_labels_arrive(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Validation from 2018-07-20 with training until 2018-07-25 scored training rows
    and wrote the in-sample metrics to the manifest as validation."""
    import pytest

    from models.fraud.train import main

    for valid_start in ("2018-07-20", "2018-07-31"):  # overlapping, then within the 7-day label delay
        with pytest.raises(SystemExit) as refused:
            main(["--train-until", "2018-07-25", "--valid-start", valid_start, "--out", str(tmp_path / "m")])
        assert refused.value.code == 2
    assert not (tmp_path / "m").exists()
