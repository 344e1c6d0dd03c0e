"""``models.block_top_k``: the two-stage top-k gives exactly the one-stage answer, ties included."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from models.block_top_k import BLOCK, block_top_k, check

MODEL = Path(__file__).resolve().parents[2] / "models" / "shipped" / "recommend"
ITEMS, DIM = 203, 4  # not a whole number of blocks of 8 or of BLOCK


def ranker(table: np.ndarray, int8: bool = False, largest: int = 1, top_ks: int = 1) -> onnx.ModelProto:
    """A ranker shaped like the shipped ones: scores by an item table (float32, or int8
    per item behind a ``DequantizeLinear``), excluded items set to the lowest float, then
    ``TopK`` by an input ``k``."""
    initializers = [numpy_helper.from_array(np.asarray([[np.finfo(np.float32).min]], np.float32), "low")]
    nodes = []
    if int8:
        scale = np.abs(table).max(axis=0) / 63 + 1e-3
        initializers += [numpy_helper.from_array(np.round(table / scale).astype(np.int8), "table_q"),
                         numpy_helper.from_array(scale.astype(np.float32), "scale"),
                         numpy_helper.from_array(np.zeros(table.shape[1], np.int8), "zero")]
        nodes.append(helper.make_node("DequantizeLinear", ["table_q", "scale", "zero"], ["table"], axis=1))
    else:
        initializers.append(numpy_helper.from_array(table, "table"))
    nodes += [
        helper.make_node("MatMul", ["user_embedding", "table"], ["scores"]),
        helper.make_node("Shape", ["exclude"], ["exclude_shape"]),
        helper.make_node("Expand", ["low", "exclude_shape"], ["low_fill"]),
        helper.make_node("ScatterElements", ["scores", "exclude", "low_fill"], ["excluded"], axis=1),
    ]
    nodes += [helper.make_node("TopK", ["excluded", "k"], [f"top_scores{i or ''}", f"top_items{i or ''}"],
                               axis=1, largest=largest, sorted=1) for i in range(top_ks)]
    graph = helper.make_graph(
        nodes, "ranker",
        [helper.make_tensor_value_info("user_embedding", TensorProto.FLOAT, ["batch", DIM]),
         helper.make_tensor_value_info("exclude", TensorProto.INT64, ["batch", "E"]),
         helper.make_tensor_value_info("k", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("top_items", TensorProto.INT64, ["batch", "k"]),
         helper.make_tensor_value_info("top_scores", TensorProto.FLOAT, ["batch", "k"])],
        initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)


def feeds(rng: np.random.Generator, ks: tuple[int, ...]) -> list[dict[str, np.ndarray]]:
    """Random users, users whose scores tie everywhere (a zero embedding), and users
    whose scores tie in groups (a table of small integers, below), each at every ``k``."""
    users = [rng.normal(size=(16, DIM)), np.zeros((3, DIM)), rng.integers(-1, 2, size=(16, DIM))]
    out = []
    for embedding in users:
        exclude = rng.integers(0, ITEMS, size=(len(embedding), 5))
        for k in ks:
            out.append({"user_embedding": embedding.astype(np.float32), "exclude": exclude,
                        "k": np.asarray([k], dtype=np.int64)})
    return out


@pytest.mark.parametrize("int8", [False, True])
@pytest.mark.parametrize("block", [8, BLOCK])
def test_the_two_stages_give_the_one_stage_items_and_scores_ties_included(int8: bool, block: int) -> None:
    rng = np.random.default_rng(0)
    table = rng.integers(-2, 3, size=(DIM, ITEMS)).astype(np.float32)  # small integers: many equal scores
    one_stage = ranker(table, int8).SerializeToString()
    two_stages = block_top_k(ranker(table, int8), block).SerializeToString()
    result = check(one_stage, two_stages, feeds(rng, (1, 3, 10, 26, ITEMS - 1)))
    assert result["identical"] and result["rows"] == 5 * (16 + 3 + 16)


def test_a_difference_is_caught() -> None:
    rng = np.random.default_rng(1)
    table = rng.normal(size=(DIM, ITEMS)).astype(np.float32)
    other = table.copy()
    other[:, 7] += 10.0  # another item table: another answer
    with pytest.raises(ValueError, match="differs"):
        check(ranker(table).SerializeToString(), block_top_k(ranker(other), 8).SerializeToString(), feeds(rng, (5,)))


def test_the_item_table_is_padded_to_whole_blocks_and_the_padding_never_returned() -> None:
    rng = np.random.default_rng(2)
    model = block_top_k(ranker(rng.normal(size=(DIM, ITEMS)).astype(np.float32)), 8)
    (table,) = [numpy_helper.to_array(i) for i in model.graph.initializer if i.name == "table"]
    assert table.shape == (DIM, 208) and not table[:, ITEMS:].any()
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    exclude = np.arange(1, ITEMS)[None, :]  # all but item 0: the rest come at the lowest float
    items, scores = session.run(None, {"user_embedding": np.ones((1, DIM), np.float32), "exclude": exclude,
                                       "k": np.asarray([ITEMS], dtype=np.int64)})
    assert sorted(items[0].tolist()) == list(range(ITEMS)) and items[0, 0] == 0
    assert (scores[0, 1:] == np.finfo(np.float32).min).all()


def test_other_shapes_are_refused_untouched() -> None:
    table = np.ones((DIM, ITEMS), np.float32)
    for model in (ranker(table, top_ks=2), ranker(table, largest=0)):
        before = model.SerializeToString()
        with pytest.raises(ValueError):
            block_top_k(model)
        assert model.SerializeToString() == before
    not_scores = ranker(table)
    matmul = next(n for n in not_scores.graph.node if n.op_type == "MatMul")
    matmul.op_type = "Add"  # the top k of something that is not a product by an item table
    with pytest.raises(ValueError, match="MatMul"):
        block_top_k(not_scores)
    with pytest.raises(ValueError, match="one TopK"):
        block_top_k(block_top_k(ranker(table)))  # rewritten already


def test_the_shipped_rankers_run_in_two_stages_checked_identical_on_the_benchmark_users() -> None:
    manifest = json.loads((MODEL / "manifest.json").read_text())
    selection = manifest["top_k_selection"]
    assert selection["block"] == BLOCK
    for name in (manifest["files"]["ranker"], manifest["int8"]["ranker"]):
        ops = [node.op_type for node in onnx.load(str(MODEL / name)).graph.node]
        assert {"ReduceMax", "GatherND"} <= set(ops) and ops.count("TopK") == 3, (name, ops)
        assert selection["check"][name]["identical"] and {1, 10, 100} <= set(selection["check"][name]["ks"])
