"""The handbook's features, published by a running worker, against the book's file."""

from __future__ import annotations

import csv
import gzip
import itertools
from pathlib import Path

import pytest

from streamer.datasets import FRAUD_CSV, SHARED_DATA
from streamer.features.fraud import FEATURE_NAMES, ROW_FIELDS
from streamer.replay.importers import import_fraud

ROWS = 20_000

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.data,
              pytest.mark.skipif(not FRAUD_CSV.is_file(), reason="needs ../shared/data")]


def test_published_features_match_the_book_row_by_row(streamer_replay, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The file's first rows and their labels (released 7 days late) replayed through the
    worker with feature logging on; every published feature row against the book's."""
    capture = tmp_path / "fraud.jsonl.gz"
    import_fraud(FRAUD_CSV, capture, limit=ROWS)
    got = streamer_replay([capture], timeout_s=300, fraud={"publish_features": True})
    assert len(got.scores) == ROWS
    path = SHARED_DATA / "fraud" / "features_2018-04-01_2018-07-31.csv.gz"
    with gzip.open(path, "rt") as handle:
        for row in itertools.islice(csv.DictReader(handle), ROWS):
            published = got.scores[row["TRANSACTION_ID"]]["features"]
            assert list(published) == list(ROW_FIELDS)
            expected = [float(row[name]) for name in FEATURE_NAMES]
            assert [published[name] for name in FEATURE_NAMES] == pytest.approx(expected, rel=1e-6, abs=1e-9), row
