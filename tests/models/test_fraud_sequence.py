"""The fraud transformer's training pieces and its export, on a small synthetic set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.fraud import gbt, sequence
from streamer.features.fraud import FEATURE_NAMES, FEATURE_SCHEMA_HASH
from streamer.inference.fraud_scorer import FraudScorer
from tests.models.test_last_position import last_layer_positions

N = 3000


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[sequence.FraudSequenceModel, sequence.CardSequences, Path, object]:
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    x = np.abs(rng.normal(size=(N, 16))).astype(np.float32) * 20
    x[:, 1:3] = rng.integers(0, 2, size=(N, 2))
    y = (x[:, 0] > 45).astype(np.float32)  # a sharp threshold, as the simulator's
    ts = np.sort(rng.uniform(0, 3e6, N))
    cards = rng.integers(0, 60, N).astype(str)
    seqs = sequence.card_sequences(x, ts, cards, np.arange(N).astype(str), 16)
    trees, _ = gbt.fit(x[:, :15], y, epochs=10, genuine_share=1.0)
    seqs.tree_scores = trees.predict(x[:, :15])
    model = sequence.build(seqs, np.arange(N), sequence.SequenceConfig())
    out = tmp_path_factory.mktemp("fraud")
    losses = sequence.pretrain(model, seqs, np.arange(N), epochs=3, batch_size=32)
    assert losses[-1] < losses[0]  # masked fields are learnt from their context
    sequence.finetune(model, seqs, np.arange(N), y, epochs=1, batch_size=64, trees=trees.predict)
    section = {**sequence.export_onnx(model, out), "trees": "trees.onnx"}
    gbt.export_onnx(trees, out / "trees.onnx", 15)
    manifest = {"name": "fraud", "version": "test", "features": list(FEATURE_NAMES), "feature_schema_hash": FEATURE_SCHEMA_HASH,
                "feature_stats": {"mean": [0.0] * 15, "std": [1.0] * 15}, "sequence": section}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return model, seqs, out, trees


def test_card_history_is_the_card_own_earlier_transactions_oldest_first() -> None:
    ts = np.array([5.0, 1.0, 3.0, 2.0, 4.0])
    cards = np.array(["a", "a", "b", "a", "b"])
    seqs = sequence.card_sequences(np.zeros((5, 16), np.float32), ts, cards, np.arange(5).astype(str), 3)
    assert seqs.history[0].tolist() == [-1, 1, 3]  # card a at t=5: t=1, then t=2
    assert seqs.history[4].tolist() == [-1, -1, 2]
    assert seqs.history[1].tolist() == [-1, -1, -1]


def test_onnx_agrees_with_torch_at_batch_sizes_1_7_256_and_repeats_exactly(trained) -> None:  # type: ignore[no-untyped-def]
    model, seqs, out, _ = trained
    check = sequence.check_export(model, out, seqs, np.arange(N), tolerance=1e-5)
    assert check["repeat_identical"] and check["max_abs_diff_score"] <= 1e-5


def test_the_engine_scorer_runs_trees_encoder_and_scorer_like_torch(trained) -> None:  # type: ignore[no-untyped-def]
    model, seqs, out, _ = trained
    scorer = FraudScorer(out, provider="cpu")
    index = np.arange(0, N, 11)
    history, valid, current, _ = seqs.batch(index)
    got = scorer.score(current.numpy(), scorer.encode(history.numpy(), valid.numpy()))
    want = sequence.predict(model, seqs, index)
    assert got == pytest.approx(want, abs=1e-5)


def test_tree_thresholds_become_float32_without_flipping_a_split() -> None:
    rng = np.random.default_rng(1)
    below = rng.uniform(0, 500, 2000).astype(np.float32)
    above = np.nextafter(below, np.float32(np.inf))
    thresholds = (below.astype(np.float64) + above.astype(np.float64)) / 2  # sklearn's midpoints
    converted = np.array([gbt._float32_at_or_below(t) for t in thresholds], dtype=np.float32)
    assert np.all(below <= converted) and np.all(above > converted)



def test_the_exported_card_encoder_runs_its_last_layer_at_the_summary_token_alone(trained) -> None:  # type: ignore[no-untyped-def]
    _, _, out, _ = trained
    feeds = {"history": np.ones((3, 16, 16), np.float32), "history_valid": np.ones((3, 16), np.float32)}
    assert last_layer_positions(out / "encoder.onnx", feeds) == 1  # 17 (16 rows and the summary) without it


def test_the_export_records_each_encoder_rewrites_check_on_real_histories(trained) -> None:  # type: ignore[no-untyped-def]
    """Retraining as the README says once dropped the folding's check from the manifest
    (only ``python -m models.fraud.fold_inputs``, which refuses a folded graph, wrote it)."""
    _, _, out, _ = trained
    section = json.loads((out / "manifest.json").read_text())["sequence"]
    for field in ("last_layer_check", "inputs_check"):
        assert section[field]["rows"] > 1000 and section[field]["max_abs_diff"] <= section[field]["tolerance"]


def test_the_exported_card_encoder_has_its_input_scaling_and_embeddings_folded(trained) -> None:  # type: ignore[no-untyped-def]
    import onnx

    from models.fraud.fold_inputs import FOLDED, fold_inputs

    _, _, out, _ = trained
    graph = onnx.load(str(out / "encoder.onnx"))
    assert {"model.mean", "model.std", "model.row_in.bias"}.isdisjoint(i.name for i in graph.graph.initializer)
    assert json.loads((out / "manifest.json").read_text())["sequence"]["inputs"] == FOLDED
    with pytest.raises(ValueError, match="folded already"):
        fold_inputs(graph)  # and the export's check against torch (above) ran on the folded graph
