"""The fraud transformer's training pieces and its export, on a small synthetic set."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from models.fraud import gbt, sequence, summary_only
from streamer.features.fraud import FEATURE_NAMES, FEATURE_SCHEMA_HASH
from streamer.inference.fraud_scorer import FraudScorer
from streamer.settings import Settings

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


def _last_layer_rows(path: Path) -> int:
    """Positions the encoder's last feed-forward layer runs on, for a batch of 3."""
    import onnx
    import onnxruntime as ort

    graph = onnx.load(str(path))
    biases = [i.name for i in graph.graph.initializer if re.search(r"layer\.\d+\.output\.dense\.bias$", i.name)]
    bias = max(biases, key=lambda name: int(re.findall(r"layer\.(\d+)\.", name)[-1]))
    add = next(n for n in graph.graph.node if n.op_type == "Add" and bias in n.input)
    graph.graph.output.append(onnx.helper.make_empty_tensor_value_info(add.output[0]))
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"history": np.ones((3, 16, 16), np.float32), "history_valid": np.ones((3, 16), np.float32)}
    return int(session.run([add.output[0]], feeds)[0].shape[1])


def test_the_exported_encoder_runs_its_last_layer_for_the_summary_token_alone(trained) -> None:  # type: ignore[no-untyped-def]
    _, _, out, _ = trained
    assert _last_layer_rows(out / "encoder.onnx") == 1  # 17 (16 rows + the summary) without the rewrite
    with pytest.raises(ValueError, match="rewritten already"):
        summary_only.summary_only(onnx.load(str(out / "encoder.onnx")))


def test_the_shipped_encoder_is_rewritten_and_its_check_recorded() -> None:
    fraud = Settings().models.fraud
    manifest = json.loads((fraud / "manifest.json").read_text())["sequence"]
    assert manifest["last_layer"] == summary_only.LAST_LAYER
    assert manifest["last_layer_check"]["max_abs_diff_embedding"] <= manifest["last_layer_check"]["tolerance"]
    assert _last_layer_rows(fraud / "encoder.onnx") == 1


def test_a_graph_without_bert_layers_is_refused(trained) -> None:  # type: ignore[no-untyped-def]
    _, _, out, _ = trained
    with pytest.raises(ValueError, match="no BERT layer"):
        summary_only.summary_only(onnx.load(str(out / "scorer.onnx")))
