"""The inference choices, side by side: ``python -m bench.ort_options``.

Each shipped graph on the CPU provider, one thread, at the engine's batch size, timed in
one run (medians of repeated calls) for the choices the runtime makes or declined:

* ``SkipLayerNormFusion`` on (ONNX Runtime's default) and off (the runtime's choice);
* the next-item encoder at the width of the benchmark's click histories (grouped by
  length, the runtime's way) and padded to ``max_len``;
* the ranker asked for 10 items and for 100;
* the next-item encoder with int8 dynamic quantisation of its matrix multiplications
  (not adopted), with its HR@10 / NDCG@10 on the Beauty test split beside the float one.

Prints one JSON object; ``--write`` stores it in ``bench/results/ort_options.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
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
    ranker = NextItemRanker(rec_dir, threads=1)
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

    from models.recommend.evaluate import evaluate
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        quantised = Path(tmp)
        for name in ("ranker.onnx", "items.txt", "manifest.json"):
            (quantised / name).write_bytes((rec_dir / name).read_bytes())
        quantize_dynamic(str(rec_dir / "encoder.onnx"), str(quantised / "encoder.onnx"),
                         op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8)
        int8 = session(quantised / "encoder.onnx", fused=False)
        result["item_encoder_width50_int8_per_s"] = round(per_second(lambda: int8.run(None, {"item_ids": padded}), BATCH))
        for label, directory in (("float32", rec_dir), ("int8", quantised)):
            metrics = evaluate(BEAUTY, directory, split_name="test", threads=1)
            result[f"item_encoder_{label}_test"] = {k: round(metrics[k], 4) for k in ("hr@10", "ndcg@10")}
    text = json.dumps(result, indent=2)
    print(text)
    if args.write:
        out = ROOT / "bench" / "results" / "ort_options.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
