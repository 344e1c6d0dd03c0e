"""The book's validation protocol on the July weeks: ``python -m models.fraud.folds``.

Four folds whose test weeks start on 2018-07-04, -11, -18 and -25. Each model of a fold
sees only what the stream would have known when its test week began: labelled training
rows are older than the week minus the 7-day label delay (the last ``--train-weeks``
weeks of them), and the self-supervised pre-training reads the unlabelled rows before
the week. Compared, on the same online features (computed by the serving code):

* ``transformer``: card encoder pre-trained with masked fields, fine-tuned with the
  transaction's features and the trees' score;
* ``no-pretraining``: the same, fine-tuned from a random initialisation;
* ``no-sequence``: the same network's head over the transaction's own row and the trees' score;
* ``no-trees``: the transformer without the trees' score;
* ``two-layers``: the transformer with two BERT layers, as shipped until 2026-12-05 (its
  encoder runs about 2.6x slower in ONNX Runtime than the one layer's, which is computed
  at the summary token alone: ``models.last_position``);
* ``gbt``: gradient-boosted trees over the 15 features (whose score the others read);
* ``oof-trees``: the transformer fine-tuned on out-of-fold trees' scores: each training
  row's score from trees fitted without its block of the training weeks
  (``out_of_fold``), not from the trees fitted on it. The test rows read the same trees
  as the other variants.

Each model is scored on two test sets of its week: the book's (``book_test_set``: each
day without the cards known to be compromised by then, as the book's
``get_train_test_set`` builds it; the book's published results are on that set) and the
whole week (every transaction, as until 2026-12-07: the cards whose fraud was already
known, which any model finds again, make it easier).

Writes one JSON file (per-fold metrics on both sets and the pooled scores'
precision-recall curves on the book's) for ``models.fraud.report``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from models.fraud import sequence
from models.fraud.train import DAY, cached_online_features, evaluate_scores, with_cold_starts
from models.metrics import precision_recall_curve
from streamer.datasets import FRAUD_CSV
from streamer.features.fraud import FEATURE_NAMES

FOLDS = ("2018-07-04", "2018-07-11", "2018-07-18", "2018-07-25")
VARIANTS = ("transformer", "no-pretraining", "no-sequence", "no-trees", "two-layers", "gbt", "oof-trees")
OOF_BLOCKS = 4


def day(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def book_test_set(test: np.ndarray, ts: np.ndarray, y: np.ndarray, cards: np.ndarray, test_start: float) -> np.ndarray:
    """The rows of ``test`` (indices, in time order) the book tests on: each day of the
    week without the cards known to be compromised by its start, those with a fraud
    since the book's training week began (one week before its 7-day delay) whose label
    arrived by then (7 days late)."""
    book_train_start = test_start - 14 * DAY
    kept = []
    for day_start in test_start + DAY * np.arange(7):
        in_day = test[(ts[test] >= day_start) & (ts[test] < day_start + DAY)]
        known = np.unique(cards[(ts >= book_train_start) & (ts < day_start - 7 * DAY) & (y == 1)])
        kept.append(in_day[~np.isin(cards[in_day], known)])
    return np.concatenate(kept)


def fit_trees(data: dict[str, np.ndarray], train: np.ndarray, args: argparse.Namespace) -> tuple[object, float]:
    from models.fraud.gbt import fit

    started = time.monotonic()
    x = data["x"][:, : len(FEATURE_NAMES)]
    x_train, y_train = with_cold_starts(x[train], data["y"][train], 0.05, args.seed)
    trees, _ = fit(x_train, y_train, epochs=args.gbt_rounds, seed=args.seed)
    return trees, time.monotonic() - started


def out_of_fold(fit_without: Callable[[np.ndarray], Any], x: np.ndarray, rows: np.ndarray, blocks: int) -> np.ndarray:
    """A score for each of ``rows`` from a model that never saw it: ``rows`` split into
    ``blocks`` contiguous blocks, each scored by ``fit_without`` (the rows to fit on,
    every block but its own) at ``x``'s rows."""
    scores = np.empty(len(rows))
    for block in np.array_split(np.arange(len(rows)), blocks):
        scores[block] = fit_without(np.delete(rows, block)).predict(x[rows[block]])
    return scores


def fit_network(variant: str, data: dict[str, np.ndarray], seqs: sequence.CardSequences, train: np.ndarray,
                unlabeled: np.ndarray, trees: object, args: argparse.Namespace) -> tuple[sequence.FraudSequenceModel, float]:
    started = time.monotonic()
    cfg = sequence.SequenceConfig(use_sequence=variant != "no-sequence", use_trees=variant != "no-trees",
                                  layers=2 if variant == "two-layers" else sequence.SequenceConfig.layers)
    model = sequence.build(seqs, train, cfg, args.seed)
    if variant != "no-pretraining":
        sequence.pretrain(model, seqs, unlabeled, epochs=args.pretrain_epochs, seed=args.seed)
    sequence.finetune(model, seqs, train, data["y"], epochs=args.epochs, trees=trees.predict, seed=args.seed)  # type: ignore[attr-defined]
    return model, time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=FRAUD_CSV)
    parser.add_argument("--cache", type=Path, default=Path("runs"))
    parser.add_argument("--out", type=Path, default=Path("runs/fraud-folds.json"))
    parser.add_argument("--folds", nargs="+", default=list(FOLDS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--train-weeks", type=int, default=8, help="labelled weeks before the delay (default 8)")
    parser.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs (default 3)")
    parser.add_argument("--pretrain-epochs", type=int, default=4)
    parser.add_argument("--gbt-rounds", type=int, default=150)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    data = cached_online_features(args.data, 7.0, None, args.cache)
    seqs = sequence.card_sequences(data["x"], data["ts"], data["card"], data["id"], sequence.SequenceConfig().max_len)
    results: dict[str, object] = {"folds": {}, "settings": {k: str(v) for k, v in vars(args).items()}}
    pooled: dict[str, list[np.ndarray]] = {v: [] for v in args.variants}
    pooled_y: list[np.ndarray] = []
    for start in args.folds:
        test_start = day(start)
        train_end = test_start - 7 * DAY
        train = np.flatnonzero((data["ts"] < train_end) & (data["ts"] >= train_end - args.train_weeks * 7 * DAY))
        unlabeled = np.flatnonzero(data["ts"] < test_start)
        test = np.flatnonzero((data["ts"] >= test_start) & (data["ts"] < test_start + 7 * DAY))
        book = book_test_set(test, data["ts"], data["y"], data["card"], test_start)
        in_book = np.isin(test, book)
        print(f"fold {start}: train {len(train):,}, unlabelled {len(unlabeled):,}, test {len(test):,} "
              f"(the book's {len(book):,})", flush=True)
        fold: dict[str, object] = {}
        trees, tree_seconds = fit_trees(data, train, args)
        needed = np.r_[train, test]
        seqs.tree_scores = np.zeros(len(data["y"]))
        seqs.tree_scores[needed] = trees.predict(data["x"][needed, : len(FEATURE_NAMES)])  # type: ignore[attr-defined]
        for variant in args.variants:
            if variant == "gbt":
                scores, seconds = seqs.tree_scores[test], tree_seconds
            elif variant == "oof-trees":
                started = time.monotonic()
                in_sample = seqs.tree_scores[train]
                try:  # the variants after this one read the in-sample scores again
                    seqs.tree_scores[train] = out_of_fold(lambda rows: fit_trees(data, rows, args)[0],
                                                          data["x"][:, : len(FEATURE_NAMES)], train, OOF_BLOCKS)
                    model, _ = fit_network(variant, data, seqs, train, unlabeled, trees, args)
                finally:
                    seqs.tree_scores[train] = in_sample
                scores, seconds = sequence.predict(model, seqs, test), time.monotonic() - started
            else:
                model, seconds = fit_network(variant, data, seqs, train, unlabeled, trees, args)
                scores = sequence.predict(model, seqs, test)
            metrics = evaluate_scores(data["y"][test], scores, data["ts"][test], data["card"][test])
            on_book = evaluate_scores(data["y"][book], scores[in_book], data["ts"][book], data["card"][book])
            fold[variant] = {**metrics, "book_test_set": on_book, "train_seconds": round(seconds)}
            pooled[variant].append(scores[in_book])
            print(f"  {variant}: the book's test set {on_book}, the whole week {metrics} ({seconds:.0f} s)", flush=True)
        pooled_y.append(data["y"][book])
        results["folds"][start] = fold  # type: ignore[index]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))
    y = np.concatenate(pooled_y)
    results["pr_curves"] = {}
    for variant, parts in pooled.items():
        precision, recall = precision_recall_curve(y, np.concatenate(parts), points=200)
        results["pr_curves"][variant] = {"precision": precision.tolist(), "recall": recall.tolist()}  # type: ignore[index]
    metrics = ("auc_roc", "average_precision", "card_precision_at_100")
    results["mean"] = {  # the whole weeks
        variant: {metric: round(float(np.mean([results["folds"][f][variant][metric] for f in args.folds])), 4)  # type: ignore[index]
                  for metric in metrics}
        for variant in args.variants
    }
    results["mean_book_test_set"] = {
        variant: {metric: round(float(np.mean([results["folds"][f][variant]["book_test_set"][metric]  # type: ignore[index]
                                               for f in args.folds])), 4) for metric in metrics}
        for variant in args.variants
    }
    args.out.write_text(json.dumps(results, indent=1))
    print(json.dumps({"the book's test set": results["mean_book_test_set"], "the whole weeks": results["mean"]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
