"""Key naming and the evaluation metrics."""

from __future__ import annotations

import numpy as np
import pytest

from models.metrics import average_precision, card_precision_at_k, hit_rate_and_ndcg, roc_auc
from streamer.state import keys


def test_keys_are_namespaced_versioned_and_hash_tagged() -> None:
    assert keys.card_log("ns", "42") == "ns:v1:card:{42}:log"
    assert keys.user_sequence("ns", "u") != keys.user_seen("ns", "u")
    assert keys.terminal_frauds("a", "t") != keys.terminal_frauds("b", "t")


def test_every_hash_tag_is_non_empty_and_each_id_keeps_keys_of_its_own() -> None:
    ids = ["}a", "\\}a", "\\a", "a", "a}b", "{a}", "}"]
    tags = [keys.hash_tag(entity_id) for entity_id in ids]
    assert len(set(tags)) == len(ids)
    for key in map(lambda entity_id: keys.user_seen("ns", entity_id), ids):
        start = key.index("{") + 1
        assert key.index("}", start) > start  # Redis Cluster hashes a non-empty tag


def test_auc_and_ap_on_known_cases() -> None:
    y = np.array([0, 0, 1, 1])
    assert roc_auc(y, np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert average_precision(y, np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx((1.0 + 2 / 3) / 2)
    assert roc_auc(y, np.array([0.5, 0.5, 0.5, 0.5])) == pytest.approx(0.5)


def test_card_precision_drops_detected_cards_on_later_days() -> None:
    days = [0, 0, 1, 1]
    cards = ["a", "b", "a", "b"]
    labels = np.array([1, 0, 1, 0])
    scores = np.array([0.9, 0.1, 0.9, 0.2])
    # day 0: top-1 is card a (fraud) -> 1.0; day 1: a is known, top-1 is b (genuine) -> 0.0
    assert card_precision_at_k(days, cards, labels, scores, k=1) == pytest.approx(0.5)


def test_hit_rate_and_ndcg() -> None:
    hr, ndcg = hit_rate_and_ndcg(np.array([0, 3, 20]), k=10)
    assert hr == pytest.approx(2 / 3)
    assert ndcg == pytest.approx((1 + 1 / np.log2(5)) / 3)
