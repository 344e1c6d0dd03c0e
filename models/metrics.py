"""Ranking metrics shared by the fraud and recommendation evaluations (numpy only)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (ties get the average rank)."""
    labels = np.asarray(labels, dtype=bool)
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = np.asarray(scores)[order]
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts - 1) / 2.0 + 1
    ranks[order] = np.repeat(average, counts)
    positives = labels.sum()
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Average precision as scikit-learn computes it (step-wise, ties grouped)."""
    labels = np.asarray(labels, dtype=bool)
    order = np.argsort(-np.asarray(scores), kind="mergesort")
    y = labels[order]
    s = np.asarray(scores)[order]
    distinct = np.r_[np.where(np.diff(s))[0], len(s) - 1]
    tp = np.cumsum(y)[distinct]
    fp = (distinct + 1) - tp
    if tp[-1] == 0:
        return float("nan")
    precision = tp / (tp + fp)
    recall = tp / tp[-1]
    recall_prev = np.r_[0.0, recall[:-1]]
    return float(np.sum((recall - recall_prev) * precision))


def precision_recall_curve(labels: np.ndarray, scores: np.ndarray, points: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall at each distinct threshold (ties grouped, as for average
    precision), thinned to about ``points`` thresholds evenly spaced in recall."""
    labels = np.asarray(labels, dtype=bool)
    order = np.argsort(-np.asarray(scores), kind="mergesort")
    s = np.asarray(scores)[order]
    distinct = np.r_[np.where(np.diff(s))[0], len(s) - 1]
    tp = np.cumsum(labels[order])[distinct]
    precision = tp / (distinct + 1)
    recall = tp / max(int(tp[-1]), 1)
    keep = np.unique(np.searchsorted(recall, np.linspace(0.0, 1.0, points)).clip(0, len(recall) - 1))
    return precision[keep], recall[keep]


def card_precision_at_k(
    days: Sequence[int] | np.ndarray, cards: Sequence[str] | np.ndarray, labels: np.ndarray, scores: np.ndarray,
    k: int = 100,
) -> float:
    """The book's Card Precision@k: per day, drop the cards detected (fraudulent and in
    the top k) on earlier days, take each card's maximum score, and the share of
    fraudulent cards among the top k; the mean over days."""
    days_arr = np.asarray(days)
    cards_arr = np.asarray(cards)
    known: set[str] = set()
    precisions = []
    for day in np.unique(days_arr):
        mask = days_arr == day
        per_card: dict[str, tuple[float, bool]] = {}
        for card, label, score in zip(cards_arr[mask], labels[mask], scores[mask]):
            if card in known:
                continue
            best, fraud = per_card.get(card, (-1.0, False))
            per_card[card] = (max(best, float(score)), fraud or bool(label))
        ranked = sorted(per_card.items(), key=lambda kv: -kv[1][0])[:k]
        precisions.append(sum(fraud for _, (_, fraud) in ranked) / k)
        known.update(card for card, (_, fraud) in ranked if fraud)
    return float(np.mean(precisions)) if precisions else float("nan")


def hit_rate_and_ndcg(ranks: np.ndarray, k: int = 10) -> tuple[float, float]:
    """HR@k and NDCG@k from 0-based ranks of the held-out item (one per user)."""
    ranks = np.asarray(ranks)
    hits = ranks < k
    return float(hits.mean()), float((hits / np.log2(ranks + 2.0)).mean())
