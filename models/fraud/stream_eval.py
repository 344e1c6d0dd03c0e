"""``streamer evaluate fraud``: fraud metrics read from the ``fraud-scores`` topic of a running worker.

A period of the handbook file (plus the warm-up the features need: 30 days of card
history, 7 + 30 days of terminal history) is imported as a capture, each label released
``--label-delay-days`` after its transaction, replayed through a ``streamer worker``
serving ``--model``, and the scores of the test period read back from the output
topic. AUC ROC, average precision and Card Precision@100 (the book's protocol) are
computed from them, and from the same capture run offline through the same pipeline;
both are printed with their largest difference.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from models.fraud.train import evaluate_scores
from streamer.datasets import FRAUD_CSV, read_fraud_csv
from streamer.embedded import start_missing_services
from streamer.events import parse_time
from streamer.replay.importers import import_fraud
from streamer.replay.offline import Outputs, run_offline
from streamer.replay.through_worker import Replayer
from streamer.settings import Settings

DAY = 86400.0


def metrics_for(data: Path, scores: dict[str, dict], start: float, end: float) -> dict[str, float]:  # type: ignore[type-arg]
    ids, ys, ts, cards = [], [], [], []
    for tx, fraud in read_fraud_csv(data):
        if start <= tx.ts < end:
            ids.append(tx.transaction_id)
            ys.append(fraud)
            ts.append(tx.ts)
            cards.append(tx.card_id)
    values = np.array([scores[i]["score"] for i in ids], dtype=np.float64)
    return evaluate_scores(np.array(ys, dtype=np.float32), values, np.array(ts), np.array(cards))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="streamer evaluate fraud", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=FRAUD_CSV)
    parser.add_argument("--model", type=Path, default=Settings().models.fraud)
    parser.add_argument("--start", default="2018-07-25T00:00:00Z", help="first moment of the test period")
    parser.add_argument("--end", default="2018-08-01T00:00:00Z", help="end of the test period")
    parser.add_argument("--warmup-days", type=float, default=37.0, help="history replayed before the test period")
    parser.add_argument("--label-delay-days", type=float, default=7.0)
    args = parser.parse_args(argv)
    start, end = parse_time(args.start), parse_time(args.end)
    settings = Settings.from_env().replace(models={"fraud": args.model.resolve()})
    report: dict[str, object] = {"period": [args.start, args.end], "model": str(args.model)}
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        capture = workdir / "fraud.jsonl.gz"
        count = import_fraud(args.data, capture, delay_days=args.label_delay_days, start_ts=start - args.warmup_days * DAY, end_ts=end)
        print(f"imported {count:,} records (transactions and labels)", flush=True)

        started = time.monotonic()
        records = asyncio.run(run_offline([capture], settings))
        offline = Outputs.collect(((r.topic, r.key, r.value, r.headers) for r in records), settings)
        report["offline"] = metrics_for(args.data, offline.scores, start, end)
        print(f"offline: {report['offline']} ({time.monotonic() - started:.0f} s)", flush=True)

        settings = start_missing_services(settings, stack)
        started = time.monotonic()
        streamed = Replayer(settings.kafka.bootstrap_servers, str(settings.redis.url), workdir)([capture], timeout_s=7200, models={"fraud": args.model.resolve()})
        report["engine"] = metrics_for(args.data, streamed.scores, start, end)
        print(f"through the engine: {report['engine']} ({time.monotonic() - started:.0f} s)", flush=True)
    keys = ("auc_roc", "average_precision", "card_precision_at_100")
    report["max_difference"] = max(abs(report["offline"][k] - report["engine"][k]) for k in keys)  # type: ignore[index]
    print(json.dumps(report))
    return 0
