"""OnnxModel: a batch larger than ``max_rows`` runs in slices with the same results; large
batches infer off the loop; on the CPU, ``SkipLayerNormFusion`` stays off."""

from pathlib import Path

import numpy as np
import onnxruntime as ort

from streamer.inference.runner import OnnxModel
from streamer.settings import Settings

MODELS = Settings.from_env().models


def test_slices_of_a_batch_give_the_outputs_of_the_whole_batch() -> None:
    whole = OnnxModel(MODELS.recommend / "encoder.onnx", provider="cpu")
    sliced = OnnxModel(MODELS.recommend / "encoder.onnx", provider="cpu", max_rows=3)
    ids = np.random.default_rng(0).integers(1, 1000, (10, 8))
    (expected,) = whole.run({"item_ids": ids})
    (got,) = sliced.run({"item_ids": ids})
    assert got.shape == expected.shape == (10, 64)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_inputs_without_a_batch_axis_go_whole_to_every_slice() -> None:
    ranker = OnnxModel(MODELS.recommend / "ranker.onnx", provider="cpu", max_rows=4)
    assert ranker.batched == {"user_embedding", "exclude"}
    embeddings = np.random.default_rng(1).standard_normal((9, 64)).astype(np.float32)
    items, scores = ranker.run({"user_embedding": embeddings, "exclude": np.zeros((9, 1), dtype=np.int64),
                                "k": np.array([5], dtype=np.int64)})
    assert items.shape == scores.shape == (9, 5)


async def test_large_batches_are_inferred_in_a_thread_small_ones_on_the_loop() -> None:
    import threading

    from streamer.inference.runner import INLINE_ROWS, off_the_loop

    def where(rows: int) -> tuple[int, int]:
        return rows, threading.get_ident()

    loop_thread = threading.get_ident()
    assert await off_the_loop(INLINE_ROWS - 1, where, 1) == (1, loop_thread)
    rows, thread = await off_the_loop(INLINE_ROWS, where, 2)
    assert rows == 2 and thread != loop_thread
    assert await off_the_loop(INLINE_ROWS * 100, where, 3, thread=False) == (3, loop_thread)  # STREAMER_MODELS_THREAD=false


def add_then_layer_norm(path: Path) -> Path:
    """A graph of one Add feeding a LayerNormalization, the pattern SkipLayerNormFusion fuses."""
    import onnx  # the train extra's, as in tests/models
    from onnx import TensorProto, helper, numpy_helper

    width = 16
    shape = ["batch", 4, width]
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "skip"], ["sum"]),
         helper.make_node("LayerNormalization", ["sum", "scale", "bias"], ["out"], axis=-1, epsilon=1e-5)],
        "add_then_layer_norm",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name in ("x", "skip")],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, shape)],
        [numpy_helper.from_array(np.ones(width, np.float32), "scale"),
         numpy_helper.from_array(np.zeros(width, np.float32), "bias")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def optimised_ops(path: Path) -> set[str]:
    import onnx

    return {node.op_type for node in onnx.load(str(path)).graph.node}


def optimised_by_default(graph: Path, out: Path) -> set[str]:
    """The ops of ``graph`` as ONNX Runtime optimises it on the CPU with every rewrite on."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(out)
    ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    return optimised_ops(out)


def test_on_the_cpu_an_add_and_layer_norm_stay_unfused_where_onnx_runtime_would_fuse_them(tmp_path: Path) -> None:
    graph = add_then_layer_norm(tmp_path / "graph.onnx")
    assert "SkipLayerNormalization" in optimised_by_default(graph, tmp_path / "default.onnx")  # what the runtime turns off

    model = OnnxModel(graph, provider="cpu", optimized_graph=tmp_path / "served.onnx")
    assert optimised_ops(tmp_path / "served.onnx") >= {"Add", "LayerNormalization"}
    assert "SkipLayerNormalization" not in optimised_ops(tmp_path / "served.onnx")
    x = np.random.default_rng(2).standard_normal((3, 4, 16)).astype(np.float32)
    (out,) = model.run({"x": x, "skip": x})
    np.testing.assert_allclose(out.mean(axis=-1), 0.0, atol=1e-5)


def test_the_shipped_encoders_give_skip_layer_norm_fusion_nothing_to_fuse(tmp_path: Path) -> None:
    """Why ``bench.ort_options`` times their fusion on and off alike (CPU_DISABLED_OPTIMIZERS)."""
    for encoder in (MODELS.fraud / "encoder.onnx", MODELS.recommend / "encoder.onnx"):
        default = optimised_by_default(encoder, tmp_path / "default.onnx")
        OnnxModel(encoder, provider="cpu", optimized_graph=tmp_path / "served.onnx")
        assert "SkipLayerNormalization" not in default
        assert default == optimised_ops(tmp_path / "served.onnx")
