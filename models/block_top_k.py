"""A ranker's top-k selection in two stages: the best blocks of the catalogue, then the best items in them.

The next-item ranker scores every catalogue item for every user, then keeps the top
``k`` with one ``TopK`` over the whole row. On the CPU provider that ``TopK`` was most of
the ranker's time (61 % of the int8 ranker at batch 4,096 and ``k`` = 10, 45 % of the
float32 one): each row a pass that keeps a heap of ``k`` over 12,102 scores.
``block_top_k`` rewrites it so:

1. the row's maximum per block of ``BLOCK`` consecutive items (a ``ReduceMax`` over the
   scores reshaped to blocks; the item table is padded with zero items to whole blocks,
   and their scores set to -inf);
2. the ``min(k, blocks)`` blocks with the highest maxima, put back in catalogue order;
3. those blocks' scores, gathered whole (``GatherND``), as the candidates;
4. the top ``k`` of the candidates, and their catalogue indices.

At ``k`` = 10 the int8 ranker then takes 78 ms for 4,096 users instead of 153 ms (one
thread, this 2-core machine); at ``k`` = 100 both take the same (254 and 257 ms).

The answer is exactly the one-stage ``TopK``'s, ties included. An item among the top
``k`` lies in a block whose maximum is at least its score. If its block were not chosen,
``k`` chosen blocks would each hold a maximum that ranks before it (higher, or equal at a
lower index, since a block chosen over its block on an equal maximum comes earlier in the
catalogue, and ``TopK`` puts equal values at lower indices first), so ``k`` items would rank
before it. The candidates keep catalogue order, so equal scores among them resolve as
over the whole row.

``check`` runs both graphs on the same inputs and requires identical items and scores;
``python -m models.block_top_k DIR`` rewrites a shipped recommender's rankers (float32
and int8) in place after that check on real user embeddings from the benchmark data, and
records it in the manifest. ``models.recommend.export`` applies it to every export.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from models.last_position import Feeds, click_histories, cpu_session

PREFIX = "block_top_k_"
METHOD = "two stages: the best blocks of the catalogue, then the best of their items (models.block_top_k)"
#: Items per block. Of 16, 32, 64 and 128, 32 did best over ``k`` = 10, 20 and 100 (the
#: int8 ranker, batch 4,096, one thread: 79, 110 and 257 ms, against 160, 171 and 263 ms
#: in one stage): 320 candidates at ``k`` = 10, 379 block maxima for 12,102 items.
BLOCK = 32


def block_top_k(model: onnx.ModelProto, block: int = BLOCK) -> onnx.ModelProto:
    """``model`` with its one ``TopK`` (largest first, sorted, along axis 1 of the
    ``[batch, items]`` scores of a ``MatMul`` by the item table, possibly through
    ``ScatterElements``) done in two stages (the module's docstring). The item table is
    padded to whole blocks (zero items, whose scores are then set to -inf), so the scores
    reshape into blocks without a copy. A graph of another shape is refused
    (``ValueError``), never half rewritten."""
    graph = model.graph
    top_ks = [node for node in graph.node if node.op_type == "TopK"]
    if len(top_ks) != 1:
        raise ValueError(f"expected one TopK, found {len(top_ks)}")
    (top_k,) = top_ks
    attributes = {a.name: helper.get_attribute_value(a) for a in top_k.attribute}
    if attributes.get("largest", 1) != 1 or attributes.get("sorted", 1) != 1 or attributes.get("axis", -1) not in (1, -1):
        raise ValueError(f"TopK {top_k.name} is not a sorted largest-first selection along axis 1: {attributes}")
    scores, k = top_k.input
    top_scores, top_items = top_k.output
    width, padded = _pad_item_table(graph, scores, block)
    blocks = padded // block

    def name(suffix: str) -> str:
        return PREFIX + suffix

    def constant(suffix: str, values: object, dtype: type = np.int64) -> str:
        graph.initializer.append(numpy_helper.from_array(np.asarray(values, dtype=dtype), name(suffix)))
        return name(suffix)

    def node(op: str, inputs: Sequence[str], outputs: Sequence[str], **attrs: Any) -> onnx.NodeProto:
        return helper.make_node(op, list(inputs), [o if o in (top_scores, top_items) else name(o) for o in outputs],
                                name=name(outputs[0]), **attrs)

    fill = padded - width
    nodes = [
        # the padding items score -inf
        node("Shape", [scores], ["batch"], start=0, end=1),
        node("Concat", [name("batch"), constant("fill", [fill])], ["fill_shape"], axis=0),
        node("Expand", [constant("fill_items", np.arange(width, padded)[None, :]), name("fill_shape")], ["fill_indices"]),
        node("Expand", [constant("minus_inf", [[-np.inf]], np.float32), name("fill_shape")], ["fill_scores"]),
        node("ScatterElements", [scores, name("fill_indices"), name("fill_scores")], ["scores"], axis=1),
        # 1. each block's maximum
        node("Reshape", [name("scores"), constant("block_shape", [0, blocks, block])], ["blocks"]),
        node("ReduceMax", [name("blocks"), constant("within_block", [2])], ["maxima"], keepdims=0),
        # 2. the best blocks, back in catalogue order
        node("Min", [k, constant("block_count", [blocks])], ["kept_count"]),
        node("TopK", [name("maxima"), name("kept_count")], ["best_maxima", "best_blocks"], axis=1, largest=1, sorted=1),
        node("TopK", [name("best_blocks"), name("kept_count")], ["kept", "kept_order"], axis=1, largest=0, sorted=1),
        # 3. their items' scores, in catalogue order
        node("Unsqueeze", [name("kept"), constant("index_axis", [2])], ["kept_index"]),
        node("GatherND", [name("blocks"), name("kept_index")], ["kept_blocks"], batch_dims=1),
        node("Reshape", [name("kept_blocks"), constant("flat", [0, -1])], ["candidates"]),
        # 4. the best candidates, and their catalogue indices
        node("TopK", [name("candidates"), k], [top_scores, "positions"], axis=1, largest=1, sorted=1),
        node("Div", [name("positions"), constant("block", [block])], ["which"]),
        node("Mod", [name("positions"), name("block")], ["within"]),
        node("GatherElements", [name("kept"), name("which")], ["block_of"], axis=1),
        node("Unsqueeze", [name("block_of"), name("index_axis")], ["block_column"]),
        node("Unsqueeze", [name("within"), name("index_axis")], ["within_column"]),
        node("Concat", [name("block_column"), name("within_column")], ["block_and_offset"], axis=2),
        node("GatherND", [constant("catalogue", np.arange(padded).reshape(blocks, block)), name("block_and_offset")],
             [top_items]),
    ]
    at = list(graph.node).index(top_k)
    del graph.node[at]
    for offset, new in enumerate(nodes):
        graph.node.insert(at + offset, new)
    del graph.value_info[:]  # shapes inferred for the unpadded catalogue are wrong now
    onnx.checker.check_model(model)
    return model


def _pad_item_table(graph: onnx.GraphProto, scores: str, block: int) -> tuple[int, int]:
    """Pads the item table whose ``MatMul`` makes ``scores`` (through ``ScatterElements``
    on its data input) with zero items up to whole blocks: a float32 initializer, or an
    int8 one behind a ``DequantizeLinear`` (its per-item scales padded with ones, its zero
    points with zeros). Returns the catalogue's width before padding and after."""
    producer = {output: node for node in graph.node for output in node.output}
    initializers = {init.name: init for init in graph.initializer}
    node = producer.get(scores)
    while node is not None and node.op_type == "ScatterElements":
        node = producer.get(node.input[0])
    if node is None or node.op_type != "MatMul":
        raise ValueError(f"{scores} is not the product of a MatMul by an item table")
    table = node.input[1]
    if table in initializers:
        weights, pads = table, {}
    else:
        dequantize = producer.get(table)
        if dequantize is None or dequantize.op_type != "DequantizeLinear" or dequantize.input[0] not in initializers:
            raise ValueError(f"the item table {table} is neither an initializer nor a dequantized one")
        axis = next((helper.get_attribute_value(a) for a in dequantize.attribute if a.name == "axis"), 1)
        weights = dequantize.input[0]
        per_item = [n for n in dequantize.input[1:] if n and numpy_helper.to_array(initializers[n]).ndim == 1]
        if axis not in (1, -1) and per_item:
            raise ValueError(f"{dequantize.name} is per channel along axis {axis}, not per item")
        pads = {n: (1.0 if i == 0 else 0) for i, n in enumerate(dequantize.input[1:]) if n in per_item}
    array = numpy_helper.to_array(initializers[weights])
    if array.ndim != 2:
        raise ValueError(f"the item table {weights} has shape {array.shape}")
    width = array.shape[1]
    padded = -(-width // block) * block
    _replace(initializers[weights], np.pad(array, ((0, 0), (0, padded - width))))
    for name, value in pads.items():
        values = numpy_helper.to_array(initializers[name])
        _replace(initializers[name], np.pad(values, (0, padded - width), constant_values=value))
    return width, padded


def _replace(initializer: onnx.TensorProto, array: np.ndarray) -> None:
    initializer.CopyFrom(numpy_helper.from_array(array.astype(numpy_helper.to_array(initializer).dtype), initializer.name))


def rewrite_file(path: Path, block: int = BLOCK) -> None:
    """The ranker at ``path`` rewritten in place (what the export does after exporting)."""
    path.write_bytes(block_top_k(onnx.load(str(path)), block).SerializeToString())


def check(before: Path | bytes, after: Path | bytes, feeds: Sequence[Feeds]) -> dict[str, object]:
    """Both rankers on the same inputs; raises unless every item and score is identical."""
    old, new = cpu_session(before), cpu_session(after)
    rows = 0
    for f in feeds:
        (old_items, old_scores), (new_items, new_scores) = old.run(None, f), new.run(None, f)
        if not (np.array_equal(old_items, new_items) and np.array_equal(old_scores, new_scores)):
            differ = int(((old_items != new_items) | (old_scores != new_scores)).any(axis=1).sum())
            raise ValueError(f"the two-stage top-k differs from the one-stage one in {differ} of {len(old_items)} rows "
                             f"(k={int(f['k'][0])})")
        rows += len(old_items)
    return {"batches": len(feeds), "rows": rows, "identical": True, "ks": sorted({int(f["k"][0]) for f in feeds})}


def ranker_feeds(model_dir: Path, n: int, ks: Sequence[int] = (1, 10, 100, 1000)) -> list[Feeds]:
    """The benchmark's first ``n`` click histories as the ranker takes them (their user
    embeddings, the histories excluded), in batches of 256 at each ``k``; and the ties a
    zero embedding gives (every item scores 0)."""
    from models.recommend.data import right_pad
    from streamer.inference.next_item import NextItemRanker

    ranker = NextItemRanker(model_dir, provider="cpu")
    feeds = []
    for batch in click_histories(model_dir, n)[::2]:  # trimmed to the batch's longest row
        ids = batch["item_ids"]
        embeddings = ranker.encode([row[row > 0].tolist() for row in ids])
        exclude = right_pad([row[row > 0] for row in ids])
        for k in ks:
            feeds.append({"user_embedding": embeddings, "exclude": exclude, "k": np.asarray([k], dtype=np.int64)})
    zeros = np.zeros((4, ranker.embedding_dim), dtype=np.float32)
    for k in ks:
        feeds.append({"user_embedding": zeros, "exclude": np.asarray([[0, 0], [1, 0], [5, 2], [200, 0]], dtype=np.int64),
                      "k": np.asarray([k], dtype=np.int64)})
    return feeds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.block_top_k", description=__doc__.split("\n")[0])
    parser.add_argument("model_dir", type=Path, help="a shipped recommend model directory")
    args = parser.parse_args(argv)
    manifest_path = args.model_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    feeds = ranker_feeds(args.model_dir, 2048)
    results = {}
    for path in (args.model_dir / manifest["files"]["ranker"], args.model_dir / manifest["int8"]["ranker"]):
        rewritten = block_top_k(onnx.load(str(path))).SerializeToString()
        results[path.name] = check(path, rewritten, feeds)
        path.write_bytes(rewritten)
    manifest["top_k_selection"] = {"method": METHOD, "block": BLOCK, "check": results}
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
