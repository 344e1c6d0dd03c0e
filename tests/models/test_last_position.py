"""The encoders' last layer computed at the last position alone (``models.last_position``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from models.last_position import LAST_LAYER, last_position_only
from streamer.settings import Settings

MODELS = Settings().models
CARD_FEEDS = {"history": np.ones((3, 16, 16), np.float32), "history_valid": np.ones((3, 16), np.float32)}
CLICK_FEEDS = {"item_ids": np.arange(1, 31, dtype=np.int64).reshape(3, 10)}


def last_layer_positions(path: Path, feeds: dict[str, np.ndarray]) -> int:
    """How many positions the graph's last feed-forward layer runs on."""
    graph = onnx.load(str(path))
    biases = [i.name for i in graph.graph.initializer if re.search(r"layer\.\d+\.output\.dense\.bias$", i.name)]
    bias = max(biases, key=lambda name: int(re.findall(r"layer\.(\d+)\.", name)[-1]))
    add = next(n for n in graph.graph.node if n.op_type == "Add" and bias in n.input)
    graph.graph.output.append(onnx.helper.make_empty_tensor_value_info(add.output[0]))
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    return int(session.run([add.output[0]], feeds)[0].shape[1])


@pytest.mark.parametrize(("model_dir", "feeds", "section"), [
    (MODELS.fraud, CARD_FEEDS, "sequence"), (MODELS.recommend, CLICK_FEEDS, None)], ids=["card", "next-item"])
def test_the_shipped_encoders_are_rewritten_and_their_check_recorded(model_dir: Path, feeds, section) -> None:  # type: ignore[no-untyped-def]
    assert last_layer_positions(model_dir / "encoder.onnx", feeds) == 1
    whole = json.loads((model_dir / "manifest.json").read_text())
    manifest = whole[section] if section else whole
    assert manifest["last_layer"] == LAST_LAYER
    if section:  # checked against torch when it was exported, or against the graph it replaced when rewritten in place
        check = manifest.get("last_layer_check") or whole["check"]
        assert check.get("max_abs_diff", check.get("max_abs_diff_embedding")) <= check["tolerance"]
    with pytest.raises(ValueError, match="rewritten already"):
        last_position_only(onnx.load(str(model_dir / "encoder.onnx")))


def test_the_rewrite_changes_no_embedding_and_is_refused_on_a_graph_without_bert() -> None:
    import tempfile

    import torch

    from models.recommend.export import export_onnx
    from models.recommend.model import ModelConfig, SeqRecModel

    torch.manual_seed(0)
    model = SeqRecModel(ModelConfig(num_items=30, max_len=10, hidden=16, layers=2, heads=2)).eval()
    with torch.no_grad():  # as after training: no two tensors alike (the exporter shares equal constants)
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        export_onnx(model, out, top_k=20)
        assert last_layer_positions(out / "encoder.onnx", CLICK_FEEDS) == 1
        ids = np.array([[0, 0, 0, 0, 0, 0, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]], dtype=np.int64)
        (got,) = ort.InferenceSession(str(out / "encoder.onnx"), providers=["CPUExecutionProvider"]).run(None, {"item_ids": ids})
        with torch.no_grad():
            want = model.user_embedding(torch.from_numpy(ids)).numpy()
        assert np.abs(got - want).max() < 1e-5
        with pytest.raises(ValueError, match="no BERT layer"):
            last_position_only(onnx.load(str(out / "ranker.onnx")))
