"""ONNX export of the recommender: ``encoder.onnx`` (sequence -> user embedding) and ``ranker.onnx``.

``encoder.onnx``
    input ``item_ids`` int64 ``[batch, length]``, ``length <= max_len``: model indices, left-padded
    with 0, most recent item last; the last column is always position ``max_len - 1``, so a batch
    trimmed to its longest row gives the embeddings of the same rows padded to ``max_len`` (short
    histories cost less). Ids outside ``1..num_items`` (unknown items, the internal ``[MASK]`` id) are treated as
    padding. Output ``user_embedding`` float32 ``[batch, D]``: the final hidden state of the last
    position (causal attention). A row of only padding gives a meaningless embedding: serve the
    manifest's ``popular`` list instead.

``ranker.onnx``
    inputs ``user_embedding`` float32 ``[batch, D]``, ``exclude`` int64 ``[batch, E]`` (model
    indices never to return, e.g. the user's history; padded with 0; ``E >= 1`` dynamic) and ``k``
    int64 ``[1]``, how many to return (``1 <= k <= num_items``; the manifest's ``top_k`` is what the
    model was evaluated at). Outputs ``top_items`` int64 ``[batch, k]`` and ``top_scores`` float32
    ``[batch, k]``, best first. The top-k selection is most of the graph's cost, so a caller asks
    for what it serves (10 rather than 100 is about 3x faster). Scores are dot products with the tied item
    embeddings. Excluded items get the score ``-3.4028235e38`` (float32 lowest) so they come last and
    only appear when fewer than K items remain; padding (index 0) gets ``-inf`` and is never returned.

Both graphs are exported with ``torch.onnx.export`` (dynamo exporter), opset :data:`OPSET`, with a
dynamic batch axis, as self-contained files (no external data); the encoder's last layer is then
rewritten to run at the last position alone (``models.last_position``, the same embeddings), and
the ranker's top-k selection to run over the best blocks of the catalogue (``models.block_top_k``,
the same items). :func:`model_from_encoder` rebuilds
the torch model from a shipped ``encoder.onnx`` (its weights are the model's), so a shipped model
can be exported again without retraining (``python -m models.recommend.export DIR``).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models import block_top_k
from models.last_position import LAST_LAYER, rewrite_file

from .model import ModelConfig, SeqRecModel

OPSET = 20
ENCODER_NOTE = ("item_ids: model indices left-padded with 0, most recent item last, at most max_len columns "
                "(keep the last max_len; fewer columns give the same embeddings, faster); ids outside "
                "1..num_items count as padding; an all-padding row gives a meaningless embedding: serve "
                "'popular' instead")
EXCLUDED_SCORE = float(torch.finfo(torch.float32).min)
RANKER_NOTE = ("exclude: model indices never returned (e.g. the whole history), padded with 0, E >= 1; "
               "k: how many to return (1..num_items; the fewer, the faster); top_items best first; "
               f"excluded items score {EXCLUDED_SCORE} and only appear when fewer than k items are left; "
               "index 0 is never returned")


class EncoderGraph(nn.Module):
    """``item_ids [B, L] -> user_embedding [B, D]`` with unknown ids mapped to padding."""

    def __init__(self, model: SeqRecModel) -> None:
        super().__init__()
        self.model = model
        self.num_items = model.num_items

    def forward(self, item_ids: torch.Tensor) -> torch.Tensor:
        valid = (item_ids > 0) & (item_ids <= self.num_items)
        item_ids = torch.where(valid, item_ids, torch.zeros_like(item_ids))
        return self.model.user_embedding(item_ids)


class RankerGraph(nn.Module):
    """``(user_embedding [B, D], exclude [B, E]) -> (top_items [B, K], top_scores [B, K])``."""

    items: torch.Tensor  # a buffer

    def __init__(self, model: SeqRecModel, top_k: int) -> None:
        super().__init__()
        weight = model.item_embedding.weight[: model.num_items + 1].detach().clone()
        self.register_buffer("items", weight)  # row i = model index i (row 0: padding)
        self.num_items = model.num_items
        self.top_k = top_k

    def forward(self, user_embedding: torch.Tensor, exclude: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = user_embedding @ self.items.T
        exclude = exclude.clamp(0, self.num_items)
        fill = torch.full(exclude.shape, EXCLUDED_SCORE, dtype=scores.dtype)
        scores = scores.scatter(1, exclude, fill)
        # padding (column 0) set to -inf after the scatter, so it stays below excluded items;
        # a scatter of one column, not an addition over the whole catalogue (a fifth of the ranker's time)
        padding = exclude[:, :1] * 0
        scores = scores.scatter(1, padding, torch.full(padding.shape, float("-inf"), dtype=scores.dtype))
        top_scores, top_items = torch.topk(scores, self.top_k, dim=1)
        return top_items, top_scores


def _export(module: nn.Module, args: tuple[Any, ...], path: Path, input_names: list[str], output_names: list[str],
            dynamic_shapes: tuple[Any, ...], metadata: dict[str, str] | None = None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module, args, None, input_names=input_names, output_names=output_names,
            dynamic_shapes=dynamic_shapes, opset_version=OPSET, dynamo=True, external_data=False,
            optimize=True, verbose=False,
        )
    if program is None:  # only the legacy exporter, with an ``f`` to write to, returns nothing
        raise RuntimeError("torch.onnx.export returned no ONNX program")
    graph = program.model_proto
    for key, value in (metadata or {}).items():
        graph.metadata_props.add(key=key, value=value)
    path.write_bytes(graph.SerializeToString())


def export_onnx(model: SeqRecModel, out_dir: Path, top_k: int = 100) -> dict[str, Any]:
    """Write ``encoder.onnx`` and ``ranker.onnx`` to ``out_dir``; return their I/O contract."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    k = min(top_k, model.num_items)
    training = model.training
    model.eval()
    model.set_attn_implementation("eager")
    try:
        batch = torch.export.Dim("batch", min=1)
        width = torch.export.Dim("exclude", min=1)
        length = torch.export.Dim("length", min=1, max=model.max_len)
        ids = torch.zeros(2, model.max_len, dtype=torch.int64)
        ids[:, -3:] = torch.tensor([1, 2, 3])
        with torch.no_grad():
            encoder = EncoderGraph(model)
            _export(encoder, (ids,), out_dir / "encoder.onnx", ["item_ids"], ["user_embedding"],
                    ({0: batch, 1: length},), {"max_len": str(model.max_len)})
            rewrite_file(out_dir / "encoder.onnx")  # the last layer at the newest item alone
            ranker = RankerGraph(model, k)
            emb = encoder(ids)
            exclude = torch.tensor([[1, 2, 0], [3, 0, 0]], dtype=torch.int64)
            _export(ranker, (emb, exclude), out_dir / "ranker.onnx", ["user_embedding", "exclude"],
                    ["top_items", "top_scores"], ({0: batch}, {0: batch, 1: width}))
            _k_as_input(out_dir / "ranker.onnx")
            block_top_k.rewrite_file(out_dir / "ranker.onnx")  # the top k of the best blocks
    finally:
        model.set_attn_implementation("sdpa")
        model.train(training)
    d = model.cfg.hidden
    return {
        "opset": OPSET,
        "files": {"encoder": "encoder.onnx", "ranker": "ranker.onnx"},
        "inputs": {
            "encoder": [{"name": "item_ids", "dtype": "int64", "shape": ["batch", "length"]}],
            "ranker": [{"name": "user_embedding", "dtype": "float32", "shape": ["batch", d]},
                       {"name": "exclude", "dtype": "int64", "shape": ["batch", "E"]},
                       {"name": "k", "dtype": "int64", "shape": [1]}],
        },
        "outputs": {
            "encoder": [{"name": "user_embedding", "dtype": "float32", "shape": ["batch", d]}],
            "ranker": [{"name": "top_items", "dtype": "int64", "shape": ["batch", "k"]},
                       {"name": "top_scores", "dtype": "float32", "shape": ["batch", "k"]}],
        },
        "top_k": k,
        "excluded_score": EXCLUDED_SCORE,
        "last_layer": LAST_LAYER,
        "top_k_selection": {"method": block_top_k.METHOD, "block": block_top_k.BLOCK},
    }


def _k_as_input(path: Path) -> None:
    """Make the exported ranker's top-k count a graph input ``k`` (torch exports it as a constant)."""
    import onnx

    graph_proto = onnx.load(str(path))
    graph = graph_proto.graph
    (topk,) = [node for node in graph.node if node.op_type == "TopK"]
    constant = topk.input[1]
    if sum(constant in node.input for node in graph.node) != 1:
        raise ValueError(f"{path}: the top-k count {constant} is shared; cannot make it an input")
    graph.initializer.remove(next(init for init in graph.initializer if init.name == constant))
    topk.input[1] = "k"
    graph.input.append(onnx.helper.make_tensor_value_info("k", onnx.TensorProto.INT64, [1]))
    for output in graph.output:
        output.type.tensor_type.shape.dim[1].dim_param = "k"
    onnx.checker.check_model(graph_proto)
    path.write_bytes(graph_proto.SerializeToString())


def model_from_encoder(path: Path, cfg: ModelConfig) -> SeqRecModel:
    """The torch model whose weights are in an exported ``encoder.onnx``.

    Named initializers map to parameters directly; the exporter stores each linear layer's
    weight transposed under a generated name, found as the ``MatMul`` operand whose product
    gets that layer's (named) bias added. Fails loudly when a weight is not found (the
    exporter shares equal constants, e.g. the LayerNorms of an untrained model)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    added = {name: node for node in graph.node if node.op_type == "Add" for name in node.input}
    state: dict[str, torch.Tensor] = {}
    model = SeqRecModel(cfg)
    wanted = model.state_dict()
    for name in wanted:
        if f"model.{name}" in arrays:
            state[name] = torch.from_numpy(arrays[f"model.{name}"].copy())
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in arrays:
            continue
        bias = next(i for i in added[node.output[0]].input if i != node.output[0])
        state[bias.removeprefix("model.").replace(".bias", ".weight")] = torch.from_numpy(arrays[node.input[1]].T.copy())
    unused = {"bert.embeddings.word_embeddings.weight"}  # inputs come from item_embedding
    missing = set(wanted) - set(state) - unused
    if missing:
        raise ValueError(f"{path}: no weights found for {sorted(missing)}")
    model.load_state_dict(state, strict=False)
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    """Export a shipped recommender again (same weights, current exporter) and check it."""
    import argparse
    import json
    import shutil
    import tempfile

    import numpy as np
    import onnxruntime as ort

    from .check import check_against_torch, check_histories
    from .data import left_pad, read_items, read_sequences, right_pad
    from .evaluate import evaluate, rank
    from .quantize import quantize_again

    p = argparse.ArgumentParser(prog="python -m models.recommend.export", description=main.__doc__)
    p.add_argument("model_dir", type=Path, help="directory with encoder.onnx, ranker.onnx and manifest.json")
    p.add_argument("--data", type=Path, required=True, help="the sequence file it was trained on (for the checks)")
    args = p.parse_args(argv)
    manifest_path = args.model_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    hp = manifest["train"]["hyperparameters"]
    cfg = ModelConfig(num_items=manifest["num_items"], max_len=manifest["max_len"], hidden=hp["hidden"],
                      layers=hp["layers"], heads=hp["heads"], dropout=hp["dropout"], attn_dropout=hp["attn_dropout"])
    model = model_from_encoder(args.model_dir / "encoder.onnx", cfg)
    seqs = read_sequences(args.data, items=read_items(args.model_dir / "items.txt"))
    histories = check_histories(seqs.sequences, seqs.num_items)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        io = export_onnx(model, out, manifest["top_k"])
        shutil.copy(args.model_dir / "items.txt", out / "items.txt")
        checked = check_against_torch(model, out, histories, threads=1)
        # the new graphs against the shipped ones, on the same padded input
        old = ort.InferenceSession(str(args.model_dir / "encoder.onnx"), providers=["CPUExecutionProvider"])
        new = ort.InferenceSession(str(out / "encoder.onnx"), providers=["CPUExecutionProvider"])
        ids = left_pad(histories, cfg.max_len)
        embeddings = old.run(None, {"item_ids": ids})[0]
        shipped_diff = float(np.abs(embeddings - new.run(None, {"item_ids": ids})[0]).max())
        exclude = right_pad(histories)
        old_top = rank(ort.InferenceSession(str(args.model_dir / "ranker.onnx")), embeddings, exclude, manifest["top_k"])
        new_top = rank(ort.InferenceSession(str(out / "ranker.onnx")), embeddings, exclude, manifest["top_k"])
        same_top = bool(np.array_equal(old_top[0], new_top[0]))
        if not checked["ok"] or shipped_diff > 1e-4 or not same_top:
            print(json.dumps({"check": checked, "shipped_embedding_max_abs_diff": shipped_diff, "same_top": same_top}))
            return 1
        metrics = {name: evaluate(args.data, out, split_name=name, threads=1) for name in ("valid", "test")}
        for name in ("encoder.onnx", "ranker.onnx"):
            shutil.copy(out / name, args.model_dir / name)
    manifest["inputs"], manifest["outputs"], manifest["last_layer"] = io["inputs"], io["outputs"], io["last_layer"]
    manifest["top_k_selection"] = io["top_k_selection"]
    manifest["notes"].update(encoder=ENCODER_NOTE, ranker=RANKER_NOTE)
    manifest["check"] = {**checked, "shipped_embedding_max_abs_diff": shipped_diff}
    manifest["metrics"].update(metrics)
    again = f"; exported again by models.recommend.export with torch {torch.__version__}"
    if not manifest["framework"].endswith(again):
        manifest["framework"] += again
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    int8, short = quantize_again(args.model_dir, args.data)
    print(json.dumps({"metrics": metrics, "shipped_embedding_max_abs_diff": shipped_diff,
                      "int8": int8["metrics"]["int8"], "int8_short": short}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
