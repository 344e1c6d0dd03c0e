"""The popularity baseline on a tiny file whose answer is known."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.recommend.baselines import popularity


def test_popularity_ranks_training_counts_and_skips_history(tmp_path: Path) -> None:
    data = tmp_path / "seq.txt"
    # training parts (all but the last two items): "a" twice, "b" once
    data.write_text("1 a b x y\n2 a c z a\n3 q b w b\n")
    result = popularity(data)
    # user 1 has seen a, b, x: top list starts at the next most popular items; target "y" misses
    # user 2's target "a" was already seen -> a miss; user 3's target "b" is seen too -> a miss
    assert result["users"] == 3
    assert result["hr@10"] == pytest.approx(0.0)
    data.write_text("1 a b c\n2 a d e\n3 f g a\n")
    # user 3 has not seen "a" (most popular in training) and it is the target: rank 0
    assert popularity(data)["hr@10"] == pytest.approx(1 / 3)
