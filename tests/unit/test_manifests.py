"""A model directory whose files disagree with its manifest is refused at load, not at
the first batch (where every event of the batch would be dead-lettered)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamer.errors import ConfigurationError
from streamer.inference.fraud_scorer import FraudScorer
from streamer.inference.next_item import NextItemRanker
from streamer.settings import Settings

SHIPPED = Settings().models


def edited(source: Path, into: Path, change: Callable[[dict[str, Any], Path], None]) -> Path:
    """A copy of a shipped model directory, its manifest (and files) changed."""
    shutil.copytree(source, into)
    manifest = orjson.loads((into / "manifest.json").read_bytes())
    change(manifest, into)
    (into / "manifest.json").write_bytes(orjson.dumps(manifest))
    return into


def fewer_means(manifest: dict[str, Any], _: Path) -> None:
    manifest["feature_stats"]["mean"] = manifest["feature_stats"]["mean"][:10]


def longer_histories(manifest: dict[str, Any], _: Path) -> None:
    manifest["sequence"]["length"] = 32


def no_trees(manifest: dict[str, Any], _: Path) -> None:
    del manifest["sequence"]["trees"]


@pytest.mark.parametrize(("change", "message"), [
    (fewer_means, "feature_stats hold 10 means"),
    (longer_histories, "takes histories of 16 rows, the manifest's length is 32"),
    (no_trees, "takes \\['tree_score'\\]"),
])
def test_a_fraud_model_that_disagrees_with_its_manifest_is_refused(tmp_path: Path, change: Callable[..., None],
                                                                   message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        FraudScorer(edited(SHIPPED.fraud, tmp_path / "fraud", change), provider="cpu")


@pytest.mark.parametrize("differs", [{"label_delay_days": 3}, {"windows_days": (1, 7, 28)}, {"night_last_hour_utc": 5},
                                     {"no_previous_s": 86400.0}])
def test_a_fraud_model_trained_on_features_defined_otherwise_is_refused(tmp_path: Path, differs: dict[str, Any]) -> None:
    """The schema hash was of the features' names alone: a model trained with another
    label delay, window or night loaded, and scored features it never learnt."""
    from streamer.features.fraud import FEATURE_SCHEMA, schema_hash

    def trained_otherwise(manifest: dict[str, Any], _: Path) -> None:
        manifest["feature_schema_hash"] = schema_hash({**FEATURE_SCHEMA, **differs})

    with pytest.raises(ConfigurationError, match="feature schema differs"):
        FraudScorer(edited(SHIPPED.fraud, tmp_path / "fraud", trained_otherwise), provider="cpu")


def test_the_shipped_fraud_model_loads_from_a_copy(tmp_path: Path) -> None:
    assert FraudScorer(edited(SHIPPED.fraud, tmp_path / "fraud", lambda *_: None), provider="cpu").sequence_length == 16


def test_a_next_item_model_whose_item_list_is_not_its_catalogue_is_refused(tmp_path: Path) -> None:
    def truncated(manifest: dict[str, Any], into: Path) -> None:
        items = (into / "items.txt").read_text().split()
        (into / "items.txt").write_text("\n".join(items[:100]) + "\n")

    with pytest.raises(ConfigurationError, match="100 items, the manifest's num_items is 12101"):
        NextItemRanker(edited(SHIPPED.recommend, tmp_path / "recommend", truncated), provider="cpu")


def test_the_item_list_is_the_one_the_manifest_names(tmp_path: Path) -> None:
    def renamed(manifest: dict[str, Any], into: Path) -> None:
        (into / "items.txt").rename(into / "catalogue.txt")
        manifest["files"]["items"] = "catalogue.txt"

    ranker = NextItemRanker(edited(SHIPPED.recommend, tmp_path / "recommend", renamed), provider="cpu")
    assert len(ranker.items) == 12102
