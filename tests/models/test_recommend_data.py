"""Tests of models.recommend.data (numpy only, no torch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.recommend import data as D


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "seqs.txt"
    path.write_text(text)
    return path


def test_integer_ids_map_to_themselves(tmp_path: Path) -> None:
    seqs = D.read_sequences(_write(tmp_path, "1 1 2 3 4 5\n2 6 7 3 9\n"))
    assert seqs.num_items == 9  # max id, gaps included
    assert seqs.items[:3] == ["1", "2", "3"]
    assert seqs.users == ["1", "2"]
    assert seqs.sequences[1].tolist() == [6, 7, 3, 9]
    assert seqs.name == "seqs" and len(seqs.sha256) == 64


def test_string_ids_get_indices_in_first_appearance_order(tmp_path: Path) -> None:
    seqs = D.read_sequences(_write(tmp_path, "u1 b a c\nu2 a d 007\n"))
    assert seqs.items == ["b", "a", "c", "d", "007"]
    assert seqs.sequences[1].tolist() == [2, 4, 5]
    again = D.read_sequences(_write(tmp_path, "u3 d zzz a\n"), items=seqs.items)
    assert again.sequences[0].tolist() == [4, 2]  # unknown items are dropped


def test_leave_one_out_splits() -> None:
    seqs = [np.array([1, 2, 3, 4, 5]), np.array([6, 7]), np.array([8])]
    assert [s.tolist() for s in D.train_sequences(seqs)] == [[1, 2, 3], [], []]
    hist, targets, rows = D.split(seqs, "valid")
    assert [h.tolist() for h in hist] == [[1, 2, 3]] and targets.tolist() == [4] and rows.tolist() == [0]
    hist, targets, rows = D.split(seqs, "test")
    assert [h.tolist() for h in hist] == [[1, 2, 3, 4], [6]] and targets.tolist() == [5, 7]
    assert rows.tolist() == [0, 1]


def test_padding() -> None:
    seqs = [np.array([1, 2, 3]), np.array([], dtype=np.int64), np.arange(1, 8)]
    assert D.left_pad(seqs, 4).tolist() == [[0, 1, 2, 3], [0, 0, 0, 0], [4, 5, 6, 7]]
    assert D.right_pad(seqs[:2]).tolist() == [[1, 2, 3], [0, 0, 0]]
    assert D.right_pad([np.array([], dtype=np.int64)]).shape == (1, 1)


def test_next_item_batch() -> None:
    seqs = [np.array([1, 2, 3]), np.array([4, 5, 6, 7, 8])]
    x, y = D.next_item_batch(seqs, np.array([0, 1]), max_len=3)
    assert x.tolist() == [[0, 1, 2], [5, 6, 7]]
    assert y.tolist() == [[0, 2, 3], [6, 7, 8]]


def test_masked_item_batch() -> None:
    rng = np.random.default_rng(0)
    seqs = [np.arange(1, 11), np.array([3])]
    x, y = D.masked_item_batch(seqs, np.array([0, 1]), max_len=8, mask_id=99, mask_prob=0.3, rng=rng)
    assert x.shape == (2, 8)
    masked = x == 99
    assert (masked == (y != 0)).all()
    assert masked.sum(1).min() >= 1  # every row has a masked item
    original = D.left_pad([seqs[0][-8:], seqs[1]], 8)
    assert (np.where(masked, y, x) == original).all()


def test_bucket_batches_cover_every_row_once() -> None:
    lengths = np.random.default_rng(0).integers(1, 50, 1000)
    batches = list(D.bucket_batches(lengths, 64, np.random.default_rng(1), bucket=4))
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    assert max(len(b) for b in batches) <= 64


def test_rank_metrics() -> None:
    m = D.rank_metrics(np.array([0, 1, 9, 10, -1]), 10)
    assert m["hr@10"] == pytest.approx(3 / 5)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / np.log2(3) + 1 / np.log2(11)) / 5)
    assert m["users"] == 5


def test_popularity() -> None:
    counts = D.popularity([np.array([1, 2, 2]), np.array([2, 3])], 4)
    assert counts.tolist() == [0, 1, 3, 1, 0]
