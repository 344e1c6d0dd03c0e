"""Train, export and evaluate the next-item recommender.

Two steps on the training part of every sequence (leave-one-out: the last two items are held out):

1. Self-supervised pre-training: masked item modelling (BERT4Rec / Cloze). A fraction of the items is
   replaced by ``[MASK]`` and predicted from both sides (bidirectional attention) with a full softmax
   over the catalogue. By default (``transfer="embeddings"``) fine-tuning keeps the pre-trained item
   embeddings and re-initialises the transformer; ``transfer="all"`` keeps every weight. On Beauty
   keeping every weight made causal fine-tuning slower and worse at our epoch budget, while keeping
   only the embeddings was as good as or slightly better than no pre-training (see the report in
   ``models/recommend/README.md``).
2. Fine-tuning for next-item prediction (SASRec style with a full softmax cross-entropy): causal
   attention, every position predicts the item that follows it, logits ``hidden @ E.T`` tied to the
   item embeddings, Adam with a linearly decaying learning rate. Validation HR@10 / NDCG@10 (second to
   last item, full ranking, history excluded) after each epoch; the epoch with the best NDCG@10 is
   kept, with early stopping on patience. ``loss="sampled-bce"`` replaces the full softmax of this step
   by SASRec's binary cross-entropy against one sampled negative item per position (see
   :mod:`models.recommend.losses`); with ``pretrain_epochs=0`` that is a SASRec-style baseline.

The kept model is exported to ONNX (``encoder.onnx``, ``ranker.onnx``), checked against torch,
evaluated with ONNX Runtime on the validation and test splits, and described in ``manifest.json``
together with ``items.txt`` (the catalogue: line ``i`` = item id of model index ``i``).

Usage::

    python -m models.recommend.train --data ../shared/data/rec/Beauty.txt --out models/shipped/recommend
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime as dt
import functools
import json
import logging
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import torch
import transformers

from . import check, evaluate, quantize
from .data import (PAD, SequenceData, bucket_batches, count_batches, left_pad, masked_item_batch, next_item_batch,
                   popularity, rank_metrics, read_sequences, right_pad, split, train_sequences)
from .export import ENCODER_NOTE, RANKER_NOTE, export_onnx
from .losses import LOSSES, NextItemLoss, full_softmax_cross_entropy, next_item_loss
from .model import ModelConfig, SeqRecModel

K = 10


def _log(msg: str) -> None:
    print(msg, flush=True)


@contextlib.contextmanager
def _reuse_heap() -> Iterator[None]:
    """Serve large allocations from the reusable heap instead of fresh ``mmap`` pages (glibc only).

    Every batch allocates logits of ``positions x num_items`` floats (~100 MB); glibc maps and unmaps
    such blocks each time, and the page faults cost about a fifth of the training time. Switching
    ``mmap`` off and keeping freed memory (``mallopt``) removes that; the defaults are restored after.
    Numerical results do not change.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt  # noqa: B018 - glibc only
    except (OSError, AttributeError):
        yield
        return
    m_trim_threshold, m_mmap_max = -1, -4
    libc.mallopt(m_mmap_max, 0)
    libc.mallopt(m_trim_threshold, 1 << 30)
    try:
        yield
    finally:
        libc.mallopt(m_mmap_max, 65536)
        libc.mallopt(m_trim_threshold, 128 * 1024)


def _reusing_heap(fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """Run ``fn`` inside :func:`_reuse_heap` (keeps ``fn``'s signature)."""

    @functools.wraps(fn)
    def wrapper(*args: object, **kwargs: object) -> dict[str, Any]:
        with _reuse_heap():
            return fn(*args, **kwargs)

    return wrapper


@torch.no_grad()
def validation_ranks(model: SeqRecModel, histories: list[np.ndarray], targets: np.ndarray,
                     batch_size: int = 1024) -> np.ndarray:
    """0-based full-ranking ranks of the targets (history excluded; -1 when the target is excluded)."""
    model.eval()
    ranks = []
    weight = model.item_embedding.weight[: model.num_items + 1]
    for lo in range(0, len(histories), batch_size):
        hist = histories[lo:lo + batch_size]
        width = max(1, min(model.max_len, max(len(h) for h in hist)))
        user = model.user_embedding(torch.from_numpy(left_pad(hist, width)))
        scores = user @ weight.T
        scores[:, PAD] = float("-inf")
        scores.scatter_(1, torch.from_numpy(right_pad(hist)), float("-inf"))
        target = scores.gather(1, torch.from_numpy(targets[lo:lo + batch_size, None])).squeeze(1)
        rank = (scores > target[:, None]).sum(1)
        ranks.append(torch.where(torch.isinf(target), -1, rank).numpy())
    return np.concatenate(ranks)


def _epoch(model: SeqRecModel, opt: torch.optim.Optimizer, seqs: list[np.ndarray], batch_size: int,
           rng: np.random.Generator, make_batch: Callable[..., Any], causal: bool,
           scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
           loss_fn: NextItemLoss = full_softmax_cross_entropy) -> float:
    """One pass over ``seqs``; returns the mean loss per predicted item."""
    model.train()
    lengths = np.array([len(s) for s in seqs])
    total, count = 0.0, 0
    for rows in bucket_batches(lengths, batch_size, rng):
        x, y = make_batch(rows)
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        sel = y != PAD
        n = int(sel.sum())
        if n == 0:
            continue
        hidden = model(x, causal=causal)[sel]
        loss = loss_fn(model, hidden, y[sel])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()
        total += loss.item() * n
        count += n
    return total / max(1, count)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "data"


def load_checkpoint(path: Path) -> SeqRecModel:
    """Rebuild a model saved by ``train(..., save_torch=True)`` (``model.pt``)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = SeqRecModel(ModelConfig(**state["config"]))
    model.load_state_dict(state["state_dict"])
    return model.eval()


@_reusing_heap
def train(data: Path, out: Path, *, max_len: int = 50, hidden: int = 64, layers: int = 2, heads: int = 2,
          dropout: float = 0.5, attn_dropout: float = 0.5, pretrain_epochs: int = 10, mask_prob: float = 0.2,
          pretrain_lr: float = 1e-3, transfer: str = "embeddings", epochs: int = 17, lr: float = 3e-3,
          schedule: str = "linear", loss: str = "softmax", weight_decay: float = 0.0, batch_size: int = 256,
          patience: int = 5, top_k: int = 100, seed: int = 0, threads: int | None = None,
          max_minutes: float | None = None, export: bool = True, save_torch: bool = False,
          log: Callable[[str], None] = _log) -> dict[str, Any]:
    """Pre-train, fine-tune, export to ``out`` and evaluate; returns the manifest (or a summary when
    ``export`` is false). ``loss`` is the fine-tuning loss (:data:`models.recommend.losses.LOSSES`;
    pre-training always uses the full softmax). ``max_minutes`` stops fine-tuning early when the next
    epoch would not fit (this makes the result depend on machine speed; off by default)."""
    start = time.perf_counter()
    finetune_loss = next_item_loss(loss, seed)
    data, out = Path(data), Path(out)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)

    seqs = read_sequences(data)
    train_seqs = train_sequences(seqs.sequences)
    valid_hist, valid_targets, _ = split(seqs.sequences, "valid")
    log(f"data {data.name}: {len(seqs.users)} users, {seqs.num_items} items, "
        f"{sum(len(s) for s in train_seqs)} training interactions, {len(valid_targets)} validation users")

    cfg = ModelConfig(num_items=seqs.num_items, max_len=max_len, hidden=hidden, layers=layers, heads=heads,
                      dropout=dropout, attn_dropout=attn_dropout)
    model = SeqRecModel(cfg)
    history: list[dict[str, Any]] = []

    # Step 1: masked item modelling pre-training (bidirectional).
    mim_seqs = [s for s in train_seqs if len(s) >= 1]
    opt = torch.optim.Adam(model.parameters(), lr=pretrain_lr, weight_decay=weight_decay)
    for epoch in range(1, pretrain_epochs + 1):
        t0 = time.perf_counter()
        mean_loss = _epoch(model, opt, mim_seqs, batch_size, rng,
                           lambda rows: masked_item_batch(mim_seqs, rows, max_len, model.mask_id, mask_prob, rng),
                           causal=False)
        history.append({"phase": "pretrain", "epoch": epoch, "loss": round(mean_loss, 5)})
        log(f"pretrain epoch {epoch}/{pretrain_epochs} loss {mean_loss:.4f} ({time.perf_counter() - t0:.1f}s)")

    if transfer not in ("all", "embeddings"):
        raise ValueError(f"unknown transfer {transfer!r}")
    if pretrain_epochs and transfer == "embeddings":
        model.reset_transformer()

    # Step 2: next-item fine-tuning (causal), early stopping on validation NDCG@10.
    ft_seqs = [s for s in train_seqs if len(s) >= 2]
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = None
    if schedule == "linear":  # linear decay to 0 over all fine-tuning steps
        steps = max(1, epochs * count_batches(len(ft_seqs), batch_size))
        scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: max(0.0, 1.0 - step / steps))
    elif schedule != "constant":
        raise ValueError(f"unknown schedule {schedule!r}")
    best: dict[str, Any] = {f"ndcg@{K}": -1.0, "epoch": 0}
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    stale, last_epoch_s, stopped = 0, 0.0, "epochs"
    for epoch in range(1, epochs + 1):
        elapsed = time.perf_counter() - start
        if max_minutes is not None and elapsed + last_epoch_s > max_minutes * 60:
            stopped = "time budget"
            break
        t0 = time.perf_counter()
        mean_loss = _epoch(model, opt, ft_seqs, batch_size, rng,
                           lambda rows: next_item_batch(ft_seqs, rows, max_len), causal=True, scheduler=scheduler,
                           loss_fn=finetune_loss)
        metrics = rank_metrics(validation_ranks(model, valid_hist, valid_targets), K)
        last_epoch_s = time.perf_counter() - t0
        history.append({"phase": "finetune", "epoch": epoch, "loss": round(mean_loss, 5),
                        f"valid_hr@{K}": round(metrics[f"hr@{K}"], 5),
                        f"valid_ndcg@{K}": round(metrics[f"ndcg@{K}"], 5)})
        improved = metrics[f"ndcg@{K}"] > best[f"ndcg@{K}"]
        log(f"finetune epoch {epoch}/{epochs} loss {mean_loss:.4f} valid HR@{K} {metrics[f'hr@{K}']:.4f} "
            f"NDCG@{K} {metrics[f'ndcg@{K}']:.4f}{' *' if improved else ''} ({last_epoch_s:.1f}s)")
        if improved:
            best = {**metrics, "epoch": epoch}
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            stale = 0
        else:
            stale += 1
            if stale >= patience:
                stopped = "early stopping"
                break
    model.load_state_dict(best_state)
    model.eval()
    train_seconds = time.perf_counter() - start
    log(f"best epoch {best['epoch']}: valid HR@{K} {best.get(f'hr@{K}', 0):.4f} "
        f"NDCG@{K} {best.get(f'ndcg@{K}', 0):.4f}; stopped by {stopped}; {train_seconds:.0f}s")

    hparams = {**cfg.to_dict(), "pretrain_epochs": pretrain_epochs, "mask_prob": mask_prob,
               "pretrain_lr": pretrain_lr, "transfer": transfer, "epochs": epochs, "lr": lr, "schedule": schedule,
               "loss": loss, "weight_decay": weight_decay, "batch_size": batch_size, "patience": patience,
               "seed": seed, "threads": torch.get_num_threads(), "max_minutes": max_minutes}
    summary = {"best_epoch": best["epoch"], "stopped_by": stopped, "seconds": round(train_seconds, 1),
               "valid_torch": {k: v for k, v in best.items() if k != "epoch"}, "history": history}
    if not export:
        return {"train": {"hyperparameters": hparams, **summary}}
    return _export_all(model, seqs, train_seqs, out, top_k, hparams, summary, start, save_torch, log)


def _method(hparams: dict[str, Any]) -> str:
    """One line for the manifest: the training recipe."""
    objective = {"softmax": "full softmax CE",
                 "sampled-bce": "BCE against one sampled negative per position"}[hparams["loss"]]
    first = "masked item modelling pre-training, then " if hparams["pretrain_epochs"] else "no pre-training, "
    return f"{first}causal next-item fine-tuning ({objective})"


def _export_all(model: SeqRecModel, seqs: SequenceData, train_seqs: list[np.ndarray], out: Path, top_k: int,
                hparams: dict[str, Any], summary: dict[str, Any], start: float, save_torch: bool, log: Callable[[str], None]) -> dict[str, Any]:
    """Export, check, evaluate and write ``items.txt`` / ``manifest.json``; returns the manifest."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "items.txt").write_text("".join(f"{item}\n" for item in seqs.items), encoding="utf-8")
    io = export_onnx(model, out, top_k)
    if save_torch:
        torch.save({"config": model.cfg.to_dict(), "state_dict": model.state_dict()}, out / "model.pt")
    threads = torch.get_num_threads()
    histories = check.check_histories(seqs.sequences, seqs.num_items)
    checked = check.check_against_torch(model, out, histories, threads)
    log(f"ONNX check: {json.dumps(checked)}")
    if not checked["ok"]:
        raise RuntimeError(f"ONNX export does not match torch: {checked}")
    metrics = {name: evaluate.evaluate(seqs.path, out, split_name=name, threads=threads) for name in ("valid", "test")}
    for name, m in metrics.items():
        log(f"ONNX Runtime {name}: HR@{K} {m[f'hr@{K}']:.4f} NDCG@{K} {m[f'ndcg@{K}']:.4f} ({m['users']} users)")
    counts = popularity(train_seqs, seqs.num_items)
    order = np.argsort(-counts[1:], kind="stable") + 1
    popular = [seqs.items[i - 1] for i in order[:100] if counts[i] > 0]
    k = io["top_k"]
    manifest = {
        "name": "recommend",
        "version": f"{_slug(seqs.name)}-{dt.date.today():%Y%m%d}-{seqs.sha256[:8]}",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "framework": (f"transformers {transformers.__version__} BertModel (from config), torch {torch.__version__}, "
                      f"ONNX opset {io['opset']}, checked with onnxruntime {onnxruntime.__version__}"),
        "method": _method(hparams),
        "max_len": model.max_len,
        "embedding_dim": model.cfg.hidden,
        "top_k": k,
        "num_items": seqs.num_items,
        "padding_index": PAD,
        "mask_index": model.mask_id,
        "files": {**io["files"], "items": "items.txt"},
        "inputs": io["inputs"],
        "outputs": io["outputs"],
        "last_layer": io["last_layer"],
        "top_k_selection": io["top_k_selection"],
        "notes": {
            "encoder": ENCODER_NOTE,
            "ranker": RANKER_NOTE,
        },
        "item_ids": {"file": "items.txt", "mapping": "model index i (1..num_items) = line i of items.txt; "
                     "0 = padding; ids outside 1..num_items are treated as padding by encoder.onnx",
                     "identity": seqs.items == [str(i) for i in range(1, seqs.num_items + 1)]},
        "popular": popular,
        "metrics": {"valid": metrics["valid"], "test": metrics["test"],
                    "protocol": "leave-one-out, full ranking over all items, history excluded, @10"},
        "check": checked,
        "data": {"file": seqs.path.name, "sha256": seqs.sha256, "users": len(seqs.users),
                 "items": seqs.num_items, "interactions": int(sum(len(s) for s in seqs.sequences))},
        "train": {"hyperparameters": hparams, **summary, "total_seconds": round(time.perf_counter() - start, 1)},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    int8, short = quantize.quantize_again(out, seqs.path)
    if short:
        log(f"int8 graphs not written (the runtime serves float32): {'; '.join(short)}")
    else:
        manifest["int8"] = int8
        log(f"int8 graphs written: test HR@{K} {int8['metrics']['int8']['test'][f'hr@{K}']:.4f} "
            f"NDCG@{K} {int8['metrics']['int8']['test'][f'ndcg@{K}']:.4f}")
    log(f"wrote {out} (version {manifest['version']}) in {manifest['train']['total_seconds']:.0f}s total")
    return manifest


def main(argv: list[str] | None = None) -> int:
    """Command line: ``--data FILE --out DIR`` plus optional hyper-parameters."""
    p = argparse.ArgumentParser(prog="python -m models.recommend.train", description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True, help="sequence file: one line per user, 'user item item ...'")
    p.add_argument("--out", type=Path, required=True, help="output directory for the ONNX graphs and manifest")
    p.add_argument("--max-len", type=int, default=50, help="sequence length L (default 50)")
    p.add_argument("--hidden", type=int, default=64, help="embedding / hidden size D (default 64)")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--dropout", type=float, default=0.5, help="hidden dropout (default 0.5)")
    p.add_argument("--attn-dropout", type=float, default=0.5, help="attention dropout (default 0.5)")
    p.add_argument("--pretrain-epochs", type=int, default=10, help="masked item pre-training epochs (0: none)")
    p.add_argument("--mask-prob", type=float, default=0.2, help="share of items masked in pre-training")
    p.add_argument("--pretrain-lr", type=float, default=1e-3)
    p.add_argument("--transfer", choices=["all", "embeddings"], default="embeddings",
                   help="what fine-tuning keeps from pre-training: the item embeddings (default; the transformer "
                        "is re-initialised) or all weights")
    p.add_argument("--epochs", type=int, default=17, help="fine-tuning epochs (default 17)")
    p.add_argument("--lr", type=float, default=3e-3, help="fine-tuning peak learning rate, Adam (default 3e-3)")
    p.add_argument("--schedule", choices=["linear", "constant"], default="linear",
                   help="fine-tuning learning rate: linear decay to 0 over --epochs, or constant")
    p.add_argument("--loss", choices=LOSSES, default="softmax",
                   help="fine-tuning loss: full softmax cross-entropy over the catalogue (default), or SASRec's "
                        "binary cross-entropy against one uniformly sampled negative item per position")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--batch-size", type=int, default=256, help="sequences per batch")
    p.add_argument("--patience", type=int, default=5, help="epochs without validation NDCG@10 gain before stopping")
    p.add_argument("--top-k", type=int, default=100, help="K of ranker.onnx")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch / ONNX Runtime threads (default: torch's)")
    p.add_argument("--max-minutes", type=float, default=None, help="stop fine-tuning when the next epoch would not fit")
    p.add_argument("--save-torch", action="store_true", help="also write model.pt (for models.recommend.check)")
    p.add_argument("--no-export", action="store_true", help="train and report only; write nothing")
    args = vars(p.parse_args(argv))
    data, out, no_export = args.pop("data"), args.pop("out"), args.pop("no_export")
    result = train(data, out, export=not no_export, **args)
    if no_export:
        json.dump({k: v for k, v in result["train"].items() if k != "history"}, sys.stdout, indent=2)
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
