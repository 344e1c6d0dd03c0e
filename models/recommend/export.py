"""ONNX export of the recommender: ``encoder.onnx`` (sequence -> user embedding) and ``ranker.onnx``.

``encoder.onnx``
    input ``item_ids`` int64 ``[batch, max_len]``: model indices, left-padded with 0, most recent item
    last. Ids outside ``1..num_items`` (unknown items, the internal ``[MASK]`` id) are treated as
    padding. Output ``user_embedding`` float32 ``[batch, D]``: the final hidden state of the last
    position (causal attention). A row of only padding gives a meaningless embedding: serve the
    manifest's ``popular`` list instead.

``ranker.onnx``
    inputs ``user_embedding`` float32 ``[batch, D]`` and ``exclude`` int64 ``[batch, E]`` (model
    indices never to return, e.g. the user's history; padded with 0; ``E >= 1`` dynamic). Outputs
    ``top_items`` int64 ``[batch, K]`` and ``top_scores`` float32 ``[batch, K]``, best first, with
    ``K = min(top_k, num_items)`` fixed at export. Scores are dot products with the tied item
    embeddings. Excluded items get the score ``-3.4028235e38`` (float32 lowest) so they come last and
    only appear when fewer than K items remain; padding (index 0) gets ``-inf`` and is never returned.

Both graphs are exported with ``torch.onnx.export`` (dynamo exporter), opset :data:`OPSET`, with a
dynamic batch axis, as self-contained files (no external data).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from .model import SeqRecModel

OPSET = 20
EXCLUDED_SCORE = float(torch.finfo(torch.float32).min)


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

    def __init__(self, model: SeqRecModel, top_k: int) -> None:
        super().__init__()
        weight = model.item_embedding.weight[: model.num_items + 1].detach().clone()
        self.register_buffer("items", weight)  # row i = model index i (row 0: padding)
        bias = torch.zeros(model.num_items + 1)
        bias[0] = float("-inf")
        self.register_buffer("bias", bias)
        self.num_items = model.num_items
        self.top_k = top_k

    def forward(self, user_embedding: torch.Tensor, exclude: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = user_embedding @ self.items.T
        exclude = exclude.clamp(0, self.num_items)
        fill = torch.full(exclude.shape, EXCLUDED_SCORE, dtype=scores.dtype)
        scores = scores.scatter(1, exclude, fill)
        scores = scores + self.bias  # after the scatter, so padding stays -inf even if excluded
        top_scores, top_items = torch.topk(scores, self.top_k, dim=1)
        return top_items, top_scores


def _export(module: nn.Module, args: tuple, path: Path, input_names: list[str], output_names: list[str],
            dynamic_shapes: tuple) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, args, str(path), input_names=input_names, output_names=output_names,
            dynamic_shapes=dynamic_shapes, opset_version=OPSET, dynamo=True, external_data=False,
            optimize=True, verbose=False,
        )


def export_onnx(model: SeqRecModel, out_dir: Path, top_k: int = 100) -> dict:
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
        ids = torch.zeros(2, model.max_len, dtype=torch.int64)
        ids[:, -3:] = torch.tensor([1, 2, 3])
        with torch.no_grad():
            encoder = EncoderGraph(model)
            _export(encoder, (ids,), out_dir / "encoder.onnx", ["item_ids"], ["user_embedding"],
                    ({0: batch},))
            ranker = RankerGraph(model, k)
            emb = encoder(ids)
            exclude = torch.tensor([[1, 2, 0], [3, 0, 0]], dtype=torch.int64)
            _export(ranker, (emb, exclude), out_dir / "ranker.onnx", ["user_embedding", "exclude"],
                    ["top_items", "top_scores"], ({0: batch}, {0: batch, 1: width}))
    finally:
        model.set_attn_implementation("sdpa")
        model.train(training)
    d = model.cfg.hidden
    return {
        "opset": OPSET,
        "files": {"encoder": "encoder.onnx", "ranker": "ranker.onnx"},
        "inputs": {
            "encoder": [{"name": "item_ids", "dtype": "int64", "shape": ["batch", model.max_len]}],
            "ranker": [{"name": "user_embedding", "dtype": "float32", "shape": ["batch", d]},
                       {"name": "exclude", "dtype": "int64", "shape": ["batch", "E"]}],
        },
        "outputs": {
            "encoder": [{"name": "user_embedding", "dtype": "float32", "shape": ["batch", d]}],
            "ranker": [{"name": "top_items", "dtype": "int64", "shape": ["batch", k]},
                       {"name": "top_scores", "dtype": "float32", "shape": ["batch", k]}],
        },
        "excluded_score": EXCLUDED_SCORE,
    }
