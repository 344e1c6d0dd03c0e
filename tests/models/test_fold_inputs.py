"""The card encoder's input scaling and constant embeddings folded into its weights
(``models.fraud.fold_inputs``); the export's own check against torch is in
``test_fraud_sequence``."""

from __future__ import annotations

import json

import onnx
import pytest

from models.fraud.fold_inputs import FOLDED, fold_inputs
from streamer.settings import Settings

MODELS = Settings().models


def test_the_shipped_card_encoder_is_folded_and_its_check_recorded() -> None:
    graph = onnx.load(str(MODELS.fraud / "encoder.onnx"))
    ops = [node.op_type for node in graph.graph.node]
    assert "Mul" not in ops[: ops.index("MatMul")]  # no unmasking of the inputs before row_in
    section = json.loads((MODELS.fraud / "manifest.json").read_text())["sequence"]
    assert section["inputs"] == FOLDED
    assert section["inputs_check"]["rows"] > 1000 and section["inputs_check"]["max_abs_diff"] <= 1e-5
    with pytest.raises(ValueError, match="folded already"):
        fold_inputs(graph)


def test_a_graph_that_is_not_a_card_encoder_is_refused_whole() -> None:
    with pytest.raises(ValueError, match="not a card encoder"):
        fold_inputs(onnx.load(str(MODELS.recommend / "encoder.onnx")))
