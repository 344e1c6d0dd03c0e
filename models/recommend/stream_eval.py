"""``streamer evaluate recommend``: HR@10 / NDCG@10 measured through the running engine.

Each user's sequence without its last item is replayed as clicks (``streamer import
sequences --hold-out 1``) through a ``streamer worker`` process serving the model;
the recommendation published after the user's last replayed click is ranked against
the held-back item. The same graphs the worker serves (int8 on the CPU provider when the
model has them, ``STREAMER_MODELS_INT8``) are evaluated offline (ONNX Runtime directly,
the leave-one-out test split), and both results are printed side by side.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from models.metrics import hit_rate_and_ndcg
from streamer.datasets import read_sequences
from streamer.embedded import start_missing_services
from streamer.replay.importers import import_sequences
from streamer.replay.through_worker import Replayer
from streamer.settings import Settings

K = 10
MISS = 10**9


def engine_ranks(data: Path, recommendations: dict[str, dict], limit_users: int | None) -> np.ndarray:  # type: ignore[type-arg]
    ranks = []
    for n, (user, items) in enumerate(read_sequences(data)):
        if limit_users is not None and n >= limit_users:
            break
        if len(items) < 2:
            continue
        last_click = f"{user}-{len(items) - 2}"
        listed = [i["item_id"] for i in recommendations[last_click]["items"]]
        ranks.append(listed.index(items[-1]) if items[-1] in listed else MISS)
    return np.asarray(ranks)


def evaluate_through_engine(data: Path, model_dir: Path, *, limit_users: int | None = None, timeout_s: float = 3600) -> dict[str, float]:
    settings = Settings.from_env()
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        settings = start_missing_services(settings, stack)
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        capture = workdir / "clicks.jsonl.gz"
        count = import_sequences(data, capture, hold_out=1, limit_users=limit_users)
        print(f"replaying {count:,} clicks through a worker serving {model_dir} ...", flush=True)
        outputs = Replayer(settings.kafka.bootstrap_servers, str(settings.redis.url), workdir)(
            [capture], timeout_s=timeout_s, models={"recommend": model_dir.resolve()}, kafka={"partitions": 4},
        )
    ranks = engine_ranks(data, outputs.recommendations, limit_users)
    hr, ndcg = hit_rate_and_ndcg(ranks, K)
    return {"hr@10": hr, "ndcg@10": ndcg, "users": len(ranks), "seconds": round(time.monotonic() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="streamer evaluate recommend", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="sequence file (user item item ...)")
    parser.add_argument("--model", type=Path, required=True, help="exported model directory")
    parser.add_argument("--users", type=int, default=None, help="only the first N users (engine and offline)")
    parser.add_argument("--offline-only", action="store_true")
    args = parser.parse_args(argv)

    from models.recommend.evaluate import evaluate
    from streamer.inference.next_item import NextItemRanker

    models = Settings.from_env().models
    served = NextItemRanker(args.model, provider=models.provider, int8=models.int8)
    report: dict[str, object] = {"model_version": served.version}
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if args.users is not None:
            data = Path(tmp) / args.data.name
            with open(args.data) as src:
                data.write_text("".join(line for _, line in zip(range(args.users), src)))
        report["offline"] = evaluate(data, args.model, files=(served.encoder.path.name, served.ranker.path.name))
    print(f"offline (ONNX Runtime, leave-one-out test): {report['offline']}", flush=True)
    if not args.offline_only:
        report["engine"] = evaluate_through_engine(args.data, args.model, limit_users=args.users)
        print(f"through the engine: {report['engine']}", flush=True)
    if "offline" in report and "engine" in report:
        off, eng = report["offline"], report["engine"]
        gap = max(abs(off["hr@10"] - eng["hr@10"]), abs(off["ndcg@10"] - eng["ndcg@10"]))  # type: ignore[index]
        report["max_difference"] = round(gap, 5)
        print(f"largest difference engine vs offline: {gap:.5f}", flush=True)
    print(json.dumps(report))
    return 0
