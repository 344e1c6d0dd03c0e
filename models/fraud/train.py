"""``streamer train fraud``: a network over the engine's own online features, exported to ONNX.

The features are computed by the serving code itself (``TransactionFeatures`` over an
``InMemoryStateStore``), replaying the file in order with labels released
``--label-delay-days`` after each transaction, exactly as the stream sees them.
Training uses transactions before ``--valid-start`` minus the label delay; the
validation period is scored for the manifest's metrics (AUC ROC, AP, Card
Precision@100 with the book's protocol).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from models.metrics import average_precision, card_precision_at_k, roc_auc
from models.provenance import file_sha256
from streamer.datasets import FRAUD_CSV, label_for, read_fraud_csv
from streamer.features.fraud import FEATURE_NAMES, FEATURE_SCHEMA_HASH
from streamer.pipeline.fraud import TransactionFeatures
from streamer.state.memory import InMemoryStateStore

DAY = 86400.0


async def online_features(path: Path, delay_days: float, limit: int | None, chunk: int = 4000) -> dict[str, np.ndarray]:
    """Replay the file through the serving feature code; returns features and metadata."""
    store = InMemoryStateStore()
    features = TransactionFeatures(store)
    rows: list[list[float]] = []
    labels, ts, cards = [], [], []
    pending = []  # fraud labels not yet released
    batch = []
    started = time.monotonic()

    async def flush() -> None:
        horizon = batch[-1].ts
        released = [label for label in pending if label.labelled_ts <= horizon]
        pending[:] = [label for label in pending if label.labelled_ts > horizon]
        await store.write_labels(released)
        rows.extend(await features.compute(batch))
        batch.clear()

    for n, (tx, is_fraud) in enumerate(read_fraud_csv(path, limit)):
        batch.append(tx)
        labels.append(is_fraud)
        ts.append(tx.ts)
        cards.append(tx.card_id)
        if is_fraud:
            pending.append(label_for(tx, True, delay_days))
        if len(batch) >= chunk:
            await flush()
        if n % 100_000 == 0 and n:
            print(f"  features: {n:,} transactions, {time.monotonic() - started:.0f} s", flush=True)
    if batch:
        await flush()
    return {
        "x": np.asarray(rows, dtype=np.float32),
        "y": np.asarray(labels, dtype=np.float32),
        "ts": np.asarray(ts),
        "card": np.asarray(cards),
    }


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="streamer train fraud", description=__doc__)
    parser.add_argument("--data", type=Path, default=FRAUD_CSV, help="handbook transactions CSV(.gz)")
    parser.add_argument("--out", type=Path, default=Path("models/shipped/fraud"))
    parser.add_argument("--valid-start", default="2018-07-04", help="first day of the validation period")
    parser.add_argument("--label-delay-days", type=float, default=7.0)
    parser.add_argument("--model", choices=["gbt", "mlp"], default="gbt", help="gradient-boosted trees or an MLP")
    parser.add_argument("--epochs", type=int, default=None, help="boosting rounds (gbt, 150) or epochs (mlp, 6)")
    parser.add_argument("--cold-start-share", type=float, default=0.05,
                        help="share of training rows added again as new-card / new-terminal rows")
    parser.add_argument("--cache", type=Path, default=Path("runs"), help="folder for the computed features")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N transactions")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if args.model == "gbt":
        from models.fraud.gbt import export_onnx, fit
    else:
        from models.fraud.net import export_onnx, fit  # type: ignore[assignment]
    epochs = args.epochs or (150 if args.model == "gbt" else 6)

    started = time.monotonic()
    sha = file_sha256(args.data)
    cached = args.cache / f"fraud-features-{sha[:12]}-{args.label_delay_days:g}-{args.limit}.npz"
    if cached.is_file():
        print(f"reading online features from {cached}", flush=True)
        data = dict(np.load(cached))
    else:
        print(f"computing online features over {args.data} ...", flush=True)
        data = asyncio.run(online_features(args.data, args.label_delay_days, args.limit))
        args.cache.mkdir(parents=True, exist_ok=True)
        np.savez(cached, **data)
    valid_start = datetime.fromisoformat(args.valid_start).replace(tzinfo=timezone.utc).timestamp()
    train_mask = data["ts"] < valid_start - args.label_delay_days * DAY
    valid_mask = data["ts"] >= valid_start
    print(f"train {train_mask.sum():,} rows, validation {valid_mask.sum():,} rows", flush=True)

    x_train, y_train = with_cold_starts(data["x"][train_mask], data["y"][train_mask], args.cold_start_share, args.seed)
    net, stats = fit(x_train, y_train, epochs=epochs, seed=args.seed)
    scores = net.predict(data["x"][valid_mask])
    metrics = evaluate_scores(data["y"][valid_mask], scores, data["ts"][valid_mask], data["card"][valid_mask])
    print(f"validation from {args.valid_start}: {metrics}", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    export_onnx(net, args.out / "model.onnx", len(FEATURE_NAMES))
    check = check_export(args.out / "model.onnx", data["x"][valid_mask][:20000], scores[:20000])
    print(f"ONNX check: {check}", flush=True)
    manifest = {
        "name": "fraud",
        "version": f"fraud-{args.model}-{datetime.now(timezone.utc):%Y%m%d}-{sha[:8]}",
        "file": "model.onnx",
        "features": list(FEATURE_NAMES),
        "feature_schema_hash": FEATURE_SCHEMA_HASH,
        "feature_stats": stats,
        "inputs": [{"name": "features", "dtype": "float32", "shape": ["batch", len(FEATURE_NAMES)]}],
        "outputs": [{"name": "score", "dtype": "float32", "shape": ["batch"]}],
        "metrics": {"validation": {"from": args.valid_start, **metrics}},
        "check": check,
        "data": {"file": args.data.name, "sha256": sha, "rows": int(len(data["y"]))},
        "train": {
            "until": args.valid_start, "label_delay_days": args.label_delay_days, "model": args.model, "epochs": epochs, "cold_start_share": args.cold_start_share,
            "seed": args.seed, "seconds": round(time.monotonic() - started, 1),
        },
    }
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {args.out} in {time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
