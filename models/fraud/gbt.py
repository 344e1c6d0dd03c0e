"""Gradient-boosted trees over the 15 features (scikit-learn), exported to ONNX.

Trees split on raw feature values, so they need no scaling and stay sharp where the
data is sharp (the handbook's simulator makes every amount above 220 fraud, and a
tree learns that at any card history, including a card's very first transaction).
The exported graph takes ``features`` (batch, 15) float32 and returns ``score``
(batch,) float32, the fraud probability.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper
from sklearn.ensemble import HistGradientBoostingClassifier
from skl2onnx import to_onnx


class TreeModel:
    def __init__(self, model: HistGradientBoostingClassifier) -> None:
        self.model = model

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(features)[:, 1].astype(np.float32)


def fit(x: np.ndarray, y: np.ndarray, *, epochs: int = 300, seed: int = 0) -> tuple[TreeModel, dict[str, list[float]]]:
    started = time.monotonic()
    model = HistGradientBoostingClassifier(
        max_iter=epochs, learning_rate=0.1, max_leaf_nodes=31, min_samples_leaf=50,
        l2_regularization=1.0, early_stopping=False, random_state=seed,
    )
    model.fit(x, y.astype(np.int64))
    print(f"  {epochs} boosting rounds in {time.monotonic() - started:.0f} s", flush=True)
    return TreeModel(model), {"mean": x.mean(axis=0).astype(float).tolist(), "std": x.std(axis=0).astype(float).tolist()}


def export_onnx(net: TreeModel, path: Path, width: int) -> None:
    graph_model = to_onnx(
        net.model, np.zeros((1, width), dtype=np.float32),
        options={id(net.model): {"zipmap": False}}, target_opset={"": 20, "ai.onnx.ml": 3},
    )
    graph = graph_model.graph
    graph.input[0].name = "features"
    for node in graph.node:
        node.input[:] = ["features" if name == graph_model.graph.input[0].name or name == "X" else name for name in node.input]
    probabilities = next(o.name for o in graph.output if o.type.tensor_type.elem_type == TensorProto.FLOAT)
    graph.initializer.append(helper.make_tensor("positive_column", TensorProto.INT64, [], [1]))
    graph.node.append(helper.make_node("Gather", [probabilities, "positive_column"], ["score"], axis=1))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"]))
    onnx.checker.check_model(graph_model)
    onnx.save(graph_model, str(path))
