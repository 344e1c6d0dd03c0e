"""Table and precision-recall plot of ``models.fraud.folds``: ``python -m models.fraud.report``.

Prints the markdown table (per fold and the mean, beside the book's published means)
and writes the plot of the pooled test weeks' precision-recall curves.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

BOOK = {  # ../shared/data/README.md: the book's July validation weeks, mean of four folds
    "Logistic regression": (0.867, 0.613, 0.279),
    "Random forest": (0.880, 0.694, 0.289),
    "XGBoost": (0.887, 0.708, 0.289),
    "Feed-forward network": (0.881, 0.701, 0.288),
    "LSTM on the card's sequence": (0.881, 0.681, 0.286),
    "LSTM + attention": (0.886, 0.690, 0.287),
}
NAMES = {
    "transformer": "**card-sequence transformer, pre-trained (the project's model)**",
    "no-pretraining": "the same, without pre-training",
    "no-sequence": "the same network without the sequence (features only)",
    "no-trees": "the transformer without the trees' score",
    "two-layers": "the transformer with two BERT layers (shipped until 2026-12-05)",
    "gbt": "gradient-boosted trees, 15 features (project baseline)",
    "oof-trees": "the transformer fine-tuned on out-of-fold trees' scores",
}
METRICS = ("auc_roc", "average_precision", "card_precision_at_100")


def fold_metrics(results: dict, fold: str, variant: str, book: bool) -> dict:
    """A variant's metrics in a fold: on the book's test set, or on the whole week."""
    metrics = results["folds"][fold][variant]
    return metrics["book_test_set"] if book else metrics


def table(results: dict, book: bool = True) -> str:
    """The means of the folds (range in brackets) on the book's test sets, beside the
    book's published means; or on the whole test weeks, which the book did not report."""
    lines = ["| model | AUC ROC | AP | CP@100 | source |", "|---|---|---|---|---|"]
    if book:
        for name, values in BOOK.items():
            lines.append(f"| {name} | {values[0]:.3f} | {values[1]:.3f} | {values[2]:.3f} | the book |")
    for variant, mean in results["mean_book_test_set" if book else "mean"].items():
        spread = {m: [fold_metrics(results, f, variant, book)[m] for f in results["folds"]] for m in METRICS}
        cells = " | ".join(f"{mean[m]:.3f} ({min(spread[m]):.3f}–{max(spread[m]):.3f})" for m in METRICS)
        lines.append(f"| {NAMES.get(variant, variant)} | {cells} | this project |")
    return "\n".join(lines)


def per_fold(results: dict, book: bool = True) -> str:
    folds = list(results["folds"])
    lines = ["| model | " + " | ".join(folds) + " |", "|---|" + "---|" * len(folds)]
    for variant in results["mean"]:
        cells = " | ".join(
            "{auc_roc:.3f} / {average_precision:.3f} / {card_precision_at_100:.3f}".format(**fold_metrics(results, f, variant, book))
            for f in folds
        )
        lines.append(f"| {variant} | {cells} |")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for variant, curve in results["pr_curves"].items():
        ax.plot(curve["recall"], curve["precision"], label=NAMES.get(variant, variant).strip("*"))
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("Fraud, the book's July test sets (four folds pooled)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def merge(runs: list[dict]) -> dict:
    """One result from runs of different variants over the same folds."""
    merged: dict = {"folds": {}, "pr_curves": {}, "mean": {}, "mean_book_test_set": {}}
    for run in runs:
        for fold, variants in run["folds"].items():
            merged["folds"].setdefault(fold, {}).update(variants)
        merged["pr_curves"].update(run["pr_curves"])
        merged["mean"].update(run["mean"])
        merged["mean_book_test_set"].update(run["mean_book_test_set"])
    for key in ("mean", "mean_book_test_set"):
        merged[key] = {v: merged[key][v] for v in NAMES if v in merged[key]}
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", type=Path, nargs="+", default=[Path("runs/fraud-folds.json")],
                        help="outputs of models.fraud.folds (runs of different variants are merged)")
    parser.add_argument("--plot", type=Path, default=Path("docs/fraud-pr.png"))
    args = parser.parse_args(argv)
    results = merge([json.loads(path.read_text()) for path in args.results])
    print("The book's test sets (the cards known to be compromised removed):\n")
    print(table(results))
    print()
    print(per_fold(results))
    print("\nThe whole test weeks:\n")
    print(table(results, book=False))
    print()
    print(per_fold(results, book=False))
    plot(results, args.plot)
    print(f"\nwrote {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
