"""The float16 conversion of the CUDA path, checked on the CPU (the graphs run there too)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from streamer.inference.runner import OnnxModel, float16_graph
from streamer.settings import Settings

pytest.importorskip("onnx")


def test_the_float16_fraud_encoder_keeps_float32_edges_and_stays_close() -> None:
    path = Settings().models.fraud / "encoder.onnx"
    half = ort.InferenceSession(float16_graph(path), providers=["CPUExecutionProvider"])
    assert {i.type for i in half.get_inputs()} == {"tensor(float)"}
    assert {o.type for o in half.get_outputs()} == {"tensor(float)"}
    full = OnnxModel(path, provider="cpu")
    rng = np.random.default_rng(0)
    history = rng.normal(size=(8, 16, 16)).astype(np.float32)
    valid = np.ones((8, 16), dtype=np.float32)
    valid[:, :5] = 0.0
    feeds = {"history": history, "history_valid": valid}
    (expected,) = full.run(feeds)
    (got,) = half.run(None, feeds)
    assert got.shape == expected.shape
    assert np.max(np.abs(got - expected)) < 0.05 * (np.max(np.abs(expected)) + 1e-6)


def test_float16_is_ignored_on_the_cpu_provider() -> None:
    model = OnnxModel(Settings().models.fraud / "encoder.onnx", provider="cpu", fp16=True)
    assert not model.fp16 and not model.on_gpu
