"""Checks that the exported ONNX graphs compute what the torch model computes.

:func:`check_against_torch` (needs torch) runs the torch model and ONNX Runtime on the same histories
at batch sizes 1, 7 and 256 and requires

* ``user_embedding``: max absolute difference <= :data:`EMBEDDING_ATOL` (1e-4);
* ``top_scores``: ONNX top-K scores equal the torch top-K scores, and the torch scores of the items
  ONNX returned, within :data:`SCORE_ATOL` (1e-3 absolute; scores are dot products of size ~1-30),
  so ONNX returns a correct top K up to near-ties; exact item agreement (over non-excluded positions) is reported;
* repeated ONNX runs give bit-identical outputs.

:func:`check_onnx` (no torch) checks only the ONNX side: bit-identical repeated runs, and the same
results (within :data:`EMBEDDING_ATOL`) whether a user is run alone or in a batch of 7 or 256.

Command line (ONNX-only unless a torch checkpoint is given)::

    python -m models.recommend.check --data FILE --model DIR [--weights model.pt]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .data import left_pad, read_items, read_sequences, right_pad, split
from .evaluate import GRAPHS, load_sessions, max_len_of, rank

if TYPE_CHECKING:  # torch only where a torch model is checked
    from .model import SeqRecModel

EMBEDDING_ATOL = 1e-4
SCORE_ATOL = 1e-3
BATCH_SIZES = (1, 7, 256)
CHECK_K = 100  # top-k compared with torch (capped at the ranker's fixed K or the catalogue)


def check_histories(sequences: list[np.ndarray], num_items: int, n: int = 256, seed: int = 0) -> list[np.ndarray]:
    """Test histories: ``n`` real test histories (longest first, so some exceed ``max_len``), with
    edge cases put in front: an empty history, one with unknown ids, a single item."""
    histories, _, _ = split(sequences, "test")
    rng = np.random.default_rng(seed)
    order = np.argsort([-len(h) for h in histories], kind="stable")
    picked = [histories[i] for i in order[: n // 2]]
    extra = n - len(picked) - 3
    picked += [histories[i] for i in rng.choice(len(histories), extra, replace=extra > len(histories))]
    unknown = np.array([1, num_items + 1, num_items + 7, 2], dtype=np.int64)
    return [np.zeros(0, dtype=np.int64), unknown, np.array([1], dtype=np.int64)] + picked


def _onnx_run(encoder: Any, ranker: Any, histories: list[np.ndarray], max_len: int, k: int = CHECK_K) -> tuple[np.ndarray, ...]:
    emb = encoder.run(None, {"item_ids": left_pad(histories, max_len)})[0]
    items, scores = rank(ranker, emb, right_pad(histories), k)
    return emb, items, scores


def check_onnx(model_dir: Path, histories: list[np.ndarray], threads: int = 0, files: tuple[str, str] = GRAPHS) -> dict[str, Any]:
    """Torch-free consistency of a directory's encoder and ranker (``files``): repeated
    runs identical, batch sizes 1 / 7 / 256 agree."""
    encoder, ranker = load_sessions(model_dir, threads, files)
    max_len = max_len_of(encoder)
    k = min(CHECK_K, len(read_items(Path(model_dir) / "items.txt")))
    full = _onnx_run(encoder, ranker, histories[:256], max_len, k)
    again = _onnx_run(encoder, ranker, histories[:256], max_len, k)
    identical = all(np.array_equal(a, b) for a, b in zip(full, again))
    worst = 0.0
    for bs in BATCH_SIZES:
        for lo in range(0, min(len(histories), 256), bs):
            part = _onnx_run(encoder, ranker, histories[lo:lo + bs], max_len, k)
            worst = max(worst, float(np.abs(part[0] - full[0][lo:lo + bs]).max()))
            worst = max(worst, float(np.abs(part[2] - full[2][lo:lo + bs]).max()))
    result = {"repeat_identical": identical, "batch_max_abs_diff": worst, "tolerance": EMBEDDING_ATOL}
    ok = identical and worst <= EMBEDDING_ATOL
    if not isinstance(encoder.get_inputs()[0].shape[1], int):  # short rows may be run narrower
        trimmed = 0.0
        for width in (w for w in (1, 8, 16, 32) if w < max_len):
            rows = [h for h in histories if 0 < len(h) <= width]
            if rows:
                narrow = encoder.run(None, {"item_ids": left_pad(rows, width)})[0]
                wide = encoder.run(None, {"item_ids": left_pad(rows, max_len)})[0]
                trimmed = max(trimmed, float(np.abs(narrow - wide).max()))
        result["trimmed_max_abs_diff"] = trimmed
        ok = ok and trimmed <= EMBEDDING_ATOL
    return {**result, "ok": ok}


def check_against_torch(model: SeqRecModel, model_dir: Path, histories: list[np.ndarray], threads: int = 0) -> dict[str, Any]:
    """ONNX Runtime vs the torch ``model`` (a :class:`~models.recommend.model.SeqRecModel`)."""
    import torch

    from .export import EXCLUDED_SCORE, EncoderGraph

    encoder, ranker = load_sessions(model_dir, threads)
    max_len = max_len_of(encoder)
    fixed = ranker.get_outputs()[0].shape[1]
    k = fixed if isinstance(fixed, int) else min(CHECK_K, model.num_items)
    was_training = model.training
    model.eval()
    reference = EncoderGraph(model)
    emb_diff = score_diff = 0.0
    agree = total = 0
    identical = True
    try:
        for bs in BATCH_SIZES:
            batch = histories[:bs]
            x = left_pad(batch, max_len)
            with torch.no_grad():
                t_emb = reference(torch.from_numpy(x))
                t_scores = t_emb @ model.item_embedding.weight[: model.num_items + 1].T
                excl = torch.from_numpy(right_pad(batch)).clamp(0, model.num_items)
                t_scores = t_scores.scatter(1, excl, EXCLUDED_SCORE)
                t_scores[:, 0] = float("-inf")
                t_top, t_items = torch.topk(t_scores, k, dim=1)
            o_emb, o_items, o_scores = _onnx_run(encoder, ranker, batch, max_len, k)
            r_emb, r_items, r_scores = _onnx_run(encoder, ranker, batch, max_len, k)
            identical &= (np.array_equal(o_emb, r_emb) and np.array_equal(o_items, r_items)
                          and np.array_equal(o_scores, r_scores))
            emb_diff = max(emb_diff, float(np.abs(o_emb - t_emb.numpy()).max()))
            finite = np.isfinite(o_scores) & (o_scores > EXCLUDED_SCORE)
            rescored = np.take_along_axis(t_scores.numpy(), o_items, 1)
            score_diff = max(score_diff,
                             float(np.abs(np.where(finite, o_scores - t_top.numpy(), 0)).max()),
                             float(np.abs(np.where(finite, o_scores - rescored, 0)).max()))
            scored = finite & (t_top.numpy() > EXCLUDED_SCORE)
            agree += int(((o_items == t_items.numpy()) & scored).sum())
            total += int(scored.sum())
            if (o_items == 0).any():
                raise AssertionError("ranker returned the padding index 0")
    finally:
        model.train(was_training)
    ok = identical and emb_diff <= EMBEDDING_ATOL and score_diff <= SCORE_ATOL
    return {
        "batch_sizes": list(BATCH_SIZES),
        "embedding_max_abs_diff": emb_diff,
        "embedding_atol": EMBEDDING_ATOL,
        "score_max_abs_diff": score_diff,
        "score_atol": SCORE_ATOL,
        "top_items_exact_agreement": agree / max(1, total),
        "repeat_identical": identical,
        "ok": ok,
    }


def main(argv: list[str] | None = None) -> int:
    """Command line: print the check results as JSON; exit status 1 if a check fails."""
    p = argparse.ArgumentParser(prog="python -m models.recommend.check", description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True, help="sequence file the histories are taken from")
    p.add_argument("--model", type=Path, required=True, help="exported model directory")
    p.add_argument("--weights", type=Path, help="torch checkpoint written by train --save-torch")
    args = p.parse_args(argv)
    seqs = read_sequences(args.data, items=read_items(args.model / "items.txt"))
    histories = check_histories(seqs.sequences, seqs.num_items)
    result = {"onnx": check_onnx(args.model, histories)}
    if args.weights:
        from .train import load_checkpoint

        result["torch"] = check_against_torch(load_checkpoint(args.weights), args.model, histories)
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0 if all(r["ok"] for r in result.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
