"""Offline evaluation of an exported recommender with ONNX Runtime only (no torch).

Leave-one-out, full ranking: for each user the history (``test``: all items but the last;
``valid``: all but the last two) is left-padded into ``encoder.onnx``; ``ranker.onnx`` ranks the whole
catalogue with the whole history excluded; the held-out item is the target. Reports HR@10 and
NDCG@10 (a target outside the returned top K counts as a miss, which for K >= 10 does not change
either metric).

Usage::

    python -m models.recommend.evaluate --data ../shared/data/rec/Beauty.txt --model models/shipped/recommend
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from .data import left_pad, rank_metrics, read_items, read_sequences, right_pad, split

K = 10


GRAPHS = ("encoder.onnx", "ranker.onnx")


def load_sessions(model_dir: Path, threads: int = 0, files: tuple[str, str] = GRAPHS) -> tuple[ort.InferenceSession, ort.InferenceSession]:
    """ONNX Runtime CPU sessions for a model directory's encoder and ranker (``files``)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    providers = ["CPUExecutionProvider"]
    encoder = ort.InferenceSession(str(Path(model_dir) / files[0]), opts, providers=providers)
    ranker = ort.InferenceSession(str(Path(model_dir) / files[1]), opts, providers=providers)
    return encoder, ranker


def max_len_of(encoder: ort.InferenceSession) -> int:
    """The encoder's sequence length: its fixed input width, or the ``max_len`` it was exported with."""
    width = encoder.get_inputs()[0].shape[1]
    return width if isinstance(width, int) else int(encoder.get_modelmeta().custom_metadata_map["max_len"])


def rank(ranker: ort.InferenceSession, embeddings: np.ndarray, exclude: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``top_items`` and ``top_scores``: ``k`` of them from a ranker that takes ``k``, else
    the number it was exported with."""
    feeds = {"user_embedding": embeddings, "exclude": exclude}
    if any(i.name == "k" for i in ranker.get_inputs()):
        feeds["k"] = np.array([k], dtype=np.int64)
    items, scores = ranker.run(["top_items", "top_scores"], feeds)
    return items, scores


def recommend(encoder: ort.InferenceSession, ranker: ort.InferenceSession,
              histories: list[np.ndarray], max_len: int, k: int = K) -> tuple[np.ndarray, np.ndarray]:
    """Top-k model indices and scores for a batch of histories (model indices), history excluded."""
    emb = encoder.run(["user_embedding"], {"item_ids": left_pad(histories, max_len)})[0]
    return rank(ranker, emb, right_pad(histories), k)


def evaluate(data: Path, model_dir: Path, *, split_name: str = "test", batch_size: int = 256,
             threads: int = 0, files: tuple[str, str] = GRAPHS) -> dict[str, Any]:
    """HR@10 / NDCG@10 of the model in ``model_dir`` (its encoder and ranker ``files``) on
    one leave-one-out split of ``data``."""
    start = time.perf_counter()
    model_dir = Path(model_dir)
    items = read_items(model_dir / "items.txt")
    encoder, ranker = load_sessions(model_dir, threads, files)
    max_len = max_len_of(encoder)
    seqs = read_sequences(data, items=items)
    histories, targets, _ = split(seqs.sequences, split_name)
    ranks = np.full(len(targets), -1, dtype=np.int64)
    for lo in range(0, len(targets), batch_size):
        top, _ = recommend(encoder, ranker, histories[lo:lo + batch_size], max_len)
        found = top == targets[lo:lo + batch_size, None]
        hit = found.any(1)
        ranks[lo:lo + batch_size] = np.where(hit, found.argmax(1), -1)
    result: dict[str, float | str] = {**rank_metrics(ranks, K), "split": split_name}
    result["seconds"] = round(time.perf_counter() - start, 2)
    return result


def main(argv: list[str] | None = None) -> int:
    """Command line: print the metrics of an exported model as JSON."""
    p = argparse.ArgumentParser(prog="python -m models.recommend.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True, help="sequence file (user item item ...)")
    p.add_argument("--model", type=Path, required=True, help="exported model directory")
    p.add_argument("--split", choices=["test", "valid", "both"], default="test")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: its default)")
    p.add_argument("--int8", action="store_true", help="the int8 graphs the manifest lists (models.recommend.quantize)")
    args = p.parse_args(argv)
    names = ["valid", "test"] if args.split == "both" else [args.split]
    files = GRAPHS
    if args.int8:
        int8 = json.loads((args.model / "manifest.json").read_text())["int8"]
        files = (int8["encoder"], int8["ranker"])
    out = {n: evaluate(args.data, args.model, split_name=n, batch_size=args.batch_size, threads=args.threads, files=files)
           for n in names}
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
