"""The inference choices, side by side: ``python -m bench.ort_options``.

Each shipped graph on the CPU provider, one thread, at the engine's batch size, timed in
one run (medians of repeated calls) for the choices the runtime makes or declined:

* ``SkipLayerNormFusion`` on (ONNX Runtime's default) and off (the runtime's choice);
* the next-item encoder at the width of the benchmark's click histories (grouped by
  length, the runtime's way) and padded to ``max_len``;
* the ranker asked for 10 items and for 100;
* the next-item encoder (grouped by length) and the ranker (top 10) in float32 and in
  the int8 graphs the model ships (``models.recommend.quantize``; the runtime's choice on
  the CPU provider), with their HR@10 / NDCG@10 on the Beauty test split.

Prints one JSON object; ``--write`` stores it in ``bench/results/ort_options.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench.run import click_histories
from models.recommend.data import left_pad
from streamer.datasets import BEAUTY
from streamer.inference.next_item import NextItemRanker
from streamer.inference.runner import CPU_DISABLED_OPTIMIZERS
from streamer.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
BATCH = 512


def session(path: Path, fused: bool) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    disabled = [] if fused else list(CPU_DISABLED_OPTIMIZERS)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)


def per_second(step: Callable[[], object], rows: int, repeats: int = 15) -> float:
    step()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return rows / statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ort_options", description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="store the result in bench/results/ort_options.json")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    fraud_dir, rec_dir = settings.models.fraud, settings.models.recommend
    ranker = NextItemRanker(rec_dir, provider="cpu", threads=1, int8=False)
    int8 = NextItemRanker(rec_dir, provider="cpu", threads=1, int8=True)
    histories = [ranker.indices(h) for h in click_histories(20 * BATCH)][-BATCH:]
    rng = np.random.default_rng(0)
    card_feeds = {"history": rng.random((BATCH, 16, 16), dtype=np.float32),
                  "history_valid": np.ones((BATCH, 16), dtype=np.float32)}
    padded = left_pad(histories, ranker.max_len)
    result: dict[str, object] = {"batch": BATCH, "threads": 1}

    for fused in (True, False):
        tag = "fused" if fused else "unfused"
        card = session(fraud_dir / "encoder.onnx", fused)
        result[f"card_encoder_{tag}_per_s"] = round(per_second(lambda: card.run(None, card_feeds), BATCH))
        encoder = session(rec_dir / "encoder.onnx", fused)
        result[f"item_encoder_width50_{tag}_per_s"] = round(per_second(lambda: encoder.run(None, {"item_ids": padded}), BATCH))
    result["item_encoder_by_length_per_s"] = round(per_second(lambda: ranker.encode(histories), BATCH))
    embeddings = ranker.encode(histories)
    for k in (100, 10):
        result[f"ranker_k{k}_per_s"] = round(per_second(lambda: ranker.rank(embeddings, histories, k), BATCH))
    if int8.int8:
        from models.recommend.evaluate import GRAPHS, evaluate

        result["item_encoder_by_length_int8_per_s"] = round(per_second(lambda: int8.encode(histories), BATCH))
        result["ranker_k10_int8_per_s"] = round(per_second(lambda: int8.rank(embeddings, histories, 10), BATCH))
        quantised = int8.manifest["int8"]
        for label, files in (("float32", GRAPHS), ("int8", (quantised["encoder"], quantised["ranker"]))):
            metrics = evaluate(BEAUTY, rec_dir, split_name="test", threads=1, files=files)
            result[f"next_item_{label}_test"] = {k: round(metrics[k], 4) for k in ("hr@10", "ndcg@10")}
    text = json.dumps(result, indent=2)
    print(text)
    if args.write:
        out = ROOT / "bench" / "results" / "ort_options.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
