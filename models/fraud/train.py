"""``streamer train fraud``: the fraud model over the engine's own online features, exported to ONNX.

The features are computed by the serving code itself (``TransactionFeatures`` over an
``InMemoryStateStore``), replaying the file in order with labels released
``--label-delay-days`` after each transaction, exactly as the stream sees them.
The default model is the card-sequence transformer of ``models.fraud.sequence``:
masked-field pre-training on the unlabelled rows, then fine-tuning on the labelled
rows before ``--train-until`` (the last ``--train-weeks`` weeks). ``--valid-start``
scores a later period for the manifest (AUC ROC, AP, Card Precision@100 with the
book's protocol); ``models.fraud.folds`` runs the book's weekly validation.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
from datetime import datetime, timezone
from collections.abc import Callable
from pathlib import Path

import numpy as np

from models.metrics import average_precision, card_precision_at_k, roc_auc
from models.provenance import file_sha256
from streamer.datasets import FRAUD_CSV, label_for, read_fraud_csv
from streamer.events import FraudLabel, Transaction
from streamer.features.fraud import FEATURE_NAMES, FEATURE_SCHEMA_HASH
from streamer.pipeline.fraud import TransactionFeatures
from streamer.state.memory import InMemoryStateStore

DAY = 86400.0


async def online_features(path: Path, delay_days: float, limit: int | None, chunk: int = 4000) -> dict[str, np.ndarray]:
    """Replay the file through the serving feature code; returns features and metadata."""
    store = InMemoryStateStore()
    features = TransactionFeatures(store)
    rows: list[list[float]] = []
    labels, ts, cards, ids = [], [], [], []
    pending: list[FraudLabel] = []  # not yet released
    batch: list[Transaction] = []
    started = time.monotonic()

    async def flush() -> None:
        horizon = batch[-1].ts
        released = [label for label in pending if label.labelled_ts <= horizon]
        pending[:] = [label for label in pending if label.labelled_ts > horizon]
        await store.write_labels(released)
        rows.extend(await features.compute(batch))
        batch.clear()
        # What the store and the rows keep is freed by reference counts, if ever: left to
        # the collector, its full collections look through all of it (59 s → 46 s for 600k).
        gc.freeze()

    try:
        for n, (tx, is_fraud) in enumerate(read_fraud_csv(path, limit)):
            batch.append(tx)
            labels.append(is_fraud)
            ts.append(tx.ts)
            cards.append(tx.card_id)
            ids.append(tx.transaction_id)
            if is_fraud:
                pending.append(label_for(tx, True, delay_days))
            if len(batch) >= chunk:
                await flush()
            if n % 100_000 == 0 and n:
                print(f"  features: {n:,} transactions, {time.monotonic() - started:.0f} s", flush=True)
        if batch:
            await flush()
    finally:
        gc.unfreeze()
    return {
        "x": np.asarray(rows, dtype=np.float32),
        "y": np.asarray(labels, dtype=np.float32),
        "ts": np.asarray(ts),
        "card": np.asarray(cards),
        "id": np.asarray(ids),
    }


def cached_online_features(
    path: Path, delay_days: float, limit: int | None, cache: Path, sha: str | None = None
) -> dict[str, np.ndarray]:
    """``online_features`` of a file, computed once and kept in ``cache`` by content hash."""
    sha = sha or file_sha256(path)
    cached = cache / f"fraud-rows-{sha[:12]}-{delay_days:g}-{limit}.npz"
    if cached.is_file():
        print(f"reading online features from {cached}", flush=True)
        return dict(np.load(cached))
    print(f"computing online features over {path} ...", flush=True)
    data = asyncio.run(online_features(path, delay_days, limit))
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(cached, **data)  # type: ignore[arg-type]  # (numpy's stubs read a key as its allow_pickle flag)
    return data


def with_cold_starts(x: np.ndarray, y: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Add copies of random rows as a new card, a new terminal, or both would see them.

    In the file every card and terminal has history after the first weeks, but in
    production new cards and terminals appear and a fresh deployment starts with empty
    state; without these rows such transactions fall outside anything the model saw.
    """
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(x), size=int(len(x) * share), replace=False)
    cold = x[picks].copy()
    kind = rng.integers(0, 3, size=len(cold))
    card = kind != 1  # 0: both, 2: card only
    terminal = kind != 2  # 0: both, 1: terminal only
    amount = cold[:, 0]
    cold[np.ix_(card, [3, 5, 7])] = 1.0
    cold[np.ix_(card, [4, 6, 8])] = amount[card, None]
    cold[np.ix_(terminal, list(range(9, 15)))] = 0.0
    return np.concatenate([x, cold]), np.concatenate([y, y[picks]])


def check_export(path: Path, x: np.ndarray, expected: np.ndarray, tolerance: float = 1e-4) -> dict[str, object]:
    """ONNX Runtime against the trained model at batch sizes 1, 7 and 256, twice."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for size in (1, 7, 256):
        n = min(len(x), size * 20)
        got = np.concatenate([session.run(None, {"features": x[i : i + size]})[0] for i in range(0, n, size)])
        worst = max(worst, float(np.abs(got - expected[:n]).max()))
    full = session.run(None, {"features": x})[0]
    repeat = session.run(None, {"features": x})[0]
    worst = max(worst, float(np.abs(full - expected).max()))
    ok = worst <= tolerance and bool(np.array_equal(full, repeat))
    if not ok:
        raise SystemExit(f"exported model disagrees with the trained one: max diff {worst}")
    return {"batch_sizes": [1, 7, 256], "max_abs_diff": worst, "tolerance": tolerance, "repeat_identical": True}


def evaluate_scores(y: np.ndarray, scores: np.ndarray, ts: np.ndarray, cards: np.ndarray) -> dict[str, float]:
    days = (ts // DAY).astype(np.int64)
    return {
        "auc_roc": round(roc_auc(y, scores), 4),
        "average_precision": round(average_precision(y, scores), 4),
        "card_precision_at_100": round(card_precision_at_k(days, cards, y, scores, 100), 4),
        "transactions": int(len(y)),
        "frauds": int(y.sum()),
    }


def day_start(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="streamer train fraud", description=__doc__)
    parser.add_argument("--data", type=Path, default=FRAUD_CSV, help="handbook transactions CSV(.gz)")
    parser.add_argument("--out", type=Path, default=Path("models/shipped/fraud"))
    parser.add_argument("--model", choices=["transformer", "gbt", "mlp"], default="transformer",
                        help="pre-trained card-sequence transformer (default), gradient-boosted trees, or an MLP")
    parser.add_argument("--train-until", default="2018-08-01", help="labelled rows before this day are trained on")
    parser.add_argument("--train-weeks", type=int, default=8, help="only the last N weeks of labelled rows (0: all)")
    parser.add_argument("--valid-start", default=None,
                        help="score the rows from this day on for the manifest (use a day >= train-until + the label delay)")
    parser.add_argument("--label-delay-days", type=float, default=7.0)
    parser.add_argument("--epochs", type=int, default=None,
                        help="fine-tuning epochs (transformer, 3), boosting rounds (gbt, 150) or epochs (mlp, 6)")
    parser.add_argument("--pretrain-epochs", type=int, default=4, help="masked-field pre-training epochs (transformer)")
    parser.add_argument("--layers", type=int, default=None,
                        help="the card encoder's BERT layers (transformer; default: models.fraud.sequence.SequenceConfig's; "
                             "the manifest's sequence config records the number used)")
    parser.add_argument("--cold-start-share", type=float, default=0.05,
                        help="share of training rows added again as new-card / new-terminal rows")
    parser.add_argument("--cache", type=Path, default=Path("runs"), help="folder for the computed features")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N transactions")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if args.valid_start and day_start(args.valid_start) < day_start(args.train_until) + args.label_delay_days * DAY:
        # the validation rows would overlap the training rows, or follow them closer than
        # their labels arrive: in-sample metrics written to the manifest as validation
        parser.error(f"--valid-start {args.valid_start} is before --train-until {args.train_until} "
                     f"plus the label delay ({args.label_delay_days:g} days)")
    started = time.monotonic()
    sha = file_sha256(args.data)
    data = cached_online_features(args.data, args.label_delay_days, args.limit, args.cache, sha)
    until = day_start(args.train_until)
    train = data["ts"] < until
    if args.train_weeks:
        train &= data["ts"] >= until - args.train_weeks * 7 * DAY
    valid = data["ts"] >= day_start(args.valid_start) if args.valid_start else np.zeros(len(train), dtype=bool)
    train_index, valid_index = np.flatnonzero(train), np.flatnonzero(valid)
    print(f"train {len(train_index):,} rows, validation {len(valid_index):,} rows", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.model == "transformer":
        predict, files = _train_transformer(args, data, train_index, valid_index)
    else:
        predict, files = _train_features_only(args, data, train_index, valid_index)
    manifest: dict[str, object] = {
        "name": "fraud",
        "version": f"fraud-{args.model}-{datetime.now(timezone.utc):%Y%m%d}-{sha[:8]}",
        "features": list(FEATURE_NAMES),
        "feature_schema_hash": FEATURE_SCHEMA_HASH,
        "feature_stats": {"mean": data["x"][train_index, : len(FEATURE_NAMES)].mean(axis=0).astype(float).tolist(),
                          "std": data["x"][train_index, : len(FEATURE_NAMES)].std(axis=0).astype(float).tolist()},
        **files,
        "data": {"file": args.data.name, "sha256": sha, "rows": int(len(data["y"]))},
        "train": {
            "until": args.train_until, "weeks": args.train_weeks, "label_delay_days": args.label_delay_days,
            "model": args.model, "epochs": args.epochs, "pretrain_epochs": args.pretrain_epochs, "layers": args.layers,
            "cold_start_share": args.cold_start_share, "seed": args.seed,
            "seconds": round(time.monotonic() - started, 1),
        },
    }
    if len(valid_index):
        metrics = evaluate_scores(data["y"][valid_index], predict(valid_index), data["ts"][valid_index], data["card"][valid_index])
        print(f"validation from {args.valid_start}: {metrics}", flush=True)
        manifest["metrics"] = {"validation": {"from": args.valid_start, **metrics}}
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {args.out} in {time.monotonic() - started:.0f} s", flush=True)
    return 0


def _train_transformer(args: argparse.Namespace, data: dict[str, np.ndarray], train: np.ndarray,
                       valid: np.ndarray) -> tuple[Callable[[np.ndarray], np.ndarray], dict[str, object]]:
    import torch

    from models.fraud import sequence

    from models.fraud import gbt

    torch.set_num_threads(args.threads)
    width = len(FEATURE_NAMES)
    x = data["x"][:, :width]
    print("fitting the gradient-boosted trees whose score the scorer reads", flush=True)
    x_trees, y_trees = with_cold_starts(x[train], data["y"][train], args.cold_start_share, args.seed)
    trees, _ = gbt.fit(x_trees, y_trees, seed=args.seed)
    gbt.export_onnx(trees, args.out / "trees.onnx", width)
    tree_check = check_export(args.out / "trees.onnx", x[train][-20000:], trees.predict(x[train][-20000:]))
    cfg = sequence.SequenceConfig(layers=args.layers or sequence.SequenceConfig.layers)
    seqs = sequence.card_sequences(data["x"], data["ts"], data["card"], data["id"], cfg.max_len)
    seqs.tree_scores = trees.predict(x)
    model = sequence.build(seqs, train, cfg, args.seed)
    first_scored = valid.min() if len(valid) else len(data["ts"])
    unlabelled = np.flatnonzero(np.arange(len(data["ts"])) < first_scored)
    print(f"pre-training on {len(unlabelled):,} unlabelled rows", flush=True)
    pretrain_losses = sequence.pretrain(model, seqs, unlabelled, epochs=args.pretrain_epochs, seed=args.seed)
    losses = sequence.finetune(model, seqs, train, data["y"], epochs=args.epochs or 3,
                               cold_start_share=args.cold_start_share, trees=trees.predict, seed=args.seed)
    args.cache.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.cache / f"{args.out.name}-transformer.pt")  # to re-export without training
    section = sequence.export_onnx(model, args.out)
    check_rows = valid if len(valid) else train[-20000:]
    check = sequence.check_export(model, args.out, seqs, check_rows)
    print(f"ONNX check: {check}", flush=True)
    section["trees"] = "trees.onnx"
    files = {"sequence": section, "check": {**check, "trees": tree_check},
             "losses": {"pretrain": [round(x, 4) for x in pretrain_losses], "finetune": [round(x, 4) for x in losses]}}
    return (lambda index: sequence.predict(model, seqs, index)), files


def _train_features_only(args: argparse.Namespace, data: dict[str, np.ndarray], train: np.ndarray,
                         valid: np.ndarray) -> tuple[Callable[[np.ndarray], np.ndarray], dict[str, object]]:
    if args.model == "gbt":
        from models.fraud.gbt import export_onnx, fit
    else:
        from models.fraud.net import export_onnx, fit  # type: ignore[assignment]
    width = len(FEATURE_NAMES)
    x = data["x"][:, :width]
    x_train, y_train = with_cold_starts(x[train], data["y"][train], args.cold_start_share, args.seed)
    net, _ = fit(x_train, y_train, epochs=args.epochs or (150 if args.model == "gbt" else 6), seed=args.seed)
    export_onnx(net, args.out / "model.onnx", width)
    check_rows = valid if len(valid) else train
    sample = x[check_rows][:20000]
    check = check_export(args.out / "model.onnx", sample, net.predict(sample))
    print(f"ONNX check: {check}", flush=True)
    return (lambda index: net.predict(x[index])), {"file": "model.onnx", "check": check}


if __name__ == "__main__":
    raise SystemExit(main())
