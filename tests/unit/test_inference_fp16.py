"""The float16 conversion of the CUDA path, checked on the CPU (the graphs run there too)."""

from __future__ import annotations

import inspect

import numpy as np
import onnxruntime as ort
import pytest

from streamer.inference.fraud_scorer import FraudScorer
from streamer.inference.runner import OnnxModel, float16_graph
from streamer.settings import Settings

pytest.importorskip("onnx")


def test_the_float16_next_item_encoder_keeps_float32_edges_and_stays_close() -> None:
    path = Settings().models.recommend / "encoder.onnx"
    half = ort.InferenceSession(float16_graph(path), providers=["CPUExecutionProvider"])
    assert {i.type for i in half.get_inputs()} == {"tensor(int64)"}
    assert {o.type for o in half.get_outputs()} == {"tensor(float)"}
    full = OnnxModel(path, provider="cpu")
    rng = np.random.default_rng(0)
    items = rng.integers(1, 1000, size=(8, 50), dtype=np.int64)
    items[:, :20] = 0  # left padding
    (expected,) = full.run({"item_ids": items})
    (got,) = half.run(None, {"item_ids": items})
    assert got.shape == expected.shape
    assert np.max(np.abs(got - expected)) < 0.05 * (np.max(np.abs(expected)) + 1e-6)


def test_the_fraud_models_stay_float32_because_amounts_pass_float16s_range() -> None:
    """Why ``STREAMER_MODELS_FP16`` leaves the fraud models alone: the card encoder
    takes raw amounts, and converted, a card with one payment of 70,000 (yen, won) got
    a NaN embedding and a null score, with no alert."""
    path = Settings().models.fraud / "encoder.onnx"
    half = ort.InferenceSession(float16_graph(path), providers=["CPUExecutionProvider"])
    history = np.zeros((1, 16, 16), dtype=np.float32)
    history[0, -1, 0] = 70_000.0
    valid = np.zeros((1, 16), dtype=np.float32)
    valid[0, -1] = 1.0
    (converted,) = half.run(None, {"history": history, "history_valid": valid})
    assert not np.isfinite(converted).all()
    scorer = FraudScorer(Settings().models.fraud, provider="cpu")
    assert "fp16" not in inspect.signature(FraudScorer).parameters
    assert np.isfinite(scorer.encode(history, valid)).all()


def test_float16_is_ignored_on_the_cpu_provider() -> None:
    model = OnnxModel(Settings().models.fraud / "encoder.onnx", provider="cpu", fp16=True)
    assert not model.fp16 and not model.on_gpu
